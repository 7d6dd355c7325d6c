"""Input limits checked before any work: prompt length against the model's context window."""

from __future__ import annotations

from typing import Sequence

from r1probe.errors import R1ProbeError

#: config attributes that hold a model's context length, in order of preference
CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


class PromptTooLongError(R1ProbeError):
    """A prompt (with its chat template) that does not fit the model's context window."""


def context_length(lm) -> int | None:
    """The model's context window in tokens (``max_position_embeddings`` or its equivalent), None when unknown."""
    cfg = getattr(lm.model, "config", None)
    cfg = getattr(cfg, "get_text_config", lambda: cfg)() if cfg is not None else None
    for attr in CONTEXT_ATTRS:
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check_prompt_lengths(lm, texts: Sequence[str], names: Sequence[str], *, reserve: int = 0,
                         encoded: Sequence[Sequence[int]] | None = None) -> None:
    """Raise :class:`PromptTooLongError` naming the first prompt whose chat-formatted ``texts[i]`` (``encoded[i]``
    when already tokenized) plus ``reserve`` new tokens exceeds the model's context window.

    ``names[i]`` says where prompt ``i`` comes from (``data.jsonl line 4``, ``--prompt 2``). A text far longer
    than the window in characters is refused without tokenizing it (a token holds at most a few dozen bytes).
    """
    ctx = context_length(lm)
    if ctx is None:
        return
    for i, (text, name) in enumerate(zip(texts, names)):
        at_least = ""
        if encoded is not None:
            n = len(encoded[i])
        else:
            size = len(text.encode("utf-8"))
            if size + 2 <= ctx - reserve:
                continue  # a token covers at least one byte (byte-level BPE, byte fallback); +2 for added specials
            n = -(-size // max_token_bytes(lm.tokenizer))
            if n + reserve > ctx:
                at_least = "at least "  # refused without tokenizing (a very long text can take minutes to tokenize)
            else:
                n = len(lm.chat.encode(text))
        if n + reserve > ctx:
            more = f" plus {reserve} new tokens" if reserve else ""
            raise PromptTooLongError(f"{name}: {at_least}{n:,} tokens with the chat template{more}, over the model's "
                                     f"context of {ctx:,} (max_position_embeddings); shorten or drop this prompt")


def max_token_bytes(tokenizer) -> int:
    """An upper bound on the bytes of text one token covers: the longest vocabulary entry in UTF-8 bytes (the
    entries' own spellings, e.g. byte-level ``Ġ`` or SentencePiece ``▁``, are never shorter than the text they
    stand for), so a text of ``b`` bytes has at least ``ceil(b / max_token_bytes)`` tokens. Cached per tokenizer."""
    cached = getattr(tokenizer, "_r1probe_max_token_bytes", None)
    if cached is None:
        cached = max((len(t.encode("utf-8")) for t in tokenizer.get_vocab()), default=1) or 1
        try:
            tokenizer._r1probe_max_token_bytes = cached
        except AttributeError:
            pass
    return cached
