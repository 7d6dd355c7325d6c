"""The activation reader: texts -> length-sorted left-padded batches -> forward hooks -> gathered positions.

Every activation r1probe reads goes through :func:`read_activations` (or, for the extraction
store, :func:`read_batches` with the store writer as the sink): the extraction backend, the edit
search's last-token states, the causal selection's block-input means and the read-vector fit of
the rank-one weight edit.

Sites (``site_module`` is the one map from a site to the module and hook that reads it):

- ``resid_pre``: the input of block ``L`` (forward pre-hook on the block; HF ``hidden_states[L]``);
- ``resid_post``: the output of block ``L`` (layer ``-1``: the embedding output);
- ``attn_out`` / ``mlp_out``: what the attention / MLP output projection writes (``o_proj``, ``down_proj``);
- ``attn_z`` / ``mlp_z``: what that projection reads (its input ``z`` in ``y = W z``).
- ``mlp_in``: what the MLP reads (its input: the block's post-attention normed residual ``x``).

Positions: negative offsets from the end of each text (``-1`` is the last token; left padding puts it
in the last column of every row; an offset before a text's first token reads NaN), ``"mean"`` (mean over the instruction tokens, for
:class:`~r1probe.extract.batching.Encoded` inputs), or ``"all"`` (every real token, packed).

The forward pass runs the decoder stack only (never the final norm or the unembedding), with
positions counted over real tokens, and stops right after the deepest requested module.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from r1probe.extract.batching import (Encoded, Gather, auto_token_budget, build_gather, left_pad, plan_batches,
                                      plan_shards, position_ids)
from r1probe.extract.spec import ExtractError
from r1probe.extract.store import EMBED, tensor_key

#: every readable site, in execution order within a block
READ_SITES = ("resid_pre", "attn_z", "attn_out", "mlp_in", "mlp_z", "mlp_out", "resid_post")
_SITE_ORDER = {s: k for k, s in enumerate(READ_SITES)}

#: ``sink(rows, acts)``: one call per batch; ``rows`` are the input indices of the batch's rows and
#: ``acts[(site, layer)]`` their activations (``[B, P, d]`` float32 on the model's device; ``[n_tokens, d]``
#: for ``positions="all"``, the real tokens of each row in row order)
Sink = Callable[[list[int], dict[tuple[str, int], torch.Tensor]], None]


class _Stop(Exception):
    """Raised by the last capture hook: nothing deeper is needed (no later blocks, norm or lm_head)."""


def untuple(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def base_model(lm) -> torch.nn.Module:
    """The decoder stack without lm_head (``model.model`` for HF causal LMs)."""
    return getattr(lm.model, lm.layout.layers_path.split(".")[0])


def site_module(model, layout, layer: int, site: str) -> tuple[torch.nn.Module, bool]:
    """``(module, pre)``: the module whose forward reads (``pre=True``: its input) or writes the activation
    of ``site`` at ``layer``."""
    if site == "resid_post":
        return (layout.embed(model), False) if layer == EMBED else (layout.layer(model, layer), False)
    if layer == EMBED:
        raise ExtractError(f"site {site!r} does not exist at the embedding layer (only resid_post)")
    if site == "resid_pre":
        return layout.layer(model, layer), True
    if site in ("attn_out", "attn_z"):
        return layout.attn_out(model, layer), site == "attn_z"
    if site == "mlp_in":
        return layout.mlp(model, layer), True
    if site in ("mlp_out", "mlp_z"):
        return layout.mlp_out(model, layer), site == "mlp_z"
    raise ExtractError(f"site {site!r} at layer {layer} is not supported (choose from {', '.join(READ_SITES)})")


def capture_keys(layers: Sequence[int], sites: Sequence[str]) -> list[tuple[str, int]]:
    """``(site, layer)`` pairs in execution order; the embedding layer (-1) exists only as ``resid_post``."""
    bad = [s for s in sites if s not in _SITE_ORDER]
    if bad:
        raise ExtractError(f"site {bad[0]!r}: choose from {', '.join(READ_SITES)}")
    keys = {(s, int(l)) for l in layers for s in sites if l != EMBED or s == "resid_post"}
    if not keys:
        raise ExtractError("nothing to capture: layer 'embed' only has the resid_post site")
    return sorted(keys, key=lambda k: (k[1], _SITE_ORDER[k[0]]))


class ActivationHooks:
    """Forward hooks on the modules of ``keys`` (``(site, layer)`` pairs) of ``lm.model``.

    ``with ActivationHooks(lm, keys) as hooks: hooks.run(ids, mask, pos, gather)`` returns
    ``{"<site>.<layer>": gather(activation)}``. The decoder (``model.model``) is called instead of the
    causal LM, so lm_head never runs; the hook that records the last missing key raises ``_Stop`` so
    later blocks and the final norm are skipped too. Each hook keeps only ``gather(h)``, so a batch
    never holds more than the gathered positions per key.
    """

    name = "native"

    def __init__(self, lm, keys: Sequence[tuple[str, int]]):
        self.lm, self.keys = lm, list(keys)
        self._handles: list = []
        self._active = False
        self._out: dict[str, torch.Tensor] = {}
        self._gather: Callable | None = None
        self._remaining = 0

    def _record(self, key: str, h: torch.Tensor) -> None:
        if not self._active or key in self._out:
            return
        self._out[key] = self._gather(h)
        self._remaining -= 1
        if self._remaining == 0:
            raise _Stop

    def _post(self, key):
        def hook(module, args, output):
            self._record(key, untuple(output))
        hook.value_preserving = True  # reads only (see r1probe.models.prefix.hooked)
        return hook

    def _pre(self, key):
        def hook(module, args, kwargs):
            self._record(key, args[0] if args else kwargs["hidden_states"])
        hook.value_preserving = True
        return hook

    def __enter__(self):
        model, layout = self.lm.model, self.lm.layout
        try:
            for site, layer in self.keys:
                key = tensor_key(site, layer)
                mod, pre = site_module(model, layout, layer, site)
                if pre:
                    self._handles.append(mod.register_forward_pre_hook(self._pre(key), with_kwargs=True))
                else:
                    self._handles.append(mod.register_forward_hook(self._post(key)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    #: ``run`` takes a cache of shared-prefix keys/values (``past``)
    supports_past = True

    @torch.inference_mode()
    def run(self, input_ids, attention_mask, position_ids, gather, past=None) -> dict[str, torch.Tensor]:
        """Capture ``self.keys`` on one batch. ``past``: a cache holding the keys/values of a prefix of
        every row (``attention_mask`` then covers prefix + ``input_ids``; hooks see ``input_ids`` only)."""
        self._out, self._gather = {}, gather
        self._remaining = len({tensor_key(s, l) for s, l in self.keys})
        self._active = True
        try:
            from r1probe.models.prefix import cache_kwarg

            body = base_model(self.lm)
            kw = {cache_kwarg(body): past, "use_cache": True} if past is not None else {"use_cache": False}
            body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kw)
        except _Stop:
            pass
        finally:
            self._active = False
        if self._remaining:
            missing = [tensor_key(s, l) for s, l in self.keys if tensor_key(s, l) not in self._out]
            raise ExtractError(f"{self.name} backend: hooks did not fire for {missing[:4]}")
        out, self._out = self._out, {}
        return out


class TokenGather:
    """Gathers every real token of a left-padded batch: ``h[mask]`` ``[n_tokens, d]`` float32, row by row."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask.bool()

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return h[self.mask].float()


def _pad_id(lm) -> int:
    tok = lm.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def encode_texts(lm, texts: Sequence) -> list[Encoded]:
    """Inputs of the reader as :class:`Encoded`: formatted strings (tokenised with ``lm.chat.encode``),
    token lists, or ``Encoded`` (kept). Only ``Encoded`` inputs carry an instruction span."""
    out = []
    for t in texts:
        if isinstance(t, Encoded):
            out.append(t)
            continue
        ids = lm.chat.encode(t) if isinstance(t, str) else [int(x) for x in t]
        out.append(Encoded(list(ids), (0, 0), 0))
    return out


def read_batches(hooks, lm, encs: Sequence[Encoded], batches: Sequence[Sequence[int]], names: Sequence,
                 keys: Sequence[tuple[str, int]], sink: Sink, *,
                 generate: Callable | None = None, after_prefix: int = 0) -> None:
    """Run ``batches`` (lists of indices into ``encs``) through ``hooks`` and hand each batch to ``sink``.

    ``names``: the positions (see the module doc; ``["all"]`` for every real token). ``generate``:
    ``generate(rows, ids, mask) -> (ids, mask, gen_lens)`` extends a batch with generated tokens first
    (the extraction store's ``--generate``); ``gen*`` positions then read them. ``after_prefix``: see
    :func:`read_activations` (checked there).
    """
    pad = _pad_id(lm)
    device = lm.device
    every = list(names) == ["all"]
    n_pre = after_prefix or (0 if generate is not None or not getattr(hooks, "supports_past", False) else
                             prefix_to_share(lm, [encs[i] for b in batches for i in b], names))
    kv = None
    if n_pre:
        from r1probe.models.prefix import cache_kv

        first = encs[batches[0][0]].ids[:n_pre]
        kv = cache_kv(_prefix_cache(lm, first))
    for rows in batches:
        be = [encs[i] for i in rows]
        if n_pre:  # the rows' own tokens after the shared prefix; offsets from the end are unchanged
            be = [Encoded(e.ids[n_pre:], (0, 0), e.n_post) for e in be]
        ids, mask = left_pad([e.ids for e in be], pad)
        ids, mask = ids.to(device), mask.to(device)
        width_prompt = ids.shape[1]
        gen_lens = None
        if generate is not None:
            ids, mask, gen_lens = generate(list(rows), ids, mask)
        gather: Gather | TokenGather = (TokenGather(mask) if every else
                                        build_gather(names, be, ids.shape[1], width_prompt, gen_lens).to(device))
        if n_pre:
            from r1probe.models.prefix import expand_cache, with_prefix_mask

            full = with_prefix_mask(mask, n_pre)
            out = hooks.run(ids, full, position_ids(full)[:, n_pre:], gather,
                            past=expand_cache(lm.model, kv, len(rows)))
        else:
            out = hooks.run(ids, mask, position_ids(mask), gather)
        sink(list(rows), {(s, l): out[tensor_key(s, l)] for s, l in keys})


def prefix_to_share(lm, encs: Sequence[Encoded], names: Sequence) -> int:
    """Tokens of a prefix common to every text that the reader may compute once (0: none): every
    position read is an offset from the end that stays after the prefix, the model carries no
    value-changing hook, and the prefix is at least ``MIN_SHARED_PREFIX`` tokens long."""
    from r1probe.models.prefix import MIN_SHARED_PREFIX, hooked, shared_prefix

    if not encs or not all(isinstance(n, int) and not isinstance(n, bool) and n < 0 for n in names):
        return 0
    if hooked(lm.model):
        return 0
    n = min(shared_prefix([e.ids for e in encs]), min(len(e) for e in encs) + min(names))
    return n if n >= MIN_SHARED_PREFIX else 0


@torch.inference_mode()
def _prefix_cache(lm, ids: list[int]):
    from transformers import DynamicCache

    from r1probe.models.prefix import cache_kwarg

    cache = DynamicCache(config=lm.model.config)
    t = torch.tensor([ids], dtype=torch.long, device=lm.device)
    body = base_model(lm)
    body(input_ids=t, attention_mask=torch.ones_like(t), use_cache=True, **{cache_kwarg(body): cache})
    return cache


def check_positions(names: Sequence, encs: Sequence[Encoded]) -> list:
    """Validated position names for the reader (one-line ``ExtractError`` otherwise)."""
    names = list(names)
    if not names:
        raise ExtractError("no positions to read")
    if "all" in names and len(names) > 1:
        raise ExtractError("positions 'all' cannot be combined with other positions")
    for n in names:
        if isinstance(n, bool) or not (isinstance(n, int) and n < 0 or n in ("all", "mean")
                                       or isinstance(n, str) and n.startswith("gen")):
            raise ExtractError(f"position {n!r}: use negative offsets (-1 = last token), 'mean' or 'all'")
    if "mean" in names and any(e.instr[1] <= e.instr[0] for e in encs):
        raise ExtractError("position 'mean' needs every text's instruction tokens (pass batching.Encoded inputs)")
    return names


@torch.inference_mode()
def read_activations(lm, texts: Sequence, *, sites: Sequence[str] = ("resid_post",),
                     positions: Sequence = (-1,), layers: Sequence[int], batch_size: int | None = None,
                     sink: Sink | None = None, after_prefix: int = 0) -> dict[tuple[str, int], torch.Tensor]:
    """Activations of ``lm`` at ``sites`` x ``layers`` and ``positions`` of each text (float32, on the CPU).

    ``texts``: formatted strings, token lists or :class:`~r1probe.extract.batching.Encoded`.
    Batches hold ``batch_size`` texts (None: a token budget, ``batching.auto_token_budget``), sorted
    by length (longest first) and left-padded. Returns ``{(site, layer): Tensor[n_texts, n_positions, d]}``
    in input order; for ``positions="all"`` each value is ``Tensor[n_tokens, d]``, every real token of
    each text, texts in input order. With a ``sink``, each batch goes to ``sink(rows, acts)`` instead
    (see :data:`Sink`) and the result is ``{}``.

    ``after_prefix=N`` (with ``positions="all"``): the first ``N`` tokens, the same in every text, run
    once as a key/value cache and are not read; each text's rows are its tokens after them (a caller
    that needs the prefix's rows reads them once, e.g. :func:`r1probe.steering.edit.writer_inputs`).
    Needs a model without value-changing hooks.
    """
    if isinstance(positions, (str, int)):
        positions = [positions]
    if isinstance(sites, str):
        sites = [sites]
    encs = encode_texts(lm, texts)
    if not encs:
        return {}
    if any(len(e) == 0 for e in encs):
        raise ExtractError("cannot read activations of an empty text")
    names = check_positions(positions, encs)
    if after_prefix:
        from r1probe.models.prefix import hooked, shared_prefix

        if names != ["all"]:
            raise ExtractError("after_prefix reads every token after the prefix: use positions 'all'")
        if min(len(e) for e in encs) <= after_prefix or shared_prefix([e.ids for e in encs]) < after_prefix:
            raise ExtractError(f"after_prefix={after_prefix}: not a prefix every text shares and outgrows")
        if hooked(lm.model):
            raise ExtractError("after_prefix: the model carries a value-changing hook, so the prefix cannot be "
                               "computed once")
    n = lm.layout.n_layers
    bad = [l for l in layers if not EMBED <= int(l) < n]
    if bad:
        raise ExtractError(f"layer {bad[0]} out of range: the model has {n} layers (0-{n - 1}; -1 = embedding)")
    keys = capture_keys([int(l) for l in layers], list(sites))
    lengths = [len(e) for e in encs]
    order = plan_shards(lengths, len(encs))[0]
    if batch_size is None:
        batches = plan_batches(order, lengths, None, auto_token_budget(lm, max(lengths)))
    else:
        if int(batch_size) < 1:
            raise ExtractError(f"batch size {batch_size}: must be >= 1")
        batches = plan_batches(order, lengths, int(batch_size))

    result: dict[tuple[str, int], torch.Tensor] = {}
    if sink is None:
        every = names == ["all"]
        parts: dict[tuple[str, int], list[torch.Tensor]] = {k: [] for k in keys}
        done: list[int] = []

        def sink(rows, acts):  # noqa: F811 - the default sink keeps everything on the CPU
            done.extend(rows)
            for k, v in acts.items():
                parts[k].append(v.cpu())

        with ActivationHooks(lm, keys) as hooks:
            read_batches(hooks, lm, encs, batches, names, keys, sink, after_prefix=after_prefix)
        inv = torch.empty(len(done), dtype=torch.long)
        inv[torch.tensor(done, dtype=torch.long)] = torch.arange(len(done))
        for k, chunks in parts.items():
            if every:  # split the packed rows back into texts, then restore the input order
                per_text = [t for c, rows in zip(chunks, batches)
                            for t in c.split([lengths[r] - after_prefix for r in rows])]
                result[k] = torch.cat([per_text[i] for i in inv.tolist()])
            else:
                result[k] = torch.cat(chunks)[inv]
        return result
    with ActivationHooks(lm, keys) as hooks:
        read_batches(hooks, lm, encs, batches, names, keys, sink, after_prefix=after_prefix)
    return result


__all__ = ["READ_SITES", "Sink", "ActivationHooks", "TokenGather", "site_module", "capture_keys", "base_model",
           "untuple", "encode_texts", "check_positions", "read_batches", "read_activations"]


def last_prompt_states(lm, prompts: Sequence[str], layers: Sequence[int], batch_size: int | None = 16) -> torch.Tensor:
    """Residual stream ``x_L`` (input of block ``L``, HF ``hidden_states[L]``) at the last token of each prompt
    formatted with the model's chat template (its last post-instruction token): ``[N, len(layers), d]`` float32."""
    layers = [int(x) for x in layers]
    if not prompts:
        return torch.zeros(0, len(layers), lm.layout.d_model)
    acts = read_activations(lm, [lm.chat.format(p) for p in prompts], sites=["resid_pre"], positions=[-1],
                            layers=layers, batch_size=batch_size)
    return torch.stack([acts[("resid_pre", L)][:, 0].float() for L in layers], 1)
