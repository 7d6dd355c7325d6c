"""The stages every preset is made of: extract, probe (select), edit, plan, evaluate, compare.

Each stage function takes the run's :class:`Context` (settings, output folder, model cache, the
results so far) plus what distinguishes one call from another (which model, which direction), runs
as a cached stage (:func:`r1probe.pipeline.cache.run_stage`: skipped when its inputs are unchanged)
and records its result in ``ctx.results`` and the equivalent verb command in ``ctx.commands``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from r1probe.errors import R1ProbeError
from r1probe.pipeline.cache import StageResult, run_stage
from r1probe.pipeline.models import ModelCache, model_key
from r1probe.pipeline.settings import StudySettings


@dataclass
class Variant:
    """One evaluated model: a spec, an optional run-time plan file, and the cache key of both."""

    spec: str
    plan: str | None
    key: str


@dataclass
class Context:
    """The state of one preset run: its settings, folders, model cache and stage results."""

    settings: StudySettings
    force: bool = False
    log: Callable[[str], None] = print
    results: dict[str, StageResult] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)
    models: ModelCache = None  # type: ignore[assignment]
    values: dict[str, Any] = field(default_factory=dict)  # what one stage hands to a later one (chosen cell ...)

    def __post_init__(self):
        m = self.settings.model
        if self.models is None:
            self.models = ModelCache(dtype=m.dtype, device=m.device, chat_template=m.chat_template)
        self.out.mkdir(parents=True, exist_ok=True)
        self.base_key = model_key(m.spec)

    @property
    def out(self) -> Path:
        return Path(self.settings.out)

    def stage(self, name: str, rel: str, inputs: dict, fn: Callable[[Path], dict | None], **kw) -> StageResult:
        self.results[name] = run_stage(name, self.out / rel, inputs, fn, force=self.force, log=self.log, **kw)
        return self.results[name]

    def common(self) -> dict:
        m = self.settings.model
        return {"dtype": m.dtype, "chat_template": m.chat_template, "seed": self.settings.seed}


def command(*parts) -> str:
    """A shell command line from its parts (None and empty parts left out)."""
    return " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")


def prompt_sets(settings: StudySettings):
    """The harmful and harmless training prompts (``n_train`` of each train split, seeded)."""
    from r1probe.data.prompts import load_prompt_set

    ex, seed = settings.extract, settings.seed

    def part(spec, label):
        ps = load_prompt_set(spec, label=label, split="train", seed=seed)
        if len(ps) < 2:
            raise R1ProbeError(f"{spec} (train) has {len(ps)} prompts; need at least 2")
        return ps.sample(min(ex.n_train, len(ps)), seed=seed)

    return part(ex.harmful, "harmful"), part(ex.harmless, "harmless")


def extract_inputs(ctx: Context, key: str) -> dict:
    ex = ctx.settings.extract
    return {**ctx.common(), "model": key, "harmful": ex.harmful, "harmless": ex.harmless, "n_train": ex.n_train,
            "layers": ex.layers, "positions": ex.positions}


# --- extract ------------------------------------------------------------------------------------------------

def extract(ctx: Context, name: str = "extract", spec: str | None = None, key: str | None = None,
            think: str | None = None) -> StageResult:
    """Activations of the training prompts in model ``spec`` (default: the study's model) -> ``<name>/store``;
    ``think``: the prompts end inside (``"open"``) or after (``"closed"``) a reasoning block."""
    spec = spec or ctx.settings.model.spec
    ex = ctx.settings.extract

    def fn(path: Path):
        from r1probe.extract import extract_activations

        harm, harmless = prompt_sets(ctx.settings)
        store = extract_activations(ctx.models.get(spec), [harm, harmless], layers=ex.layers,
                                    positions=ex.positions, out_dir=path / "store", progress=True, think=think)
        return {"store": str(path / "store"), "label_counts": store.label_counts(), "layers": len(store.layers)}

    inputs = extract_inputs(ctx, key or (ctx.base_key if spec == ctx.settings.model.spec else spec))
    r = ctx.stage(name, name, {**inputs, **({"think": think} if think else {})}, fn)
    ctx.commands[name] = command("r1probe", "extract", "--model", spec, "--harmful", ex.harmful, "--harmless",
                                 ex.harmless, "--layers", ex.layers, "--positions", ex.positions,
                                 "--split", "train", "--limit", ex.n_train, "--seed", ctx.settings.seed,
                                 *(("--think", think) if think else ()), "--out", r.path / "store")
    return r


def store(ctx: Context, name: str):
    """The activation store of extract stage ``name``."""
    from r1probe.extract.store import ActivationStore

    return ActivationStore(ctx.results[name].path / "store")


# --- probe and select -----------------------------------------------------------------------------------------

def probe_grid(n_layers: int, max_layer_frac: float, include: tuple[int, ...] = ()) -> list[int]:
    """The coarse layer grid of the causal search: every second layer from ``n/4`` below the
    ``max_layer_frac`` cut, plus ``include`` (layers another stage reads directions from)."""
    lo = n_layers // 4
    return sorted(set(range(lo, max(lo + 1, int(max_layer_frac * n_layers)), 2)) | set(include))


def probe(ctx: Context, name: str = "probe", extract_name: str = "extract",
          include_layers: Callable[[int], tuple[int, ...]] = lambda n: ()) -> StageResult:
    """Probes on the store of ``extract_name`` and the causal selection with the study's model.

    Without ``full`` the search runs on :func:`probe_grid` and positions -1, -2 (minutes on CPU).
    ``include_layers(n_layers)``: layers always probed. Sets ``ctx.values['chosen'] = (layer, pos)``.
    """
    s, p = ctx.settings, ctx.settings.probe
    estimators = tuple(dict.fromkeys((*p.estimators, p.candidates)))
    inputs = {"extract": ctx.results[extract_name].key, "probe": p.model_dump(mode="json"), "full": s.full,
              "grid": "coarse-v2"}
    grid: dict[str, Any] = {}

    def fn(path: Path):
        from r1probe.probes.api import run_probe

        lm = ctx.models.get(s.model.spec)
        n = lm.layout.n_layers
        layers = None if s.full else probe_grid(n, p.max_layer_frac, tuple(include_layers(n)))
        positions = None if s.full else [-1, -2]
        grid.update(layers=layers, positions=positions)
        res = run_probe(ctx.results[extract_name].path / "store", lm, path, layers=layers, positions=positions,
                        harmful_val=s.extract.harmful, harmless_val=s.extract.harmless, cfg=p.select_config(),
                        seed=s.seed, estimators=estimators, candidates=p.candidates, progress=ctx.log)
        if not res.get("chosen"):
            raise R1ProbeError("no candidate direction passed the selection filters; see probe.json")
        if s.report.figures:
            try:
                from r1probe.analysis.probe_report import draw_report

                draw_report(path, path / "figures")
            except Exception as e:  # noqa: BLE001 - figures are a bonus of this stage
                ctx.log(f"[{name}] figures skipped: {e}")
        return {"chosen": res["chosen"], "layers": layers, "positions": positions}

    r = ctx.stage(name, name, inputs, fn)
    chosen = r.info["chosen"]
    ctx.values["chosen"] = (int(chosen["layer"]), chosen["pos"])
    sel = p.select_config()
    flags = [x for k in type(sel).model_fields for x in (f"--{k.replace('_', '-')}", getattr(sel, k))]
    lay, pos = r.info.get("layers"), r.info.get("positions")
    ctx.commands[name] = command(
        "r1probe", "probe", "--store", ctx.results[extract_name].path / "store", "--model", s.model.spec,
        "--harmful-val", s.extract.harmful, "--harmless-val", s.extract.harmless, *flags,
        "--estimators", ",".join(estimators), "--candidates", p.candidates,
        *(("--layers", ",".join(map(str, lay))) if lay else ()),
        *(("--positions", ",".join(map(str, pos))) if pos else ()), "--seed", s.seed, "--out", r.path)
    return r


def direction(ctx: Context, probe_name: str = "probe", key: str = "chosen") -> torch.Tensor:
    """Direction ``key`` of probe stage ``probe_name``."""
    from r1probe.steering.directions import load_direction

    return load_direction(ctx.results[probe_name].path, key)


# --- edits (exported checkpoints) -----------------------------------------------------------------------------

def rank1_gate_layer(settings: StudySettings, n_layers: int) -> int:
    """The rank1-gate edit's layer: ``edit.rank1_gate_layer``, or the middle layer when it is -1."""
    layer = settings.edit.rank1_gate_layer
    if layer < 0:
        return n_layers // 2
    if layer >= n_layers:
        raise R1ProbeError(f"edit.rank1_gate_layer {layer}: the model has {n_layers} layers")
    return layer


def edit_settings(ctx: Context, variant: str, n_layers: int, *, amplify: tuple[str, float] | None = None,
                  fit_seed: int | None = None) -> tuple[str, dict]:
    """The registry edit and its settings for a study variant (``rank1-gate-borderline``: rank1-gate with
    ``borderline`` > 0). ``amplify``: (layers, beta) overriding the edit stage's; ``fit_seed``: rank1-gate refit
    on a seeded subsample of its fit data."""
    s, e = ctx.settings, ctx.settings.edit
    if variant == "orthogonalize":
        return "orthogonalize", {"direction_key": "chosen"}
    if variant == "amplify":
        layers, beta = amplify or (e.amplify_layers, e.amplify_beta)
        return "amplify", {"direction_key": "chosen", "layers": layers, "beta": beta}
    if variant == "fr-ablate":
        layer = rank1_gate_layer(s, n_layers)
        return "fr-ablate", {"direction_key": f"layer{layer}_pos-1", "layer": layer,
                             "borderline": e.fr_ablate_borderline, "harmless_set": s.extract.harmless,
                             "data_root": s.eval.data_root, "seed": s.seed}
    if variant.startswith("rank1-gate"):
        layer = rank1_gate_layer(s, n_layers)
        return "rank1-gate", {"direction_key": f"layer{layer}_pos-1", "layer": layer, "lam": e.rank1_gate_lam,
                              "harmful_set": s.extract.harmful, "harmless_set": s.extract.harmless,
                              "data_root": s.eval.data_root, "seed": s.seed,
                              "borderline": e.rank1_gate_borderline if variant == "rank1-gate-borderline" else 0,
                              **({"extra_benign": e.rank1_gate_extra_benign}
                                 if variant == "rank1-gate-borderline" and e.rank1_gate_extra_benign else {}),
                              **({} if fit_seed is None else {"fit_seed": fit_seed,
                                                              "fit_fraction": e.rank1_gate_fit_fraction})}
    return variant, {}


def edit(ctx: Context, variant: str, *, name: str | None = None, rel: str | None = None, spec: str | None = None,
         key: str | None = None, directions: str = "probe", amplify: tuple[str, float] | None = None,
         fit_seed: int | None = None) -> StageResult:
    """Apply weight edit ``variant`` to ``spec`` (default: the study's model) with the directions of stage
    ``directions`` (a probe folder) and export the checkpoint; adds the variant to ``ctx.variants``.
    ``amplify``: (layers, beta) instead of the edit settings' (the mini-distill restoration); ``fit_seed``: a
    rank1-gate refit on a seeded subsample, the variant ``VARIANT@sK``."""
    from r1probe.steering.edits import run_edit

    spec = spec or ctx.settings.model.spec
    label = variant if fit_seed is None else f"{variant}@s{fit_seed}"
    name = name or f"edit-{label}"
    dirs, dkey = ctx.results[directions].path, ctx.results[directions].key
    ev, ex = ctx.settings.eval, ctx.settings.extract
    inputs = {"probe": dkey, "variant": variant, "model": key or ctx.base_key, **ctx.common(),
              "edit": ctx.settings.edit.model_dump(mode="json", exclude={"edits", "fit_seeds", "rank1_gate_fit_fraction"})
              if amplify is None
              else {"amplify": list(amplify)}, "fit": [ex.harmful, ex.harmless, ev.data_root]}
    if fit_seed is not None:
        inputs["fit_seed"] = [fit_seed, ctx.settings.edit.rank1_gate_fit_fraction]

    def fn(path: Path):
        from r1probe.steering.export import export_checkpoint

        lm = ctx.models.take(spec)  # the edit changes weights in place: the cache forgets this copy
        recs, parts = [], []
        for part in variant.split("+"):  # a composite variant applies its edits in order, then exports once
            edit_name, settings = edit_settings(ctx, part, lm.layout.n_layers, amplify=amplify, fit_seed=fit_seed)
            if edit_name == "rank1-gate":
                ctx.log(f"[{name}] fitting the read vector at layer {settings['layer']}")
            recs += run_edit(edit_name, lm, dirs, settings, log=lambda m: ctx.log(f"[{name}] {m}"))
            parts.append({"edit": edit_name, "settings": settings})
        last = parts[-1]["settings"]
        export_checkpoint(lm, path / "model", edits=recs, directions_file=str(dirs),
                          direction_key=last.get("direction_key", "chosen"))
        return {"export": str(path / "model"), "edit": "+".join(p["edit"] for p in parts), "settings": last,
                "parts": parts, "direction_key": last.get("direction_key"), "layer": last.get("layer"),
                "edits": [{k: v for k, v in r.items() if k not in ("layers", "tuning_reads")} for r in recs]}

    r = ctx.stage(name, rel or f"exports/{label}", inputs, fn)
    info = r.info
    parts = info.get("parts") or [{"edit": info.get("edit", variant), "settings": info.get("settings")}]
    cmds, src = [], spec
    for k, p in enumerate(parts):  # a composite: each edit exports, the next one loads that export
        sets = [x for key_, v in (p["settings"] or {}).items() if v is not None
                for x in ("--set", f"{key_}={','.join(map(str, v)) if isinstance(v, list) else v}")]
        dst = info["export"] if k == len(parts) - 1 else f"{info['export']}.step{k + 1}"
        cmds.append(command("r1probe", "edit", "--model", src, "--directions", dirs, "--op", p["edit"], *sets,
                            "--out", dst))
        src = dst
    ctx.commands[name] = " && ".join(cmds)
    ctx.variants[label if name == f"edit-{label}" else name] = Variant(info["export"], None, r.key)
    return r


def separability(ctx: Context, name: str = "separability", rel: str = "separability") -> StageResult:
    """Must-refuse vs borderline vs ordinary prompts (dev parts): cross-fitted probe AUROC per layer beside the
    refusal direction's (:func:`r1probe.analysis.separability.run_separability`)."""
    sp, spec = ctx.settings.separability, ctx.settings.model.spec
    inputs = {"model": ctx.base_key, **ctx.common(), "n": sp.n, "positions": sp.positions, "bootstrap": sp.bootstrap,
              "data_root": ctx.settings.eval.data_root}

    def fn(path: Path):
        from r1probe.analysis.separability import run_separability

        run_separability(ctx.models.get(spec), path, n=sp.n, positions=sp.positions, bootstrap=sp.bootstrap,
                         seed=ctx.settings.seed, data_root=ctx.settings.eval.data_root,
                         progress=lambda m: ctx.log(f"[{name}] {m}"))
        return {"result": str(path / "separability.json")}

    r = ctx.stage(name, rel, inputs, fn)
    ctx.commands[name] = command("r1probe", "probe", "separability", "--model", spec, "--n", sp.n, "--positions",
                                 ",".join(map(str, sp.positions)), "--bootstrap", sp.bootstrap, "--seed",
                                 ctx.settings.seed, *(("--data-root", ctx.settings.eval.data_root)
                                                      if ctx.settings.eval.data_root else ()), "--out", r.path)
    return r


# --- run-time plans --------------------------------------------------------------------------------------------

def gated_plan(d: torch.Tensor, layer: int, position, store, n_layers: int, quantile: float):
    """Add ``d`` (its own norm as strength) where a prompt's projection on ``d`` passes the ``quantile`` of the
    harmless prompts of ``store``; gate and addition read/write the output of block ``layer`` (the input of
    block ``layer + 1``; block ``layer``'s own input when it is the last block). Returns (plan, info)."""
    from r1probe.steering.plan import Condition, SteeringPlan

    u = d.double() / d.double().norm()
    harm = store.get(layer, position, "harmful").double() @ u
    safe = store.get(layer, position, "harmless").double() @ u
    thr = float(torch.quantile(safe, quantile))
    gate_layer = min(layer + 1, n_layers - 1)
    cond = Condition(layer=gate_layer, direction=d, threshold=thr, position=position if isinstance(position, int) else -1)
    plan = SteeringPlan.conditional_add(gate_layer, d, float(d.double().norm()), condition=cond)
    return plan, {"alpha": float(d.double().norm()), "threshold": thr, "gate_layer": gate_layer,
                  "train_gate_rate": {"harmful": float((harm > thr).double().mean()),
                                      "harmless": float((safe > thr).double().mean())}}


def n_layers_of(st) -> int:
    return int((st.manifest.get("model") or {}).get("n_layers") or max(st.layers) + 1)


def plan(ctx: Context, kind: str, *, name: str | None = None, rel: str | None = None, extract_name: str = "extract",
         directions: str = "probe", spec: str | None = None, key: str | None = None,
         fit_seed: int | None = None) -> StageResult:
    """A run-time plan with the chosen direction of stage ``directions`` at the chosen cell: ``add``
    (unconditional, at the read layer) or ``conditional`` (:func:`gated_plan` on the harmless prompts of
    ``extract_name``, the model being steered); ``alphasteer``: :func:`alphasteer_plan` (``fit_seed``: its refit
    on a seeded subsample, the variant ``plan-alphasteer@sK``). Adds the variant to ``ctx.variants``."""
    if kind == "alphasteer":
        return alphasteer_plan(ctx, name=name, rel=rel, spec=spec, key=key, fit_seed=fit_seed)
    if fit_seed is not None:
        raise R1ProbeError(f"plan {kind}: only alphasteer refits on a seeded subsample")
    L, P = ctx.values["chosen"]
    name = name or f"plan-{kind}"
    q = ctx.settings.plan.gate_quantile

    def fn(path: Path):
        from r1probe.steering.plan import SteeringPlan

        d = direction(ctx, directions)
        st = store(ctx, extract_name)
        if kind == "add":
            p, info = SteeringPlan.add_at(L, d, float(d.double().norm()), site="resid_post"), {"alpha": float(d.double().norm())}
        else:
            p, info = gated_plan(d, L, P, st, n_layers_of(st), q)
        p.save(path / "plan.json")
        return {"plan": str(path / "plan.json"), **info}

    inputs = {"direction": ctx.results[directions].key, "extract": ctx.results[extract_name].key,
              "kind": kind, "quantile": q}
    r = ctx.stage(name, rel or f"plans/{kind}", inputs, fn)
    ctx.variants[name] = Variant(spec or ctx.settings.model.spec, r.info["plan"], (key or ctx.base_key) + r.key)
    return r


def alphasteer_plan(ctx: Context, *, name: str | None = None, rel: str | None = None, spec: str | None = None,
                    key: str | None = None, fit_seed: int | None = None) -> StageResult:
    """AlphaSteer as published (:mod:`r1probe.steering.alphasteer`), fitted on ``spec``'s activations with the
    plan settings' ``alphasteer_*``; writes the plan, its fit record and the ids it read (``tuning_reads.json``).
    ``fit_seed``: refit on a seeded ``alphasteer_fit_fraction`` of each fit-data part (``plan-alphasteer@sK``)."""
    from r1probe.steering.alphasteer import AlphaSteerSettings

    p, s = ctx.settings.plan, ctx.settings
    spec = spec or s.model.spec
    label = "alphasteer" if fit_seed is None else f"alphasteer@s{fit_seed}"
    name = name or f"plan-{label}"
    seeded = {} if fit_seed is None else {"fit_seed": fit_seed, "fit_fraction": p.alphasteer_fit_fraction}
    settings = AlphaSteerSettings(layers=p.alphasteer_layers, strength=p.alphasteer_strength,
                                  null_ratio=p.alphasteer_null_ratio, ridge=p.alphasteer_ridge,
                                  borderline=p.alphasteer_borderline, extra_benign=p.alphasteer_extra_benign,
                                  harmful_set=s.extract.harmful,
                                  harmless_set=s.extract.harmless, data_root=s.eval.data_root, seed=s.seed, **seeded)

    def fn(path: Path):
        from r1probe.data.partitions import write_tuning_reads
        from r1probe.provenance import atomic_write_json
        from r1probe.steering.alphasteer import alphasteer_plan as fit_plan

        lm = ctx.models.get(spec)
        plan_, rec = fit_plan(lm, settings, log=lambda m: ctx.log(f"[{name}] {m}"))
        plan_.save(path / "plan.json")
        write_tuning_reads(path, rec.pop("tuning_reads"))
        atomic_write_json(path / "fit.json", rec)
        return {"plan": str(path / "plan.json"), "method": rec["method"], "settings": rec["settings"]}

    inputs = {"kind": "alphasteer", "model": key or ctx.base_key, "settings": settings.model_dump(mode="json")}
    r = ctx.stage(name, rel or f"plans/{label}", inputs, fn)
    ctx.variants[name] = Variant(spec, r.info["plan"], (key or ctx.base_key) + r.key)
    return r


# --- evaluate -------------------------------------------------------------------------------------------------

def uses_reasoning_budget(bench: str) -> bool:
    """Whether ``bench`` gets ``eval.reasoning_max_new_tokens`` (the eval registry decides)."""
    from r1probe.eval.benches import uses_reasoning_budget as urb

    return urb(bench)


def _kind(bench):
    from r1probe.eval.kinds import get_kind

    return get_kind(bench.kind)


def dev_prompt_groups(settings: StudySettings, n: int, skip: set[str] = frozenset()) -> dict[str, list]:
    """Up to ``n`` dev prompts per group, leaving out the ids in ``skip``: ``harmful`` (PolyRefuse-zh harmful val),
    ``harmless`` (zh-harmless val of the seed, hash order), ``gsm8k`` (GSM8K train, hash order); each a list of
    ``r1probe.data.borderline.Item``."""
    from r1probe.data import borderline as BL
    from r1probe.data.prompts import load_prompt_set

    root = settings.eval.data_root
    harmless = [BL.Item(id=f"zh-harmless/{p.id}", text=p.text, source="zh-harmless")
                for p in load_prompt_set("builtin:zh-harmless").split("val", seed=settings.seed).prompts]
    return {"harmful": [it for it in BL.harmful_splits(root)["val"] if it.id not in skip][:n],
            "harmless": [it for it in BL.hash_order(harmless) if it.id not in skip][:n],
            "gsm8k": [it for it in BL.gsm8k_splits(root)["search"] if it.id not in skip][:n]}


def budget(ctx: Context, spec: str, key: str, *, exclude: tuple[str, ...] = ()) -> StageResult | None:
    """The evaluation token budgets from the reasoning lengths of model ``spec`` on dev prompts (harmful:
    PolyRefuse-zh val; harmless: zh-harmless val; maths: GSM8K train), leaving out every item the stages in
    ``exclude`` recorded as read (e.g. the distillation's training traces). Each budget is raised to
    ``choose_budget`` of its group's closing positions (``r1probe.eval.budget``), never lowered, and kept for a
    model whose replies never open a reasoning block (its replies stop after a few tokens). Updates
    ``ctx.settings.eval`` (the budgets; ``judge_reasoning`` on when the model thinks); None when
    ``eval.auto_budget`` is off."""
    s, ev = ctx.settings, ctx.settings.eval
    if not ev.auto_budget:
        return None
    inputs = {"model": key, "n": ev.budget_prompts, "quantile": ev.budget_quantile,
              "answer_tokens": ev.budget_answer_tokens, "cap": ev.budget_cap, "seed": s.seed,
              "data_root": ev.data_root, "batch_size": ev.batch_size,
              "configured": [ev.max_new_tokens, ev.reasoning_max_new_tokens],
              "exclude": {n: ctx.results[n].key for n in exclude}}

    def fn(path: Path):
        import json

        from r1probe.data.benchmarks import MATH_SUFFIX_EN
        from r1probe.data.partitions import load_tuning_reads, reads_of, write_tuning_reads
        from r1probe.eval.budget import choose_budget, closing_positions
        from r1probe.provenance import atomic_write_text

        skip = {i for n in exclude for ids in load_tuning_reads(ctx.results[n].path).values() for i in ids}
        groups = dev_prompt_groups(s, ev.budget_prompts, skip)
        items = [(g, it) for g, its in groups.items() for it in its]
        prompts = [it.text + (MATH_SUFFIX_EN if g == "gsm8k" else "") for g, it in items]
        write_tuning_reads(path, reads_of(it.id for _, it in items))
        lm = ctx.models.get(spec)
        pos, replies = closing_positions(lm, prompts, cap=ev.budget_cap, batch_size=ev.batch_size,
                                         progress=lambda k, t: ctx.log(f"budget: {k}/{t} replies") if k % 16 == 0 else None)
        atomic_write_text(path / "replies.jsonl", "".join(
            json.dumps({"group": g, "id": it.id, "closing_position": p, "reply": r}, ensure_ascii=False) + "\n"
            for (g, it), p, r in zip(items, pos, replies)))
        by = {g: [p for (gg, _), p in zip(items, pos) if gg == g] for g in groups}

        def measured(ps):  # 0 (the configured budget stays) when no reply opened a reasoning block
            return choose_budget(ps, quantile=ev.budget_quantile, answer_tokens=ev.budget_answer_tokens,
                                 cap=ev.budget_cap) if any(p != 0 for p in ps) else 0

        refusal, maths = measured(by["harmful"] + by["harmless"]), measured(by["gsm8k"])
        opened = {g: sum(p != 0 for p in by[g]) / len(by[g]) for g in groups}  # 0 = no reasoning block
        closed = {g: sum(p is not None and p > 0 for p in by[g]) / len(by[g]) for g in groups}  # opened and closed
        return {"measured": {"refusal": refusal, "reasoning": maths}, "n": {g: len(v) for g, v in by.items()},
                "opens_think": opened, "closes_within_cap": closed, "positions": by,
                "prompt_opens_think": bool(lm.chat.thinks),
                "max_new_tokens": max(ev.max_new_tokens, refusal),
                "reasoning_max_new_tokens": max(ev.reasoning_max_new_tokens, maths)}

    r = ctx.stage("budget", "budget", inputs, fn)
    ctx.log(f"budget: refusal benches {r.info['max_new_tokens']} new tokens, maths {r.info['reasoning_max_new_tokens']} "
            f"(reasoning opened: {r.info['opens_think']}; closed within {ev.budget_cap}: {r.info['closes_within_cap']})")
    thinks = any(v > 0 for v in r.info["opens_think"].values())
    ctx.settings = s.model_copy(update={"eval": ev.model_copy(update={
        "max_new_tokens": r.info["max_new_tokens"], "reasoning_max_new_tokens": r.info["reasoning_max_new_tokens"],
        "judge_reasoning": ev.judge_reasoning or thinks})})
    return r


def eval_plan(settings: StudySettings, bench_name: str) -> dict:
    """Token budget, batch size, data root and reasoning judging of one bench under ``settings.eval``."""
    from r1probe.eval.benches import get_bench

    ev = settings.eval
    bench = get_bench(bench_name)
    kind = _kind(bench)
    return {"max_new_tokens": ev.reasoning_max_new_tokens if uses_reasoning_budget(bench_name) else ev.max_new_tokens,
            "batch_size": ev.batch_size if kind.generates or ev.nll_batch_size is None else ev.nll_batch_size,
            "data_root": (ev.chisafety_root or ev.data_root) if bench_name.startswith("chisafety") else ev.data_root,
            "judge_reasoning": bool(ev.judge_reasoning and kind.needs_judge)}


def reported_items(ctx: Context) -> dict[str, list[str]]:
    """``{bench: [item ids]}`` every variant is evaluated on: the *report* part of each bench
    (:mod:`r1probe.data.partitions`), then the bench's limit sample of the study's seed."""
    from r1probe.eval.benches import get_bench
    from r1probe.eval.runner import bench_items

    s = ctx.settings
    return {b: [it.id for it in bench_items(get_bench(b), limit=s.limit(b), seed=s.seed,
                                            data_root=eval_plan(s, b)["data_root"], split="report",
                                            split_seed=s.seed)] for b in s.eval.benches}


def tuning_overlap(ctx: Context) -> tuple[str, list[str]]:
    """Check the study's reported items against every tuning record of the run (the probe selection's
    ``tuning_reads.json``, each export's manifest): ``(tuning/report overlap: 0 items, record paths)``, or
    :class:`r1probe.data.partitions.TuningOverlapError` naming the overlapping items."""
    from r1probe.data.partitions import TUNING_READS, check_overlap, load_tuning_reads, merge_reads

    found, sources = [], []
    for name, r in ctx.results.items():
        paths = [r.path / TUNING_READS]
        if r.info and r.info.get("export"):
            paths.append(Path(r.info["export"]) / TUNING_READS)
        for p in paths:
            if p.exists():
                found.append(load_tuning_reads(p))
                sources.append(str(p))
    return check_overlap(merge_reads(*found), reported_items(ctx)), sources


def evaluate(ctx: Context, variant: str, *, rel: str | None = None) -> StageResult:
    """Every bench of ``eval.benches`` on ``ctx.variants[variant]`` with the same items, limits and seed: the
    report part of each bench (``split="report"``; the built-in sets' split of the study's seed)."""
    from r1probe.eval.judges.refusal import DEFAULT_JUDGE

    s, ev = ctx.settings, ctx.settings.eval
    v = ctx.variants[variant]
    inputs = {"judge": DEFAULT_JUDGE, "split": "report", "benches": ev.benches, "limits": {b: s.limit(b) for b in ev.benches}, "max_new_tokens": ev.max_new_tokens,
              "reasoning_max_new_tokens": ev.reasoning_max_new_tokens, "seed": s.seed, "data_root": ev.data_root,
              "chisafety_root": ev.chisafety_root, "judge_reasoning": ev.judge_reasoning,
              "batch_size": ev.batch_size, "nll_batch_size": ev.nll_batch_size, "variant": v.key}
    # a run-time plan: where its gates stay closed the records of the same model without a plan stand (the
    # runner checks that they were made with the same settings)
    base = next((ctx.results[f"eval-{n}"] for n, w in ctx.variants.items()
                 if w.plan is None and w.spec == v.spec and f"eval-{n}" in ctx.results), None) \
        if v.plan and ev.reuse_closed_gates else None
    if base is not None:
        inputs["unchanged_from"] = base.key

    def fn(path: Path):
        from r1probe.eval.benches import get_bench
        from r1probe.eval.engines import HFEngine
        from r1probe.eval.judges import make_judge
        from r1probe.eval.runner import evaluate_together

        lm = ctx.models.get(v.spec)
        jobs = []
        for b in ev.benches:  # one engine per bench (its token budget); their generations share engine calls
            e = eval_plan(s, b)
            eng = HFEngine(lm, max_new_tokens=e["max_new_tokens"], batch_size=e["batch_size"], plan=v.plan)
            jobs.append((get_bench(b), eng, dict(limit=s.limit(b), seed=s.seed, chunk_size=eng.chunk_size(),
                                                 data_root=e["data_root"], max_new_tokens=e["max_new_tokens"],
                                                 judge_reasoning=e["judge_reasoning"], split="report",
                                                 split_seed=s.seed, unchanged_from=base.path if base else None)))
        summary = evaluate_together(jobs, make_judge(DEFAULT_JUDGE), path,
                                    progress=lambda m: ctx.log(f"eval {variant} {m}"))
        return {"summary": str(path / "summary.json"),
                "metrics": {b: summary[b]["metrics"] for b in ev.benches if b in summary}}

    name = f"eval-{variant}"
    r = ctx.stage(name, rel or f"eval/{variant}", inputs, fn, keep_partial=True)
    for b in ev.benches:
        e = eval_plan(s, b)
        ctx.commands[f"{name}-{b}"] = command(
            "r1probe", "eval", "--model", v.spec, "--bench", b, *(("--plan", v.plan) if v.plan else ()),
            *(("--limit", s.limit(b)) if s.limit(b) else ()), "--seed", s.seed, "--split", "report",
            "--max-new-tokens", e["max_new_tokens"], *(("--batch-size", e["batch_size"]) if e["batch_size"] else ()),
            *(("--data-root", e["data_root"]) if e["data_root"] else ()),
            *(("--judge-reasoning",) if e["judge_reasoning"] else ()), "--judge", DEFAULT_JUDGE,
            *(("--unchanged-from", base.path) if base else ()), "--out", r.path)
    return r


# --- compare --------------------------------------------------------------------------------------------------

def compare(ctx: Context, a: str, b: str, *, names: tuple[str, str], probe_name: str = "probe",
            spec_b: str | None = None, seed: int | None = None) -> StageResult:
    """Compare the stores of extract stages ``a`` and ``b`` (probe curves, cosine, CKA, projection on the
    chosen direction of ``probe_name``)."""
    L, P = ctx.values["chosen"]

    def fn(path: Path):
        from r1probe.analysis.compare import compare_stores

        sa, sb = store(ctx, a), store(ctx, b)
        kw = {} if seed is None else {"seed": seed}
        res = compare_stores(sa, sb, names=names, position=P, direction_a=direction(ctx, probe_name),
                             direction_layer=L, out_dir=path, **kw,
                             sources=[sa.path / "manifest.json", sb.path / "manifest.json",
                                      ctx.results[probe_name].path / "probe.json"])
        return {"compare": str(path / "compare.json"), "chosen": res.get("chosen")}

    r = ctx.stage("compare", "compare", {"a": ctx.results[a].key, "b": ctx.results[b].key,
                                         "probe": ctx.results[probe_name].key}, fn)
    ex = ctx.settings.extract
    ctx.commands["compare"] = command("r1probe", "compare", "--base", ctx.settings.model.spec, "--distilled", spec_b,
                                      "--harmful", ex.harmful, "--harmless", ex.harmless, "--n", ex.n_train,
                                      "--position", P, "--directions", ctx.results[probe_name].path,
                                      "--seed", ctx.settings.seed, "--out", r.path)
    return r
