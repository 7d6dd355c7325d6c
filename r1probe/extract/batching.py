"""Tokenization with instruction spans, length-sorted shard/batch plans, per-batch gather plans.

Left padding makes negative offsets line up across a batch (offset -k is column T-k in every
row); the instruction mean and generated positions still need per-row spans, which
:class:`Gather` carries as index and weight tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from r1probe.data.prompts import Prompt
from r1probe.errors import DataError


@dataclass
class Encoded:
    """A formatted prompt's token ids, its instruction token span and its post-instruction count."""

    ids: list[int]
    instr: tuple[int, int]  # [start, end) token indices of the last user message
    n_post: int

    def __len__(self) -> int:
        return len(self.ids)


def encode_prompts(lm, prompts: Sequence[Prompt], *, system: str | None = None,
                   close_think: bool = False, think: str | None = None) -> list[Encoded]:
    """Format each prompt with the chat template and tokenize it once, with character offsets.

    The instruction span is the tokens overlapping the last user message's characters; the
    post-instruction tokens are those lying entirely after it (as ``ChatFormatter.post_instruction_positions``).
    """
    texts = [lm.chat.format(p.text, system=system, history=p.history, close_think=close_think, think=think)
             for p in prompts]
    enc = lm.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for p, text, ids, offs in zip(prompts, texts, enc["input_ids"], enc["offset_mapping"]):
        try:
            start = text.rindex(p.text)
        except ValueError:
            raise DataError(f"prompt {p.id!r}: the chat template changed the message text; "
                            f"cannot locate its tokens") from None
        end = start + len(p.text)
        n = len(ids)
        first_post = next((i for i, (s, e) in enumerate(offs) if s >= end and e > s), n)
        tok = [i for i, (s, e) in enumerate(offs) if s < end and e > start and i < first_post]
        span = (tok[0], tok[-1] + 1) if tok else (first_post, first_post)
        out.append(Encoded(list(ids), span, n - first_post))
    return out


def plan_shards(lengths: Sequence[int], shard_rows: int) -> list[list[int]]:
    """Row indices sorted by length (longest first, ties by index) and cut into shards of ``shard_rows``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + shard_rows] for i in range(0, len(order), shard_rows)]


def plan_batches(rows: Sequence[int], lengths: Sequence[int], batch_size: int | None = None,
                 token_budget: int | None = None, overhead: int = 0) -> list[list[int]]:
    """Consecutive batches of already length-sorted ``rows``: ``batch_size`` rows each, or as many as fit
    ``rows * longest <= token_budget`` (at least one row per batch). With a token budget and
    ``overhead > 0`` (a forward pass's fixed cost in token equivalents) the rows are cut where
    ``Σ_batches (rows · longest + overhead)`` is least under the budget
    (:func:`r1probe.models.generate.length_sorted_batches`), so a few long prompts do not pad many
    shorter ones."""
    if batch_size is not None:
        return [list(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    assert token_budget is not None
    if overhead > 0 and rows:
        from r1probe.models.generate import length_sorted_batches

        rows = list(rows)
        cut = length_sorted_batches([lengths[r] for r in rows], len(rows), token_budget, overhead=overhead)
        return [[rows[j] for j in sorted(b)] for b in cut]
    out: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for r in rows:
        L = max(longest, lengths[r])
        if cur and (len(cur) + 1) * L > token_budget:
            out.append(cur)
            cur, L = [], lengths[r]
        cur.append(r)
        longest = L
    if cur:
        out.append(cur)
    return out


def auto_token_budget(lm, max_len: int, extra_tokens: int = 0) -> int:
    """Tokens per batch for ``--batch-size auto``.

    CPU: 4096 tokens (throughput flattens beyond a few thousand tokens on a few cores, and memory
    stays small). GPU: a quarter of free memory divided by the activation bytes one token needs in
    the largest layer (attention scores over ``max_len``, the MLP intermediate and a few residual
    copies), clamped to [1024, 262144].
    """
    dev = lm.device
    if dev.type != "cuda":
        return 4096
    free, _ = torch.cuda.mem_get_info(dev)
    cfg = lm.model.config
    d = lm.layout.d_model
    inter = int(getattr(cfg, "intermediate_size", 4 * d))
    heads = int(getattr(cfg, "num_attention_heads", 1))
    seq = max_len + extra_tokens
    bytes_per = torch.finfo(lm.dtype).bits // 8
    per_token = bytes_per * (8 * d + 3 * inter + heads * seq) + 4 * d
    return int(min(262144, max(1024, free // 4 // per_token)))


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(input_ids, attention_mask)`` on the CPU (see ``models.generate.left_pad``)."""
    from r1probe.models.generate import left_pad as _left_pad

    return _left_pad(seqs, pad_id, "cpu")


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (as ``generate`` does), so left padding changes nothing."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class Gather:
    """Reads the requested positions out of a ``[B, T, d]`` activation.

    Point positions are absolute column indices ``idx[B, Q]`` (NaN where ``valid`` is False);
    mean positions are rows of a weight tensor ``w[B, M, T]`` (each row sums to 1 over its tokens,
    the mean taken in float32). The result ``[B, Q + M, d]`` is float32, in position-name order.
    """

    def __init__(self, idx: torch.Tensor, valid: torch.Tensor, w: torch.Tensor | None, order: torch.Tensor | None):
        self.idx, self.valid, self.w, self.order = idx, valid, w, order
        self.all_valid = bool(valid.all())

    def to(self, device) -> "Gather":
        return Gather(self.idx.to(device), self.valid.to(device), None if self.w is None else self.w.to(device),
                      None if self.order is None else self.order.to(device))

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        d = h.shape[-1]
        parts = []
        if self.idx.shape[1]:
            pts = h.gather(1, self.idx.unsqueeze(-1).expand(-1, -1, d)).float()
            if not self.all_valid:
                pts = pts.masked_fill(~self.valid.unsqueeze(-1), float("nan"))
            parts.append(pts)
        if self.w is not None:
            parts.append(torch.bmm(self.w, h.float()))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        return out if self.order is None else out[:, self.order]


def build_gather(names: Sequence, encs: Sequence[Encoded], width: int, prompt_width: int,
                 gen_lens: Sequence[int] | None = None) -> Gather:
    """Gather plan for one left-padded batch.

    ``width``: total columns (prompt + generated); ``prompt_width``: columns of the left-padded prompt
    (generated token k of a row sits at ``prompt_width + k``); offsets are relative to the prompt's end.
    """
    B = len(encs)
    points = [(j, n) for j, n in enumerate(names) if isinstance(n, int) or (isinstance(n, str) and n.startswith("gen") and n != "gen_mean")]
    means = [(j, n) for j, n in enumerate(names) if n in ("mean", "gen_mean")]
    idx = torch.zeros((B, len(points)), dtype=torch.long)
    valid = torch.ones((B, len(points)), dtype=torch.bool)
    for q, (_, n) in enumerate(points):
        if isinstance(n, int):
            idx[:, q] = prompt_width + n
            for b, e in enumerate(encs):
                if -n > len(e):
                    valid[b, q] = False
                    idx[b, q] = prompt_width - 1
        else:
            k = int(n[3:])
            idx[:, q] = min(prompt_width + k, width - 1)
            for b in range(B):
                if gen_lens is None or k >= gen_lens[b]:
                    valid[b, q] = False
    w = None
    if means:
        w = torch.zeros((B, len(means), width), dtype=torch.float32)
        for m, (_, n) in enumerate(means):
            for b, e in enumerate(encs):
                pad = prompt_width - len(e)
                if n == "mean":
                    s, t = e.instr
                    lo, hi = pad + s, pad + t
                else:
                    g = gen_lens[b] if gen_lens is not None else 0
                    lo, hi = prompt_width, prompt_width + g
                if hi > lo:
                    w[b, m, lo:hi] = 1.0 / (hi - lo)
                else:
                    w[b, m, :] = math.nan
    got = [j for j, _ in points] + [j for j, _ in means]
    order = torch.tensor([got.index(j) for j in range(len(names))], dtype=torch.long)
    if torch.equal(order, torch.arange(len(names))):
        order = None  # type: ignore[assignment]
    return Gather(idx, valid, w, order)
