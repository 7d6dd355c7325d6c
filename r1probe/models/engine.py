"""A generation engine for a loaded model: continuous batching over a KV cache.

:func:`generate` completes already chat-formatted prompts. It keeps up to ``batch_size`` rows in
flight in one left-padded KV cache (a ``transformers`` ``DynamicCache``):

- rows retire as they finish (end of sequence, a stop string, their token budget, or the caller's
  ``done`` callback) and are pruned from the cache, so finished rows cost nothing;
- waiting prompts take the freed places: they are prefilled in groups of similar length (the
  length-sorted prompts cut where a group's padding would cost more than another forward pass,
  :func:`r1probe.models.generate.length_sorted_batches`) and their cache is merged into the running
  one (left-padded to a common length; padding is masked out of attention);
- the rows in flight are also bounded by a token budget (rows x cache length), so memory stays bounded;
- a token prefix every prompt of the call shares (a chat template's system prompt) is computed once
  (once per plan with per-row plans) and its keys and values copied into each row
  (:mod:`r1probe.models.prefix`); with no hook but the plan's, and a plan without conditions (its
  transforms act token by token, so the prefix computed under the plan is every row's prefix).

Every forward pass is the model's own (``model(input_ids, attention_mask, position_ids, cache,
cache_position)``), with the position ids and masks ``model.generate`` uses under left padding,
so greedy rows follow the same computation as ``generate``: the same tokens for the same batch,
and in float32 whatever the batch. In bfloat16 a row's logits can differ in the last bits with
the batch it shares (kernels of other shapes round differently), as they do between ``generate``
calls at different batch sizes, so a near-tie can go the other way.

Steering: ``plan`` (a ``SteeringPlan`` or its path) is applied around the whole run by the
function :mod:`r1probe.steering` registers (:func:`register_plan_context`: its ``steering`` hooks); the per-row gates of conditional
steps follow their rows through pruning and merging. Per-row plans: ``plan`` a list of plans and
``row_plans`` the plan index of each prompt; each forward pass tells the hooks which plan each of its
rows follows (the handle's ``rows``), so variants of a model share the engine's batches.

Sampling: ``temperature > 0`` samples (with ``top_p`` nucleus filtering) from a per-row random
generator seeded from the request's ``seed`` (completion ``k`` of a prompt uses ``seed + k``), so
a seeded request gives the same sample whatever else is in the batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from r1probe.errors import R1ProbeError
from r1probe.models.prefix import (MIN_SHARED_PREFIX, cache_kv, cache_kwarg, expand_cache, hooked, shared_prefix,
                                   with_prefix_mask)


@dataclass(frozen=True)
class SamplingParams:
    """How to complete one prompt."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # per-request seed: the same seed gives the same sample
    stop: tuple[str, ...] = ()  # stop strings (the completion ends before the stop string)
    n: int = 1  # completions per prompt

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise R1ProbeError(f"max_new_tokens must be >= 0, not {self.max_new_tokens}")
        if self.temperature < 0:
            raise R1ProbeError(f"temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise R1ProbeError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.n < 1:
            raise R1ProbeError(f"n must be >= 1, not {self.n}")


@dataclass
class Completion:
    """One completion: its text (special tokens removed), the generated token ids (including a final
    end-of-sequence token), why it ended (``"stop"``: end of sequence or a stop string; ``"length"``:
    the token budget; ``"done"``: the caller's ``done`` callback) and the prompt's length in tokens;
    with ``generate(..., first_logits=True)``, the prompt pass's next-token logits ``[V]`` (float32, CPU),
    the logits its first token was chosen from."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    first_logits: torch.Tensor | None = None


#: default rows in flight (``batch_size=None``) per device kind
DEFAULT_ROWS = {"cpu": 128, "cuda": 256}
#: default bound on rows x cache length (tokens held in the KV cache)
DEFAULT_MAX_TOKENS = 1 << 16
#: prompts are prefilled in groups of similar length of at most this many padded tokens (padding in
#: a prompt pass is computed in full, so one group for prompts of very different lengths wastes work)
PREFILL_TOKENS = 2048


@dataclass
class _Row:
    prompt: int  # index of the prompt
    k: int  # completion index within the prompt
    ids: list[int]
    params: SamplingParams
    gen: torch.Generator | None
    out: list[int]
    text: str = ""
    finish: str | None = None
    plan: int = 0  # index of the row's plan (per-row plans)
    first: torch.Tensor | None = None  # the prompt pass's logits, when asked for


def eos_ids(lm) -> set[int]:
    """End-of-sequence token ids: the generation config's, else the tokenizer's."""
    ids: set[int] = set()
    gc = getattr(lm.model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None) if gc is not None else None
    if e is None:
        e = lm.tokenizer.eos_token_id
    if isinstance(e, int):
        ids.add(e)
    elif e is not None:
        ids.update(int(x) for x in e)
    return ids


def pad_id(lm) -> int:
    tok = lm.tokenizer
    if tok.pad_token_id is not None:
        return int(tok.pad_token_id)
    return int(next(iter(eos_ids(lm)), 0))


#: how a steering plan is applied around a run: ``fn(lm, plan) -> context manager yielding a handle``
#: with ``conditions``, ``gates`` and ``scores`` (or None). Set by :mod:`r1probe.steering` when it is
#: imported (a higher layer: the engine never imports it).
_PLAN_CONTEXT: list[Callable] = []


def register_plan_context(fn: Callable) -> None:
    """Make ``fn(lm, plan)`` the way :func:`generate` applies a ``plan``."""
    _PLAN_CONTEXT[:] = [fn]


def _plan_context(lm, plan):
    if plan is None:
        return contextlib.nullcontext(None)
    if isinstance(plan, (list, tuple)) and not plan:
        raise R1ProbeError("per-row plans: the list of plans is empty")
    if not _PLAN_CONTEXT:
        raise R1ProbeError("a steering plan needs r1probe.steering (import it before generating with a plan)")
    return _PLAN_CONTEXT[0](lm, plan)


def _sample(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    """One token from float32 logits [V] under temperature / top-p (the same filtering as HF's warpers)."""
    scores = logits / p.temperature
    if p.top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(scores, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum <= (1 - p.top_p)
        remove[-1] = False
        scores = scores.masked_fill(remove.scatter(0, sorted_idx, remove), float("-inf"))
    probs = scores.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=gen))


class _Batch:
    """The rows in flight: their KV cache, attention mask and steering gates."""

    def __init__(self, model, device, handle, per_row: bool = False):
        self.model, self.device, self.handle = model, device, handle
        #: per-row plans: each forward pass names its rows' plans to the hooks (``handle.rows``)
        self.per_row = per_row
        self.cache_kw = cache_kwarg(model)
        self.rows: list[_Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # [B, L] long
        #: the shared prefix's length and its per-layer (keys, values) [1, heads, P, dim], or None
        self.prefix: tuple[int, list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def set_prefix(self, ids: list[int], n_plans: int = 1) -> None:
        """Compute the keys and values of ``ids`` (a prefix of every prompt to come) once, one row per
        plan with per-row plans; each prompt pass then runs only the tokens after it. A row's cache is
        ``[prefix][padding][own tokens]``: padding masked out, positions counted over unmasked tokens,
        so attention and rotary positions are those of the unpadded prompt."""
        from transformers import DynamicCache

        k = n_plans if self.per_row else 1
        cache = DynamicCache(config=self.model.config)
        t = torch.tensor([ids] * k, dtype=torch.long, device=self.device)
        self._forward(t, torch.ones_like(t), cache, 0, list(range(k)))
        self.prefix = (len(ids), cache_kv(cache))

    @property
    def length(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    # -- prefill and merge -------------------------------------------------------------------
    def prefill(self, rows: list[_Row], pad: int, budget: int | None = 0) -> torch.Tensor:
        """Prefill ``rows`` in groups of similar length (at most ``budget`` padded tokens a group, or
        one row; cut where padding costs more than a forward pass), then join them to the batch;
        ``budget=None``: one group (a model whose cache cannot be merged); returns their last-position
        logits [b, V]."""
        from r1probe.models.generate import forward_overhead, length_sorted_batches

        skip = self.prefix[0] if self.prefix else 0
        groups = [list(range(len(rows)))] if budget is None else \
            length_sorted_batches([len(r.ids) - skip for r in rows], len(rows), max(1, budget),
                                  overhead=forward_overhead(self.device))
        logits: list[torch.Tensor | None] = [None] * len(rows)
        parts = []
        for g in groups:
            out, cache, mask = self._prefill([rows[j] for j in g], pad)
            parts.append((cache, mask))
            for k, j in enumerate(g):
                logits[j] = out[k]
        self._join(parts)
        return torch.stack(logits)  # type: ignore[arg-type]

    def _prefill(self, rows: list[_Row], pad: int):
        """One group's prompt pass: its logits, cache and mask. The rows join ``self.rows`` at once (the
        gates follow them); their cache joins the batch's in :meth:`_join`, in the same order."""
        from transformers import DynamicCache

        from r1probe.models.generate import left_pad

        past = 0
        if self.prefix is None:
            cache = DynamicCache(config=self.model.config)
            ids, mask = left_pad([r.ids for r in rows], pad, self.device)
        else:
            past, kv = self.prefix
            cache = expand_cache(self.model, kv, len(rows), [r.plan for r in rows] if self.per_row else None)
            ids, mask = left_pad([r.ids[past:] for r in rows], pad, self.device)
            mask = with_prefix_mask(mask, past)
        n_old = len(self.rows)
        old = self._gates()
        logits = self._forward(ids, mask, cache, past, [r.plan for r in rows], prompt=True)
        self.rows.extend(rows)
        h = self.handle
        if h is not None and h.conditions and n_old:
            # the prompt pass set the gates of the new rows only: put the running rows' gates first
            for attr, before in zip(("gates", "scores"), old):
                merged = []
                for go, gn in zip(before, getattr(h, attr)):
                    ref = gn if gn is not None else go
                    if ref is None:
                        merged.append(None)
                        continue
                    go = go if go is not None else torch.zeros(n_old, dtype=ref.dtype, device=ref.device)
                    gn = gn if gn is not None else torch.zeros(len(rows), dtype=ref.dtype, device=ref.device)
                    merged.append(torch.cat([go, gn]))
                setattr(h, attr, merged)
        return logits, cache, mask

    def _join(self, parts: list) -> None:
        """Append prefilled groups' ``(cache, mask)`` to the batch's cache, in prefill order: the groups
        are joined among themselves first (left-padded to their common length), so the running cache,
        which can be large, is copied once per admission rather than once per group."""
        pad = torch.nn.functional.pad
        cache, mask = parts[0]
        if len(parts) > 1:
            L = max(int(m.shape[1]) for _, m in parts)
            for i, layer in enumerate(cache.layers):
                for name in ("keys", "values"):
                    setattr(layer, name, torch.cat([pad(getattr(c.layers[i], name), (0, 0, L - int(m.shape[1]), 0))
                                                    for c, m in parts], 0))
            mask = torch.cat([pad(m, (L - int(m.shape[1]), 0)) for _, m in parts], 0)
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        L = max(self.length, int(mask.shape[1]))
        a_pad, b_pad = L - self.length, L - int(mask.shape[1])
        for la, lb in zip(self.cache.layers, cache.layers):
            for name in ("keys", "values"):
                ta, tb = getattr(la, name), getattr(lb, name)
                if a_pad:
                    ta = torch.nn.functional.pad(ta, (0, 0, a_pad, 0))
                if b_pad:
                    tb = torch.nn.functional.pad(tb, (0, 0, b_pad, 0))
                setattr(la, name, torch.cat([ta, tb], 0))
        self.mask = torch.cat([torch.nn.functional.pad(self.mask, (a_pad, 0)),
                               torch.nn.functional.pad(mask, (b_pad, 0))], 0)

    def _gates(self):
        h = self.handle
        if h is None or not h.conditions:
            return None
        return [list(h.gates), list(h.scores)]

    # -- decode ------------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, cache, past: int, plans: list[int] | None = None,
                 prompt: bool = False) -> torch.Tensor:
        pos = mask.long().cumsum(-1) - 1
        pos = pos.masked_fill(mask == 0, 1)[:, -ids.shape[1]:]
        cpos = torch.arange(past, past + ids.shape[1], device=ids.device)
        kw = {self.cache_kw: cache}
        h = self.handle
        if h is not None:
            # a prompt's tokens after the shared prefix are still a prompt pass; per-row plans by row
            h.phase = "prompt" if prompt else None
            if self.per_row:
                h.rows = torch.tensor(plans, dtype=torch.long, device=ids.device)
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache_position=cpos,
                             use_cache=True, logits_to_keep=1, **kw)
        finally:
            if h is not None:
                h.phase = None
        return out.logits[:, -1, :].float()

    def step(self, tokens: list[int]) -> torch.Tensor:
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        past = self.length
        self.mask = torch.nn.functional.pad(self.mask, (0, 1), value=1)
        return self._forward(ids, self.mask, self.cache, past, [r.plan for r in self.rows])

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at ``keep`` (positions in ``self.rows``); drop leading all-padding columns."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, None
            if self.handle is not None and self.handle.conditions:
                self.handle.gates = [None] * len(self.handle.conditions)
                self.handle.scores = [None] * len(self.handle.conditions)
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.mask = self.mask[idx]
        used = self.mask.any(0).nonzero()
        start = int(used[0]) if len(used) else 0
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[idx, :, start:]
            layer.values = layer.values[idx, :, start:]
        h = self.handle
        if h is not None and h.conditions:
            h.gates = [None if g is None else g[idx.to(g.device)] for g in h.gates]
            h.scores = [None if s is None else s[idx.to(s.device)] for s in h.scores]


def _mergeable(model) -> bool:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        c = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - a model whose cache we do not know: no merging
        return False
    return all(type(layer) is DynamicLayer for layer in c.layers)


@torch.inference_mode()
def generate(lm, prompts: Sequence[str], params: SamplingParams | Sequence[SamplingParams] | None = None, *,
             plan=None, batch_size: int | None = None, max_tokens: int | None = None,
             progress: Callable[[int, int], None] | None = None,
             done: Callable[[int, str], bool] | None = None, share_prefix: bool = True,
             row_plans: Sequence[int] | None = None, first_logits: bool = False) -> list[list[Completion]]:
    """Complete each already chat-formatted prompt; ``n`` completions per prompt, in input order.

    ``params``: one :class:`SamplingParams` for all prompts or one per prompt (default: greedy,
    64 new tokens). ``batch_size``: rows in flight (default by device, :data:`DEFAULT_ROWS`);
    ``max_tokens``: bound on rows x cache length (default :data:`DEFAULT_MAX_TOKENS`; a single row
    may exceed it). ``done(prompt_index, text_so_far) -> bool``: True stops that row
    (``finish_reason="done"``). ``progress(n_finished, n_total)`` is called as completions finish.
    ``share_prefix``: run a token prefix common to every prompt (at least :data:`MIN_SHARED_PREFIX`
    tokens, e.g. the template's system prompt) once (once per plan with per-row plans) and copy its
    keys and values into each row; not with a value-changing hook other than the plan's, nor with a
    conditional plan (its gates read whole prompts). Exact in float32; in bfloat16 the prefix
    computed alone rounds like any other change of batch shape.
    ``plan`` a list of plans with ``row_plans`` (one plan index per prompt): per-row plans, each
    prompt's rows under its own plan (no conditional steps).
    ``first_logits``: keep each prompt pass's next-token logits in its completions (a prompt's last
    logits for free when it is generated from anyway).
    """
    prompts = list(prompts)
    if params is None:
        params = SamplingParams()
    plist = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
    if len(plist) != len(prompts):
        raise R1ProbeError(f"{len(plist)} sampling params for {len(prompts)} prompts")
    device = lm.device if hasattr(lm, "device") else next(lm.model.parameters()).device
    kind = str(device).split(":")[0]
    rows_cap = max(1, batch_size or DEFAULT_ROWS.get(kind, 32))
    tok_cap = max_tokens or DEFAULT_MAX_TOKENS
    tok = lm.tokenizer
    eos = eos_ids(lm)
    pad = pad_id(lm)

    per_row = isinstance(plan, (list, tuple))
    if per_row:
        if row_plans is None or len(row_plans) != len(prompts):
            raise R1ProbeError(f"per-row plans need one plan index per prompt ({len(prompts)}), "
                               f"not {'none' if row_plans is None else len(row_plans)}")
        bad = [j for j in row_plans if not 0 <= int(j) < len(plan)]
        if bad:
            raise R1ProbeError(f"per-row plans: plan index {bad[0]} is out of range for {len(plan)} plans")
    elif row_plans is not None:
        raise R1ProbeError("row_plans needs a list of plans")
    pending: list[_Row] = []
    for i, (text, p) in enumerate(zip(prompts, plist)):
        ids = lm.chat.encode(text)
        if not ids:
            raise R1ProbeError(f"prompt {i} is empty after tokenization")
        for k in range(p.n):
            gen = None
            if p.temperature > 0:
                seed = p.seed if p.seed is not None else int(torch.randint(0, 2**62, (1,)))
                gen = torch.Generator(device="cpu")
                gen.manual_seed(seed + k)
            pending.append(_Row(i, k, ids, p, gen, [], plan=int(row_plans[i]) if per_row else 0))
    total = len(pending)
    results: list[list[Completion | None]] = [[None] * p.n for p in plist]
    finished = 0
    # longest first (prompt plus token budget): the long rows start early and the short ones fill the
    # places they leave; with one budget for all, the long prompts set the cache length early
    pending.sort(key=lambda r: -(len(r.ids) + r.params.max_new_tokens))
    pending.reverse()  # pop() from the end takes the longest
    merge_ok = _mergeable(lm.model)

    def finish(r: _Row, reason: str) -> None:
        nonlocal finished
        r.finish = reason
        text = r.text if (r.params.stop and reason == "stop" and r.text) else tok.decode(r.out, skip_special_tokens=True)
        results[r.prompt][r.k] = Completion(text, list(r.out), reason, len(r.ids), r.first)
        finished += 1
        if progress is not None:
            progress(finished, total)

    def check(r: _Row, t: int) -> None:
        """Append token ``t`` to row ``r`` and decide whether it ends there."""
        if t in eos:
            r.out.append(t)
            finish(r, "stop")
            return
        r.out.append(t)
        if r.params.stop or done is not None:
            text = tok.decode(r.out, skip_special_tokens=True)
            for s in r.params.stop:
                j = text.find(s)
                if j >= 0:
                    r.text = text[:j]
                    finish(r, "stop")
                    return
            if done is not None and done(r.prompt, text):
                finish(r, "done")
                return
        if len(r.out) >= r.params.max_new_tokens:
            finish(r, "length")

    def pick(logits: torch.Tensor, rows: list[_Row]) -> list[int]:
        greedy = logits.argmax(-1).tolist()
        return [greedy[j] if r.params.temperature <= 0 else _sample(logits[j], r.params, r.gen)
                for j, r in enumerate(rows)]

    # rows with a zero budget finish at once
    for r in [r for r in pending if r.params.max_new_tokens == 0]:
        finish(r, "length")
    pending = [r for r in pending if r.params.max_new_tokens > 0]

    foreign = hooked(lm.model)  # hooks not of this run's plan
    with _plan_context(lm, plan) as handle:
        batch = _Batch(lm.model, device, handle, per_row)
        # the prefix is shared when every hook acts token by token: not with hooks of unknown effect,
        # nor with a plan whose gates read whole prompts (conditions)
        if share_prefix and merge_ok and len(pending) > 1 and not foreign and \
                (handle is None or not getattr(handle, "conditions", None)):
            n_pre = shared_prefix([r.ids for r in pending])
            if n_pre >= MIN_SHARED_PREFIX:
                batch.set_prefix(pending[0].ids[:n_pre], len(plan) if per_row else 1)
        while pending or batch.rows:
            # admit waiting prompts when at least a quarter of the places are free (or none is running)
            free = rows_cap - len(batch.rows)
            if pending and (not batch.rows or (merge_ok and free >= max(1, rows_cap // 4))):
                group: list[_Row] = []
                L = batch.length
                while pending and len(batch.rows) + len(group) < rows_cap:
                    r = pending[-1]
                    Lg = max(L, len(r.ids), *(len(g.ids) for g in group)) if group else max(L, len(r.ids))
                    n_rows = len(batch.rows) + len(group) + 1
                    if (batch.rows or group) and n_rows * Lg > tok_cap:
                        break
                    group.append(pending.pop())
                if group:
                    logits = batch.prefill(group, pad, PREFILL_TOKENS if merge_ok else None)
                    # rows are now in prefill order within the batch: pick and check by row object
                    toks = pick(logits, group)
                    if first_logits:
                        kept = logits.cpu()
                        for j, r in enumerate(group):
                            r.first = kept[j]
                    for r, t in zip(group, toks):
                        check(r, t)
                    batch.keep([j for j, r in enumerate(batch.rows) if r.finish is None])
                    continue
            if not batch.rows:
                continue
            last = [r.out[-1] for r in batch.rows]
            logits = batch.step(last)
            toks = pick(logits, batch.rows)
            for r, t in zip(batch.rows, toks):
                check(r, t)
            batch.keep([j for j, r in enumerate(batch.rows) if r.finish is None])
    return results  # type: ignore[return-value]


def generate_texts(lm, prompts: Sequence[str], *, max_new_tokens: int = 128, batch_size: int | None = None,
                   temperature: float = 0.0, top_p: float = 1.0, seed: int | None = 0, plan=None,
                   done: Callable[[int, str], bool] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[str]:
    """One completion text per prompt (a convenience over :func:`generate`)."""
    p = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    return [c[0].text for c in generate(lm, prompts, p, plan=plan, batch_size=batch_size, done=done,
                                         progress=progress)]
