"""``r1probe run``: the whole study as cached stages.

extract -> probe and select -> edits (exported checkpoints) and run-time plans -> eval of every
variant (safety, over-refusal, reasoning) -> compare (base vs orthogonalised export) -> figures,
tables -> ``report.md``. Each stage is skipped when its inputs are unchanged (``stages.run_stage``),
so a rerun after a crash or a config change redoes only what changed.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Callable

from r1probe.analysis.config import StudyConfig
from r1probe.analysis.stages import StageResult, run_stage
from r1probe.errors import R1ProbeError

REFUSAL_BENCHES = ("chisafety-refusal", "chisafety-multiturn", "cvalues", "cvalues-report", "xstest-safe")


class _Models:
    """Loads each model variant at most once per process, and only when a stage needs it."""

    def __init__(self, cfg: StudyConfig):
        self.cfg, self._cache = cfg, {}

    def get(self, spec: str):
        if spec not in self._cache:
            from r1probe.models import load_model

            self._cache.clear()  # keep one model in memory at a time
            self._cache[spec] = load_model(spec, dtype=self.cfg.dtype, device=self.cfg.device,
                                           chat_template=self.cfg.chat_template)
        return self._cache[spec]


def _prompt_sets(cfg: StudyConfig):
    from r1probe.data.prompts import load_prompt_set

    def part(spec, label, split, n):
        ps = load_prompt_set(spec, label=label, split=split, seed=cfg.seed)
        if len(ps) < 2:
            raise R1ProbeError(f"{spec} ({split}) has {len(ps)} prompts; need at least 2")
        return ps.sample(min(n, len(ps)), seed=cfg.seed)

    return (part(cfg.harmful, "harmful", "train", cfg.n_train), part(cfg.harmless, "harmless", "train", cfg.n_train))


def _model_key(spec: str) -> str:
    from r1probe.models.spec import parse_spec
    from r1probe.provenance import sha256_file

    s = parse_spec(spec)
    if s.kind == "dir":
        files = sorted(Path(s.target).glob("*.safetensors")) + [Path(s.target) / "config.json"]
        return "dir:" + ",".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files if f.exists())
    if s.kind == "gguf":
        return "gguf:" + sha256_file(s.target)
    return f"{s.raw}@{s.revision or ''}"


def _cmd(*parts) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")


def _enhance_layer(cfg: StudyConfig, n_layers: int) -> int:
    """The enhance edit's layer: ``cfg.enhance_layer``, or the middle layer when it is -1."""
    if cfg.enhance_layer < 0:
        return n_layers // 2
    if cfg.enhance_layer >= n_layers:
        raise R1ProbeError(f"enhance_layer {cfg.enhance_layer}: the model has {n_layers} layers")
    return cfg.enhance_layer


def run_study(cfg: StudyConfig, *, force: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the study in ``cfg.out``; returns a dict of stage results and the report path."""
    import torch

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    models = _Models(cfg)
    t0 = time.time()
    results: dict[str, StageResult] = {}
    base_key = _model_key(cfg.model)
    common = {"model": base_key, "dtype": cfg.dtype, "chat_template": cfg.chat_template, "seed": cfg.seed}
    commands: dict[str, str] = {}

    # 1. extract -------------------------------------------------------------------------------
    ex_inputs = {**common, "harmful": cfg.harmful, "harmless": cfg.harmless, "n_train": cfg.n_train,
                 "layers": cfg.layers, "positions": cfg.positions}

    def extract_into(spec: str):
        def fn(path: Path):
            from r1probe.extract import extract_activations

            harm, harmless = _prompt_sets(cfg)
            store = extract_activations(models.get(spec), [harm, harmless], layers=cfg.layers,
                                        positions=cfg.positions, out_dir=path / "store", progress=True)
            return {"store": str(path / "store"), "label_counts": store.label_counts(), "layers": len(store.layers)}
        return fn

    results["extract"] = run_stage("extract", out / "extract", ex_inputs, extract_into(cfg.model), force=force, log=log)
    commands["extract"] = _cmd("r1probe", "extract", "--model", cfg.model, "--harmful", cfg.harmful, "--harmless",
                               cfg.harmless, "--positions", cfg.positions, "--out", out / "extract" / "store")

    # 2. probe and select ------------------------------------------------------------------------
    pr_inputs = {"extract": results["extract"].key, "n_val": cfg.n_val, "kl": cfg.kl_threshold,
                 "max_layer_frac": cfg.max_layer_frac, "score": cfg.score, "grid": "coarse-v2", "full": cfg.full,
                 "candidates": cfg.candidates, "ablation": cfg.ablation, "induce_score": cfg.induce_score,
                 "induce_min": cfg.induce_min, "induce_scale": cfg.induce_scale}

    def probe_fn(path: Path):
        from r1probe.probes.api import run_probe
        from r1probe.probes.select import SelectConfig

        sel = SelectConfig(max_layer_frac=cfg.max_layer_frac, kl_max=cfg.kl_threshold, n_val=cfg.n_val,
                           score=cfg.score, ablation=cfg.ablation, induce_score=cfg.induce_score,
                           induce_min=cfg.induce_min, induce_scale=cfg.induce_scale,
                           n_reference=max(cfg.n_val, 32))
        lm = models.get(cfg.model)
        n = lm.layout.n_layers
        # a coarse grid keeps the causal search to minutes on CPU (each candidate costs a few
        # batched passes): every second layer from n/4 below the max_layer_frac cut, two positions;
        # the enhance edit's layer is always probed (its difference-in-means direction is written)
        layers = None if cfg.full else sorted(set(range(n // 4, int(cfg.max_layer_frac * n), 2))
                                              | {_enhance_layer(cfg, n)})
        positions = None if cfg.full else [-1, -2]
        estimators = tuple(dict.fromkeys(("mean_diff", "logistic", cfg.candidates)))
        res = run_probe(results["extract"].path / "store", lm, path, layers=layers, positions=positions,
                        harmful_val=cfg.harmful, harmless_val=cfg.harmless, cfg=sel, seed=cfg.seed,
                        estimators=estimators, candidates=cfg.candidates, progress=log)
        if not res.get("chosen"):
            raise R1ProbeError("no candidate direction passed the selection filters; see probe.json")
        try:
            from r1probe.analysis.probe_report import draw_report

            draw_report(path, path / "figures")
        except Exception as e:  # noqa: BLE001 - figures are a bonus of this stage, the report stage retries
            log(f"[probe] figures skipped: {e}")
        return {"chosen": res["chosen"]}

    results["probe"] = run_stage("probe", out / "probe", pr_inputs, probe_fn, force=force, log=log)
    probe_dir = results["probe"].path
    commands["probe"] = _cmd("r1probe", "probe", "--store", out / "extract" / "store", "--model", cfg.model,
                             "--n-val", cfg.n_val, "--candidates", cfg.candidates, "--ablation", cfg.ablation,
                             "--induce-score", cfg.induce_score, "--induce-min", cfg.induce_min,
                             "--induce-scale", cfg.induce_scale, "--out", probe_dir)
    chosen = results["probe"].info["chosen"]
    L, P = int(chosen["layer"]), chosen["pos"]

    def direction():
        from r1probe.steering.directions import load_direction

        return load_direction(probe_dir, "chosen")

    # 3. edits (exported checkpoints) -------------------------------------------------------------
    exports: dict[str, str] = {}
    for op in cfg.edits:
        inputs = {"probe": results["probe"].key, "op": op, **common}
        if op == "amplify":
            inputs.update(layers=cfg.amplify_layers, beta=cfg.amplify_beta)
        elif op.startswith("enhance"):
            inputs.update(layer=cfg.enhance_layer, lam=cfg.enhance_lam, harmful=cfg.harmful, harmless=cfg.harmless,
                          data_root=cfg.data_root, fit="default-v1",
                          borderline=cfg.enhance_borderline if op == "enhance-borderline" else 0)

        def edit_fn(path: Path, op=op):
            from r1probe.steering import edit as E
            from r1probe.steering.commands import parse_layers
            from r1probe.steering.directions import load_directions
            from r1probe.steering.export import export_checkpoint
            from r1probe.steering.fit_data import default_fit_data

            lm = models.get(cfg.model)
            models._cache.clear()  # the edit changes weights in place: never reuse this copy
            key, layer = "chosen", None
            if op == "orthogonalize":
                recs = [E.orthogonalize(lm, direction())]
            elif op == "amplify":
                recs = [E.amplify(lm, direction(), parse_layers(cfg.amplify_layers, lm.layout.n_layers), cfg.amplify_beta)]
            else:
                layer = _enhance_layer(cfg, lm.layout.n_layers)
                key = f"layer{layer}_pos-1"
                dirs = load_directions(probe_dir)
                if key not in dirs:
                    raise R1ProbeError(f"enhance: the probe stage has no direction {key} (probed: "
                                       f"{', '.join(k for k in dirs if k.startswith('layer'))})")
                border = cfg.enhance_borderline if op == "enhance-borderline" else 0
                fit = default_fit_data(lm, harmful=cfg.harmful, harmless=cfg.harmless, data_root=cfg.data_root,
                                       seed=cfg.seed, borderline=border)
                log(f"[edit-{op}] fitting the read vector at layer {layer}: {fit.description}")
                rec = E.enhance(lm, dirs[key], fit.harmful, fit.benign, layer=layer, lam=cfg.enhance_lam)
                recs = [{**rec, "fit_data": fit.description}]
            export_checkpoint(lm, path / "model", edits=recs, directions_file=str(probe_dir), direction_key=key)
            return {"export": str(path / "model"), "direction_key": key, "layer": layer,
                    "edits": [{k: v for k, v in r.items() if k != "layers"} for r in recs]}

        r = run_stage(f"edit-{op}", out / "exports" / op, inputs, edit_fn, force=force, log=log)
        results[f"edit-{op}"] = r
        exports[op] = r.info["export"]
        if op.startswith("enhance"):
            extra = ("--direction-key", r.info.get("direction_key"), "--layer", r.info.get("layer"),
                     "--lam", cfg.enhance_lam, *(("--data-root", cfg.data_root) if cfg.data_root else ()),
                     *(("--borderline", cfg.enhance_borderline) if op == "enhance-borderline" else ()))
        else:
            extra = ("--layer", cfg.amplify_layers, "--beta", cfg.amplify_beta) if op == "amplify" else ()
        commands[f"edit-{op}"] = _cmd("r1probe", "edit", "--model", cfg.model, "--directions", probe_dir,
                                      "--op", "enhance" if op.startswith("enhance") else op, *extra, "--out", exports[op])

    # 4. run-time plans ----------------------------------------------------------------------------
    plans: dict[str, str] = {}
    for kind in cfg.plans:
        def plan_fn(path: Path, kind=kind):
            from r1probe.extract.store import ActivationStore
            from r1probe.steering.plan import Condition, SteeringPlan

            d = direction()
            store = ActivationStore(results["extract"].path / "store")
            u = d.double() / d.double().norm()
            # the direction lives in the output of block L = the input of block L+1
            harm = store.get(L, P, "harmful").double() @ u
            safe = store.get(L, P, "harmless").double() @ u
            alpha = float(d.double().norm())
            n = int((store.manifest.get("model") or {}).get("n_layers") or max(store.layers) + 1)
            # add where the direction was read (output of block L); the gate reads the input of
            # block L+1, the same residual state (block L's own input when L is the last block)
            gate_layer = min(L + 1, n - 1)
            if kind == "add":
                plan = SteeringPlan.add_at(L, d, alpha, site="resid_post")
                info = {"alpha": alpha}
            else:
                # gate: steer rows whose projection exceeds the 95th percentile of harmless train prompts
                thr = float(torch.quantile(safe, 0.95))
                cond = Condition(layer=gate_layer, direction=d, threshold=thr, position=P if isinstance(P, int) else -1)
                plan = SteeringPlan.conditional_add(gate_layer, d, alpha, condition=cond)
                info = {"alpha": alpha, "threshold": thr, "gate_layer": gate_layer, "train_gate_rate": {
                    "harmful": float((harm > thr).double().mean()), "harmless": float((safe > thr).double().mean())}}
            plan.save(path / "plan.json")
            return {"plan": str(path / "plan.json"), **info}

        r = run_stage(f"plan-{kind}", out / "plans" / kind, {"probe": results["probe"].key, "kind": kind}, plan_fn,
                      force=force, log=log)
        results[f"plan-{kind}"] = r
        plans[kind] = r.info["plan"]

    # 5. eval ---------------------------------------------------------------------------------------
    variants = {"base": (cfg.model, None, base_key)}
    for op, p in exports.items():
        variants[op] = (p, None, results[f"edit-{op}"].key)
    for kind, p in plans.items():
        variants[f"plan-{kind}"] = (cfg.model, p, base_key + results[f"plan-{kind}"].key)
    ev_common = {"benches": cfg.benches, "limits": {b: cfg.limits.get(b) for b in cfg.benches},
                 "max_new_tokens": cfg.max_new_tokens, "gsm8k_max_new_tokens": cfg.gsm8k_max_new_tokens,
                 "seed": cfg.seed, "data_root": cfg.data_root, "chisafety_root": cfg.chisafety_root}
    for name, (spec, plan, key) in variants.items():
        def eval_fn(path: Path, spec=spec, plan=plan):
            from r1probe.eval.benches import get_bench
            from r1probe.eval.engines import HFEngine
            from r1probe.eval.judges import make_judge
            from r1probe.eval.runner import evaluate

            lm = models.get(spec)
            judge = make_judge("keyword")
            summary = {}
            for b in cfg.benches:
                bench = get_bench(b)
                mnt = cfg.gsm8k_max_new_tokens if bench.name in ("gsm8k", "math500", "cmath") else cfg.max_new_tokens
                eng = HFEngine(lm, max_new_tokens=mnt, batch_size=cfg.batch_size, plan=plan)
                root = cfg.chisafety_root if b.startswith("chisafety") else cfg.data_root
                summary = evaluate([bench], eng, judge, path, limit=cfg.limits.get(b), seed=cfg.seed,
                                   data_root=root, max_new_tokens=mnt)
            return {"summary": str(path / "summary.json"),
                    "metrics": {b: summary[b]["metrics"] for b in cfg.benches if b in summary}}

        r = run_stage(f"eval-{name}", out / "eval" / name, {**ev_common, "variant": key}, eval_fn,
                      force=force, keep_partial=True, log=log)
        results[f"eval-{name}"] = r
        for b in cfg.benches:
            mnt = cfg.gsm8k_max_new_tokens if b in ("gsm8k", "math500", "cmath") else cfg.max_new_tokens
            root = cfg.chisafety_root if b.startswith("chisafety") else cfg.data_root
            commands[f"eval-{name}-{b}"] = _cmd(
                "r1probe", "eval", "--model", spec, "--bench", b, *(("--plan", plan) if plan else ()),
                *(("--limit", cfg.limits.get(b)) if cfg.limits.get(b) else ()), "--seed", cfg.seed,
                "--max-new-tokens", mnt, "--batch-size", cfg.batch_size, *(("--data-root", root) if root else ()),
                "--judge", "keyword", "--out", out / "eval" / name)

    # 6. compare base vs orthogonalised export -------------------------------------------------------
    if "orthogonalize" in exports:
        orth = exports["orthogonalize"]
        results["extract-orthogonalize"] = run_stage(
            "extract-orthogonalize", out / "extract-orthogonalize",
            {**ex_inputs, "model": results["edit-orthogonalize"].key}, extract_into(orth), force=force, log=log)

        def compare_fn(path: Path):
            from r1probe.analysis.compare import compare_stores
            from r1probe.extract.store import ActivationStore

            sa = ActivationStore(results["extract"].path / "store")
            sb = ActivationStore(results["extract-orthogonalize"].path / "store")
            res = compare_stores(sa, sb, names=("base", "orthogonalized"), position=P, direction_a=direction(),
                                 direction_layer=L, out_dir=path,
                                 sources=[sa.path / "manifest.json", sb.path / "manifest.json", probe_dir / "probe.json"])
            return {"compare": str(path / "compare.json"), "chosen": res.get("chosen")}

        results["compare"] = run_stage("compare", out / "compare",
                                       {"a": results["extract"].key, "b": results["extract-orthogonalize"].key,
                                        "probe": results["probe"].key}, compare_fn, force=force, log=log)
        commands["compare"] = _cmd("r1probe", "compare", "--base", cfg.model, "--distilled", orth,
                                   "--harmful", cfg.harmful, "--harmless", cfg.harmless, "--out", out / "compare")

    # 7. report --------------------------------------------------------------------------------------
    from r1probe.analysis.report import write_study_report

    report_inputs = {k: v.key for k, v in results.items()}
    results["report"] = run_stage("report", out / "report", report_inputs,
                                  lambda path: write_study_report(cfg, results, commands, variants, path, out),
                                  force=force, log=log)
    dt = time.time() - t0
    log(f"study finished in {dt:.1f}s; report: {out / 'report.md'}")
    return {"results": results, "report": str(out / "report.md"), "seconds": dt}
