"""A token prefix shared by every prompt of a batch (a chat template's system prompt), computed once.

Causal attention makes a prefix's keys and values independent of what follows it, so they can be
computed once and copied into every row: a row's cache is then ``[prefix][padding][own tokens]``
with the padding masked out and positions counted over unmasked tokens, which gives the attention
and rotary positions of the unpadded prompt. The activation reader uses it for the bare model; the
generation engine also under steering plans without conditions (transforms act token by token, so
the prefix computed once under a plan is the prefix of every row under it: one prefix per plan). A
hook of unknown effect, or a condition that gates rows by their whole prompt, must see every token.
"""

from __future__ import annotations

from typing import Sequence

import torch

#: a shared prefix shorter than this is not worth a separate pass
MIN_SHARED_PREFIX = 8


def shared_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix common to every sequence, one token short of the shortest
    (every row keeps at least one token of its own, whose logits start its completion)."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return max(0, n)


def _reads_only(hook) -> bool:
    # r1probe's readers are marked; transformers' output-capturing hooks (installed for good on the first
    # ``output_hidden_states`` call) only record outputs
    return bool(getattr(hook, "value_preserving", False)) or (
        getattr(hook, "__module__", "") == "transformers.utils.output_capturing")


def hooked(model) -> bool:
    """Whether a forward hook that may change values (e.g. steering) is on ``model``: hooks that only
    read (marked ``value_preserving``, or transformers' output-capturing hooks) do not count."""
    return any(not _reads_only(h)
               for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))


def cache_kwarg(module) -> str:
    """``module.forward``'s name for its cache argument (``cache`` in newer transformers, else
    ``past_key_values``)."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def expand_cache(model, kv: Sequence[tuple[torch.Tensor, torch.Tensor]], n: int,
                 rows: Sequence[int] | None = None):
    """A fresh ``DynamicCache`` holding the prefix keys/values ``kv`` (per layer, ``[1, heads, P, dim]``)
    copied into ``n`` rows; with ``rows`` (one index per row into ``kv``'s ``[k, heads, P, dim]``),
    row ``i`` gets prefix ``rows[i]`` (one prefix per steering plan)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    idx = None if rows is None else torch.tensor(list(rows), dtype=torch.long, device=kv[0][0].device)
    for i, (k, v) in enumerate(kv):
        if idx is None:
            cache.update(k.expand(n, -1, -1, -1).contiguous(), v.expand(n, -1, -1, -1).contiguous(), i)
        else:
            cache.update(k.index_select(0, idx), v.index_select(0, idx), i)
    return cache


def cache_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer ``(keys, values)`` of a ``DynamicCache``."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def with_prefix_mask(mask: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """``[B, P + S]``: the prefix's columns (all real) before a left-padded ``[B, S]`` mask."""
    return torch.cat([torch.ones(mask.shape[0], n_prefix, dtype=mask.dtype, device=mask.device), mask], 1)


__all__ = ["MIN_SHARED_PREFIX", "shared_prefix", "hooked", "cache_kwarg", "expand_cache", "cache_kv",
           "with_prefix_mask"]
