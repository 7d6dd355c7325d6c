"""The one place that installs steering hooks: ``with steering(model, plan): model.generate(...)``.

Hooks (all removed on exit, also on exceptions):

- a forward pre-hook on the causal LM itself, which reads each call's inputs to tell prompt
  tokens from generated ones and to see the padding mask;
- forward pre-hooks on decoder blocks (``resid_pre``), forward hooks on blocks (``resid_post``)
  and on the attention / MLP output projections (``attn_out`` / ``mlp_out``).

Prompt vs generated tokens: a forward call whose KV cache is empty (no cache, or an empty one,
as in ``generate``'s prefill) starts a new sequence and all its tokens are prompt tokens; a call
that extends a non-empty cache feeds generated tokens. For a teacher-forced forward over
prompt + continuation without a cache, set ``handle.generated_from = n`` (padded column index at
which the continuation starts) so later columns count as generated; a list or tensor gives each row its own
column (left-padded rows whose continuations differ in length), and gates then read each row's last prompt
token.

Left padding: a gate reads position ``-1`` (the last real token of every row under left padding)
or the mean over the rows' real tokens (``"mean"``, using the attention mask). Steering pad
tokens is harmless (they are masked out of attention) and is not avoided, which keeps hooks cheap.

Batching and caching: gates are per row, computed in the prompt pass at the condition layer and
kept for the rest of that generation; every other transform acts per token, so batched steered
generation equals one-by-one steered generation (tested).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from r1probe.errors import R1ProbeError
from r1probe.extract.read import site_module
from r1probe.models.layout import Layout, detect_layout
from r1probe.steering import transforms as T
from r1probe.steering.plan import SteeringPlan

log = logging.getLogger(__name__)


def untuple(out) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Split a module output into its hidden-state tensor and a function that rebuilds the output."""
    if isinstance(out, torch.Tensor):
        return out, lambda h: h
    if isinstance(out, tuple):
        return out[0], lambda h: (h, *out[1:])
    if hasattr(out, "__getitem__") and hasattr(out, "keys"):  # ModelOutput
        key = next(iter(out.keys()))

        def rebuild(h):
            out[key] = h
            return out
        return out[key], rebuild
    raise R1ProbeError(f"cannot steer a module returning {type(out).__name__}")


@dataclass
class _Step:
    transform: T.Transform
    unit: torch.Tensor  # float32, on the model's device
    params: dict  # the transform's parameters (floats), from the plan step
    tokens: str
    cond: int | None  # index into handle.conditions
    block: tuple[int, int] | None = None  # (k, n): acts on the k-th of n equal row blocks (per-row plans)


@dataclass
class _Cond:
    layer: int
    unit: torch.Tensor
    raw: torch.Tensor
    threshold: float | None
    position: int | str
    metric: str
    above: bool
    scale: bool = False


@dataclass
class SteeringHandle:
    """What ``steering`` yields: per-call state, gates and the hooks to remove."""

    plan: SteeringPlan
    n_layers: int
    conditions: list[_Cond] = field(default_factory=list)
    #: per condition, the boolean gate [B] of the current generation (None before a prompt pass)
    gates: list[torch.Tensor | None] = field(default_factory=list)
    #: per condition, the scores [B] of the last prompt pass
    scores: list[torch.Tensor | None] = field(default_factory=list)
    #: teacher-forced forwards: columns >= this index count as generated tokens
    generated_from: int | list[int] | torch.Tensor | None = None
    #: per-row plans: the plan index of each row of the next forward passes (``[B]`` long), for a caller
    #: whose rows are not the plans' equal blocks (the generation engine retires and admits rows);
    #: None reads the batch as equal blocks
    rows: torch.Tensor | None = None
    #: ``"prompt"`` makes the next forward passes a prompt pass even after cached keys and values (a
    #: prompt's tokens run after a shared prefix); None: a pass with a cache is decoding
    phase: str | None = None
    _kind: str = "prompt"  # "prompt" | "generated" | "mixed"
    _mixed: torch.Tensor | None = None  # [1, T] or [B, T] bool, generated columns, when _kind == "mixed"
    _valid: torch.Tensor | None = None  # [B, T] bool attention mask of the current call
    _hooks: list = field(default_factory=list)
    _warned: bool = False

    def remove(self) -> None:
        while self._hooks:
            self._hooks.pop().remove()

    # -- per call --------------------------------------------------------------------------
    def _begin_call(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        emb = kwargs.get("inputs_embeds")
        x = ids if ids is not None else emb
        t = x.shape[1] if x is not None and x.dim() >= 2 else None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = 0
        cpos = kwargs.get("cache_position")
        if cpos is not None and cpos.numel():
            past = int(cpos.reshape(-1)[0])
        elif cache is not None and hasattr(cache, "get_seq_length"):
            past = int(cache.get_seq_length())
        mask = kwargs.get("attention_mask")
        self._valid = mask[:, -t:].bool() if (isinstance(mask, torch.Tensor) and mask.dim() == 2 and t) else None
        if past == 0 or self.phase == "prompt":
            self.gates = [None] * len(self.conditions)
            self.scores = [None] * len(self.conditions)
            if self.generated_from is not None and t is not None:
                self._kind = "mixed"
                gf = self.generated_from
                if isinstance(gf, int):
                    self._mixed = (torch.arange(t, device=x.device) >= gf).unsqueeze(0)
                else:  # one column per row
                    gf = torch.as_tensor(gf, device=x.device).reshape(-1, 1)
                    self._mixed = torch.arange(t, device=x.device).unsqueeze(0) >= gf
            else:
                self._kind = "prompt"
        else:
            self._kind = "generated"

    # -- transforms --------------------------------------------------------------------------
    def _token_mask(self, tokens: str) -> torch.Tensor | bool:
        """True: all tokens; False: none; a [1, T] mask: some."""
        if tokens == "both":
            return True
        if self._kind == "mixed":
            return self._mixed if tokens == "generated" else ~self._mixed
        return (self._kind == tokens)

    def _gate(self, cond: int, batch: int) -> torch.Tensor | None:
        g = self.gates[cond] if cond < len(self.gates) else None
        if g is None:
            if not self._warned:
                log.warning("conditional steering: no prompt pass seen in this context, so no row is steered")
                self._warned = True
            return torch.zeros(batch, dtype=torch.bool)
        if g.shape[0] != batch:
            raise R1ProbeError(f"conditional steering: the gate has {g.shape[0]} rows but the batch has {batch}")
        return g

    def _compute_gates(self, layer: int, h: torch.Tensor) -> None:
        if self._kind == "generated":
            return
        for i, c in enumerate(self.conditions):
            if c.layer != layer:
                continue
            if self._kind == "mixed" and isinstance(c.position, int):
                # each row's last prompt column (a [1, T] mask: the same column for every row); a row with
                # no prompt column reads the condition's own position
                prompt = (~self._mixed).expand(h.shape[0], -1).to(h.device)
                last = torch.where(prompt.any(1), prompt.long().cumsum(1).argmax(1),
                                   torch.full((h.shape[0],), c.position % h.shape[1], device=h.device))
                rows = h[torch.arange(h.shape[0], device=h.device), last]
            else:
                rows = T.pool(h, c.position, self._valid)
            s = T.gate_scores(rows, c.raw if c.metric == "dot" else c.unit, c.metric)
            self.scores[i] = s.detach()
            self.gates[i] = (torch.ones_like(s, dtype=torch.bool) if c.threshold is None
                             else T.gate(s, c.threshold, c.above))

    def _apply(self, h: torch.Tensor, steps: list[_Step]) -> torch.Tensor:
        if steps and steps[0].block is not None and self.rows is not None:  # per-row plans, rows named
            if self.rows.shape[0] != h.shape[0]:
                raise R1ProbeError(f"per-row steering: {self.rows.shape[0]} row plans but a batch of {h.shape[0]} rows")
            rows = self.rows.to(h.device)
            out = h.clone()
            for s in steps:
                idx = (rows == s.block[0]).nonzero().squeeze(1)
                if idx.numel():
                    out[idx] = self._apply_steps(out[idx], [s])
            return out
        if steps and steps[0].block is not None:  # per-row plans: each block of rows gets its own steps
            n = steps[0].block[1]
            if h.shape[0] % n:
                raise R1ProbeError(f"per-row steering: {n} plans but a batch of {h.shape[0]} rows")
            parts = list(h.split(h.shape[0] // n))
            for s in steps:
                parts[s.block[0]] = self._apply_steps(parts[s.block[0]], [s])
            return torch.cat(parts)
        return self._apply_steps(h, steps)

    def _apply_steps(self, h: torch.Tensor, steps: list[_Step]) -> torch.Tensor:
        for s in steps:
            tm = self._token_mask(s.tokens)
            if tm is False:
                continue
            new = s.transform.apply(h, s.unit, normalized=True, **s.params)
            if tm is not True:
                new = T.where_tokens(new, h, tm)
            if s.cond is not None:
                g = self._gate(s.cond, h.shape[0])
                if not bool(g.any()):
                    continue
                if self.conditions[s.cond].scale:
                    new = T.scale_rows(new, h, self.scores[s.cond] * g.to(self.scores[s.cond].dtype))
                else:
                    new = T.where_rows(new, h, g)
            h = new
        return h


def _resolve_layer(layer: int, n: int, what: str) -> int:
    i = layer + n if layer < 0 else layer
    if not 0 <= i < n:
        raise R1ProbeError(f"{what}: layer {layer} is out of range for a model with {n} layers")
    return i


def _unpack(lm_or_model, layout: Layout | None):
    model = getattr(lm_or_model, "model", None)
    if layout is None and hasattr(lm_or_model, "layout") and hasattr(lm_or_model, "tokenizer"):
        return lm_or_model.model, lm_or_model.layout
    model = lm_or_model
    return model, (layout or detect_layout(model))


@contextmanager
def steering(lm_or_model, plan: SteeringPlan | list[SteeringPlan], *, layout: Layout | None = None,
             directions: str | None = None) -> Iterator[SteeringHandle]:
    """Apply ``plan`` to every forward pass of the model inside the ``with`` block.

    ``lm_or_model``: a ``LoadedModel`` or an HF causal LM (``layout`` detected if not given).
    Named directions resolve from ``directions`` or the plan's own ``directions`` file; sizes
    are checked against the model. Yields a ``SteeringHandle`` (gates, scores, ``generated_from``).

    Per-row plans: with a list of ``n`` plans every batch is read as ``n`` equal blocks of rows (the
    same prompts stacked once per plan) and plan ``k`` acts on block ``k`` only, so ``n`` variants
    share one forward pass; or, when the handle's ``rows`` is set, plan ``rows[i]`` acts on row ``i``.
    Conditional steps need a single plan.
    """
    model, layout = _unpack(lm_or_model, layout)
    n = layout.n_layers
    if isinstance(plan, (list, tuple)):
        plans = [p.resolve(layout.d_model, directions) for p in plan]
        if not plans:
            raise R1ProbeError("per-row steering needs at least one plan")
        if any(st.condition is not None for p in plans for st in p.steps):
            raise R1ProbeError("per-row steering: conditional steps need a single plan")
        plan = SteeringPlan([st for p in plans for st in p.steps], name="per-row plans")
        blocks = [(k, len(plans)) for k, p in enumerate(plans) for _ in p.steps]
    else:
        plan = plan.resolve(layout.d_model, directions)
        blocks = [None] * len(plan.steps)
    try:
        dev = next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        dev = torch.device("cpu")
    handle = SteeringHandle(plan=plan, n_layers=n)
    cond_index: dict[int, int] = {}
    by_site: dict[tuple[int, str], list[_Step]] = {}
    for k, st in enumerate(plan.steps):
        ci = None
        if st.condition is not None:
            key = id(st.condition)
            if key not in cond_index:
                c = st.condition
                cl = _resolve_layer(c.layer, n, f"step {k} condition")
                raw = c.direction.to(dev, torch.float32)
                handle.conditions.append(_Cond(cl, T.unit(raw), raw, c.threshold, c.position, c.metric, c.above,
                                               c.scale))
                cond_index[key] = len(handle.conditions) - 1
            ci = cond_index[key]
        u = T.unit(st.direction).to(dev)
        transform = T.get_transform(st.op)
        params = {p: float(getattr(st, p)) for p in transform.params}
        for lay in st.layers:
            li = _resolve_layer(lay, n, f"step {k} ({st.op})")
            if ci is not None and st.tokens != "generated" and (
                    li < handle.conditions[ci].layer):
                raise R1ProbeError(f"step {k}: a conditional step on prompt tokens acts at layer {li}, "
                                   f"before its condition layer {handle.conditions[ci].layer}")
            by_site.setdefault((li, st.site), []).append(_Step(transform, u, params, st.tokens, ci, blocks[k]))
    handle.gates = [None] * len(handle.conditions)
    handle.scores = [None] * len(handle.conditions)
    cond_layers = {c.layer for c in handle.conditions}

    try:
        handle._hooks.append(model.register_forward_pre_hook(handle._begin_call, with_kwargs=True))
        for li in sorted({li for li, _ in by_site} | cond_layers):
            pre = by_site.get((li, "resid_pre"), [])
            if pre or li in cond_layers:
                def pre_hook(module, args, kwargs, _steps=pre, _li=li, _gate=li in cond_layers):
                    if args:
                        h = args[0]
                    else:
                        h = kwargs["hidden_states"]
                    if _gate:
                        handle._compute_gates(_li, h)
                    if not _steps:
                        return None
                    h2 = handle._apply(h, _steps)
                    if args:
                        return (h2, *args[1:]), kwargs
                    kwargs = dict(kwargs, hidden_states=h2)
                    return args, kwargs
                block = site_module(model, layout, li, "resid_pre")[0]
                handle._hooks.append(block.register_forward_pre_hook(pre_hook, with_kwargs=True))
            for site in ("resid_post", "attn_out", "mlp_out"):
                module = site_module(model, layout, li, site)[0]
                steps = by_site.get((li, site))
                if not steps:
                    continue

                def post_hook(module, args, out, _steps=steps):
                    h, rebuild = untuple(out)
                    return rebuild(handle._apply(h, _steps))
                handle._hooks.append(module.register_forward_hook(post_hook))
        yield handle
    finally:
        handle.remove()


def untouched_by(plan: SteeringPlan) -> bool:
    """True when every step of ``plan`` is conditional: a row whose gates all stay closed runs the unedited
    model (no step acts on it), so its output is the unsteered model's."""
    return bool(plan.steps) and all(st.condition is not None for st in plan.steps)


@torch.inference_mode()
def prompt_gates(lm, plan: SteeringPlan, prompts: Sequence[Sequence[int]], *, batch_size: int = 16,
                 pad_id: int = 0) -> list[bool] | None:
    """Per prompt (token ids, as a generation's or a scored pass's prompt), whether any gate of ``plan``
    opens on it, as the plan's own prompt pass decides (the same hooks; rows left-padded, positions counted
    over unpadded tokens). The forward stops once the last condition layer has been read. None when a step
    of ``plan`` is not conditional (it acts on every row, so no row is left as the unedited model's)."""
    from r1probe.models.generate import forward_overhead, left_pad, length_sorted_batches

    plan = plan if isinstance(plan, SteeringPlan) else SteeringPlan.load(plan)
    if not untouched_by(plan):
        return None
    if not prompts:
        return []
    model, layout = _unpack(lm, None)
    dev = next(model.parameters()).device
    out = [False] * len(prompts)
    with steering(lm, plan) as handle:
        last = max(c.layer for c in handle.conditions)
        block = site_module(model, layout, last, "resid_pre")[0]
        for idx in length_sorted_batches([len(p) for p in prompts], batch_size, overhead=forward_overhead(dev)):
            ids, mask = left_pad([prompts[i] for i in idx], pad_id, dev)
            pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
            with recording(block, stop=True):
                try:
                    model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                except StopForward:
                    pass
            opened = torch.zeros(len(idx), dtype=torch.bool)
            for g in handle.gates:
                if g is not None:
                    opened |= g.detach().cpu().bool()
            for r, i in enumerate(idx):
                out[i] = bool(opened[r])
    return out


class StopForward(Exception):
    """Raised by ``recording(..., stop=True)`` once the module has been seen: the rest of the forward is skipped."""


@contextmanager
def recording(module, *, inputs: bool = True, stop: bool = False) -> Iterator[list[torch.Tensor]]:
    """Record what ``module`` reads (its first positional input) or writes, one tensor per call.

    Used to fit read vectors on the inputs of output projections (``edit.fit_read_vector``).
    ``stop=True`` raises :class:`StopForward` right after recording, so a caller that only needs this
    module's input skips the later layers and the unembedding (catch it around the forward call).
    """
    seen: list[torch.Tensor] = []

    def keep(t):
        seen.append(t.detach())
        if stop:
            raise StopForward

    if inputs:
        h = module.register_forward_pre_hook(lambda m, a, k: keep(a[0] if a else next(iter(k.values()))),
                                             with_kwargs=True)
    else:
        h = module.register_forward_hook(lambda m, a, o: keep(untuple(o)[0]))
    try:
        yield seen
    finally:
        h.remove()


def hook_count(model) -> int:
    """Number of forward hooks and pre-hooks on ``model`` and its submodules (for leak tests)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
