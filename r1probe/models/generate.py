"""Batched greedy/sampled generation with length-sorted, left-padded batches (plain ``model.generate``).

The evaluation and the server generate with :mod:`r1probe.models.engine` (rows retired as they end,
waiting prompts admitted in their place); ``left_pad`` and ``length_sorted_batches`` serve both.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from r1probe.models.loader import LoadedModel


#: the fixed cost of one forward pass in token equivalents, by device type (for ``length_sorted_batches``'s
#: ``overhead``): on CPU reading the weights once costs about as much as a forward over this many tokens
FORWARD_OVERHEAD = {"cpu": 64, "cuda": 512, "mps": 256}


def forward_overhead(device) -> int:
    """:data:`FORWARD_OVERHEAD` of ``device`` (a ``torch.device`` or a string)."""
    return FORWARD_OVERHEAD.get(str(device).split(":")[0], 64)


def length_sorted_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None,
                          overhead: int = 0) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), to minimise padding: at most
    ``batch_size`` rows and, with ``max_tokens``, at most that many padded tokens (rows x the batch's
    longest) unless a single row is longer.

    ``overhead > 0``: the cost of one forward pass in token equivalents (reading the weights once).
    The length-sorted indices are then cut into the contiguous batches minimising
    ``Σ_batches (rows · longest + overhead)`` (dynamic programme over the cut points), so one long
    prompt gets a batch of its own instead of padding many short ones; ``0`` fills each batch in turn."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if overhead > 0 and order:
        ln = [int(lengths[i]) for i in order]
        n, inf = len(ln), float("inf")
        cost, cut = [0.0] + [inf] * n, [0] * (n + 1)
        for e in range(1, n + 1):  # best split of the first e rows; the last batch is rows j..e-1
            for j in range(e - 1, max(0, e - batch_size) - 1, -1):
                rows = e - j
                if rows > 1 and max_tokens is not None and rows * ln[j] > max_tokens:
                    break
                c = cost[j] + rows * ln[j] + overhead
                if c < cost[e]:
                    cost[e], cut[e] = c, j
        out: list[list[int]] = []
        e = n
        while e > 0:
            out.append(order[cut[e]:e])
            e = cut[e]
        return out[::-1]
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out = []
    for i in order:
        if out and len(out[-1]) < batch_size and (len(out[-1]) + 1) * lengths[out[-1][0]] <= max_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


@torch.inference_mode()
def generate_texts(lm: LoadedModel, prompt_texts: Sequence[str], *, max_new_tokens: int = 128,
                   batch_size: int = 8, do_sample: bool = False, temperature: float = 1.0,
                   seed: int | None = 0, progress: bool = False, desc: str = "generate") -> list[str]:
    """Generate a completion for each already-formatted prompt; results are in input order.

    Padding is on the left with attention masks, so batched greedy output equals
    one-by-one greedy output up to floating-point noise.
    """
    tok = lm.tokenizer
    enc = [lm.chat.encode(t) for t in prompt_texts]
    out: list[str | None] = [None] * len(enc)
    if seed is not None:
        torch.manual_seed(seed)
    batches = length_sorted_batches([len(e) for e in enc], batch_size)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    gen_kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad)
    if do_sample:
        gen_kw["temperature"] = temperature
    else:
        gen_kw.update(temperature=None, top_p=None, top_k=None)
    for idx in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
        ids, mask = left_pad([enc[i] for i in idx], pad, lm.device)
        seqs = lm.model.generate(input_ids=ids, attention_mask=mask, **gen_kw)
        for row, i in enumerate(idx):
            out[i] = tok.decode(seqs[row, ids.shape[1]:], skip_special_tokens=True)
    return out  # type: ignore[return-value]


#: neutral prompts on which :func:`replies_open_think` watches a model start its replies
THINK_CHECK_PROMPTS = ("你好", "1+1等于几？", "Name a colour.")


def replies_open_think(lm: LoadedModel) -> bool:
    """True when the chat template does not open a reasoning block but the model writes one itself: its greedy
    replies (6 new tokens) to most of :data:`THINK_CHECK_PROMPTS` start with ``<think>``. Checked once per loaded
    model. Such a model's first answer token comes after ``</think>``: first-token studies close an empty
    reasoning block for it (``ChatFormatter.render(think="closed")``), as they do for an R1 template."""
    cached = getattr(lm, "_replies_open_think", None)
    if cached is None:
        if lm.chat.thinks:
            cached = False
        else:
            outs = generate_texts(lm, [lm.chat.format(p) for p in THINK_CHECK_PROMPTS], max_new_tokens=6,
                                  batch_size=len(THINK_CHECK_PROMPTS))
            cached = 2 * sum(o.lstrip().startswith("<think>") for o in outs) > len(outs)
        lm._replies_open_think = cached
    return cached


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(input_ids, attention_mask)`` tensors."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for r, s in enumerate(seqs):
        if len(s):
            ids[r, n - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[r, n - len(s):] = 1
    return ids.to(device), mask.to(device)
