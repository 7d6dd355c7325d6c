"""Prompt sets: file loaders, vendored Chinese built-ins (see DATA_LICENSES.md), benchmark loaders."""

from r1probe.data.prompts import BUILTIN_SETS, Prompt, PromptSet, load_prompt_file, load_prompt_set, split_of

__all__ = ["BUILTIN_SETS", "Prompt", "PromptSet", "load_prompt_file", "load_prompt_set", "split_of"]
