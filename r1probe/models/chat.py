"""Chat formatting, R1 reasoning handling and post-instruction token positions."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Sequence

from r1probe.errors import R1ProbeError

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}

R1_BOS = "<｜begin▁of▁sentence｜>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
#: appended after an R1 generation prompt to close an empty think block (for first-token scores)
EMPTY_THINK = "\n\n</think>\n\n"


def r1_template() -> str:
    """The DeepSeek-R1-Distill chat template (MIT, vendored from the HF repos, Feb 2025 revision)."""
    return resources.files("r1probe.models").joinpath("templates/deepseek_r1_distill.jinja").read_text("utf-8")


def resolve_template(choice: str | None, tokenizer) -> tuple[str, str]:
    """Return ``(template_text, kind)`` for ``--chat-template`` ``choice``.

    ``None``/``"auto"``: the tokenizer's own template (kind ``r1`` if it is the R1 one, else ``native``);
    ``"r1"``: the vendored R1 template; a path: that jinja file (kind ``custom``).
    """
    if choice in (None, "", "auto"):
        tpl = getattr(tokenizer, "chat_template", None)
        if isinstance(tpl, dict):
            tpl = tpl.get("default") or next(iter(tpl.values()))
        if not tpl:
            raise R1ProbeError("the tokenizer has no chat template; pass --chat-template r1 or a .jinja file")
        return tpl, ("r1" if "<｜Assistant｜>" in tpl else "native")
    if choice == "r1":
        return r1_template(), "r1"
    if os.path.isfile(choice):
        with open(choice, encoding="utf-8") as f:
            return f.read(), "custom"
    raise R1ProbeError(f"--chat-template {choice!r}: not 'auto', 'r1' or an existing .jinja file")


def to_messages(prompt: str | Sequence[Message], system: str | None = None,
                history: Sequence[Message] | None = None) -> list[Message]:
    """Build a message list from a prompt string (or messages), an optional system prompt and history."""
    if isinstance(prompt, str):
        msgs = list(history or []) + [{"role": "user", "content": prompt}]
    else:
        msgs = list(history or []) + list(prompt)
    if system is not None and not (msgs and msgs[0].get("role") == "system"):
        msgs = [{"role": "system", "content": system}] + msgs
    return msgs


@dataclass
class ChatFormatter:
    """Renders messages to prompt text with one template, and finds template token positions."""

    tokenizer: object
    template: str
    kind: str  # "native" | "r1" | "custom"

    @property
    def thinks(self) -> bool:
        """True when generation prompts open a ``<think>`` block (R1 style)."""
        return self.render([{"role": "user", "content": "x"}]).rstrip().endswith(THINK_OPEN)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True,
               close_think: bool = False, think: str | None = None) -> str:
        """Render messages to text; ``close_think`` appends an empty closed think block after an R1 prompt.

        ``think`` places the reply's start for any template: ``"open"`` ends the prompt inside a reasoning block
        (``<think>\n`` appended unless the template opened one), ``"closed"`` after an empty closed one
        (``<think>\n\n</think>\n\n``, as an R1 model writes it); None leaves the template's prompt.
        """
        if think not in (None, "open", "closed"):
            raise ValueError(f"think must be None, 'open' or 'closed', not {think!r}")
        bos = getattr(self.tokenizer, "bos_token", None)
        if self.kind == "r1" and not bos:
            bos = R1_BOS
        text = self.tokenizer.apply_chat_template(
            list(messages), chat_template=self.template, tokenize=False,
            add_generation_prompt=add_generation_prompt, bos_token=bos or "")
        if not add_generation_prompt:
            return text
        opened = text.rstrip().endswith(THINK_OPEN)
        if (close_think or think == "closed") and opened:
            text = text.rstrip("\n") + EMPTY_THINK
        elif think == "closed":
            text += THINK_OPEN + EMPTY_THINK
        elif think == "open" and not opened:
            text += THINK_OPEN + "\n"
        return text

    def format(self, prompt: str | Sequence[Message], system: str | None = None,
               history: Sequence[Message] | None = None, close_think: bool = False,
               think: str | None = None) -> str:
        return self.render(to_messages(prompt, system, history), close_think=close_think, think=think)

    def encode(self, text: str) -> list[int]:
        """Token ids of rendered text (the template supplies special tokens, so none are added)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def post_instruction_suffix(self, close_think: bool = False, think: str | None = None) -> str:
        """The template text between the end of the user message and the start of the reply."""
        marker = "\x00R1PROBE\x00"
        text = self.render([{"role": "user", "content": marker}], close_think=close_think, think=think)
        return text[text.rindex(marker) + len(marker):]

    def post_instruction_positions(self, prompt_text: str, instruction: str | None = None) -> list[int]:
        """Negative offsets of the post-instruction tokens of ``prompt_text``.

        The post-instruction tokens are those whose characters lie entirely after the end of
        the last user message (e.g. ``<|im_end|>\\n<|im_start|>assistant\\n`` for Qwen, or
        ``<｜Assistant｜><think>\\n`` for R1). ``instruction`` is the last user message; when
        omitted the template's suffix is used to locate it. Returns offsets like [-5,...,-1].
        """
        if instruction is not None:
            end = prompt_text.rindex(instruction) + len(instruction)
        else:
            suffix = self.post_instruction_suffix()
            if not prompt_text.endswith(suffix):
                # close_think variant or custom text: find the suffix's first line
                head = suffix.strip("\n")[:8] or suffix
                end = prompt_text.rindex(head) if head in prompt_text else len(prompt_text)
            else:
                end = len(prompt_text) - len(suffix)
        enc = self.tokenizer(prompt_text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        n = len(offsets)
        first = next((i for i, (s, e) in enumerate(offsets) if s >= end and e > s), n)
        # a token straddling the boundary (e.g. merged punctuation) belongs to the instruction
        return [i - n for i in range(first, n)]


@dataclass
class ReasoningSplit:
    """A completion split into reasoning and answer.

    ``thought``: the model produced a reasoning block; ``terminated``: that block was closed
    with ``</think>`` (False means the generation was truncated mid-reasoning).
    """

    reasoning: str
    answer: str
    thought: bool
    terminated: bool


_THINK_RE = re.compile(r"^\s*<think>", re.S)


def split_reasoning(completion: str, prompt_opened_think: bool = False) -> ReasoningSplit:
    """Split ``completion`` at ``</think>``.

    Handles ``<think>...</think>answer``, a missing opening tag (the R1 template puts
    ``<think>\\n`` in the prompt: pass ``prompt_opened_think=True``, or it is inferred from a
    lone ``</think>``), unterminated reasoning (no ``</think>``: all reasoning, flagged
    ``terminated=False``, empty answer) and models that do not think (all answer).
    """
    text = completion
    opened = prompt_opened_think
    m = _THINK_RE.match(text)
    if m:
        text, opened = text[m.end():], True
    if THINK_CLOSE in text:
        reasoning, answer = text.split(THINK_CLOSE, 1)
        return ReasoningSplit(reasoning.strip(), answer.strip(), True, True)
    if opened:
        return ReasoningSplit(text.strip(), "", True, False)
    return ReasoningSplit("", text.strip(), False, True)
