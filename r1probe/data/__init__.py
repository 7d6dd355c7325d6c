"""Prompt sets: file loaders, vendored Chinese built-ins (see DATA_LICENSES.md), benchmark loaders."""

from r1probe.data.prompts import (BUILTIN_SETS, Prompt, PromptRow, PromptSet, load_prompt_file, load_prompt_set,
                                  read_prompt_file, split_of)

__all__ = ["BUILTIN_SETS", "Prompt", "PromptRow", "PromptSet", "load_prompt_file", "load_prompt_set",
           "read_prompt_file", "split_of"]
