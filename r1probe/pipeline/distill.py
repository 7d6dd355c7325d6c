"""``r1probe run --preset mini-distill``: distillation erodes safety, in miniature, then restore it.

base model -> refusal direction (extract + probe, as the study) -> distilled copy (SFT on GSM8K rewritten
into R1 format, no safety data) -> extract the distilled copy on the same prompts -> its own direction
(difference in means at the base's chosen layer/position) -> compare both (probe curves, per-layer
direction cosine, transfer AUROC) -> restore the distilled copy with the base direction and with its own
(a gated run-time plan; an exported amplification edit) -> eval every variant with the same items, limits
and seeds -> ``report.md``. Every step is a cached stage (``stages.run_stage``): a rerun skips what is done,
an interrupted distillation resumes from its last checkpoint, an interrupted eval from its JSONL.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from r1probe.analysis.distill_config import DistillStudyConfig
from r1probe.analysis.stages import StageResult, run_stage
from r1probe.analysis.study import _Models, _model_key, _prompt_sets
from r1probe.errors import R1ProbeError

MATH_BENCHES = ("gsm8k", "math500", "cmath")


def mean_diff(store, layer: int, position) -> torch.Tensor:
    """Difference in means ``mean(harmful) - mean(harmless)`` at one cell of an activation store (float32)."""
    return (store.get(layer, position, "harmful").double().mean(0)
            - store.get(layer, position, "harmless").double().mean(0)).float()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def gated_plan(d: torch.Tensor, layer: int, position, store, n_layers: int, quantile: float):
    """Add ``d`` (its own norm as strength) where a prompt's projection on ``d`` passes the ``quantile`` of the
    harmless prompts of ``store`` (the model being steered); gate and addition read/write the output of block
    ``layer`` (the input of block ``layer + 1``), as the study's conditional plan. Returns (plan, info)."""
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


def _set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def run_distill_study(cfg: DistillStudyConfig, *, force: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the mini-distill experiment in ``cfg.out``; returns stage results and the report path."""
    _set_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    models = _Models(cfg)
    t0 = time.time()
    R: dict[str, StageResult] = {}
    base_key = _model_key(cfg.model)
    common = {"dtype": cfg.dtype, "chat_template": cfg.chat_template, "seed": cfg.seed}
    ex_inputs = {**common, "harmful": cfg.harmful, "harmless": cfg.harmless, "n_train": cfg.n_train,
                 "layers": cfg.layers, "positions": cfg.positions}

    def stage(name, path, inputs, fn, **kw):
        R[name] = run_stage(name, out / path, inputs, fn, force=force, log=log, **kw)
        return R[name]

    def extract_into(spec: str):
        def fn(path: Path):
            from r1probe.extract import extract_activations

            harm, harmless = _prompt_sets(cfg)
            store = extract_activations(models.get(spec), [harm, harmless], layers=cfg.layers,
                                        positions=cfg.positions, out_dir=path / "store", progress=True)
            return {"store": str(path / "store"), "label_counts": store.label_counts()}
        return fn

    def store_of(name):
        from r1probe.extract.store import ActivationStore

        return ActivationStore(R[name].path / "store")

    # 1. the base model's refusal direction -----------------------------------------------------------
    stage("extract-base", "extract-base", {**ex_inputs, "model": base_key}, extract_into(cfg.model))

    def probe_fn(path: Path):
        from r1probe.probes.api import run_probe
        from r1probe.probes.select import SelectConfig

        lm = models.get(cfg.model)
        n = lm.layout.n_layers
        sel = SelectConfig(max_layer_frac=cfg.max_layer_frac, kl_max=cfg.kl_threshold, n_val=cfg.n_val, score=cfg.score)
        layers = None if cfg.full else list(range(n // 4, max(n // 4 + 1, int(cfg.max_layer_frac * n)), 2))
        res = run_probe(R["extract-base"].path / "store", lm, path, layers=layers,
                        positions=None if cfg.full else [-1, -2], harmful_val=cfg.harmful, harmless_val=cfg.harmless,
                        cfg=sel, seed=cfg.seed, estimators=("mean_diff", "logistic"), progress=log)
        if not res.get("chosen"):
            raise R1ProbeError("no candidate direction passed the selection filters; see probe.json")
        return {"chosen": res["chosen"]}

    stage("probe-base", "probe-base", {"extract": R["extract-base"].key, "n_val": cfg.n_val, "kl": cfg.kl_threshold,
                                        "max_layer_frac": cfg.max_layer_frac, "score": cfg.score, "full": cfg.full},
          probe_fn)
    chosen = R["probe-base"].info["chosen"]
    L, P = int(chosen["layer"]), chosen["pos"]
    base_dir_file = R["probe-base"].path / "directions.safetensors"

    def base_direction():
        from r1probe.steering.directions import load_direction

        return load_direction(R["probe-base"].path, "chosen")

    # 2. the distilled copy ------------------------------------------------------------------------------
    sft = cfg.sft_config()
    d_inputs = {"model": base_key, **common, "traces": cfg.traces, "n_traces": cfg.n_traces, "sft": sft.training_hash(),
                "data_root": cfg.data_root}
    if Path(cfg.traces).is_file():
        from r1probe.provenance import sha256_file

        d_inputs["traces_sha256"] = sha256_file(cfg.traces)

    def distill_fn(path: Path):
        from r1probe.distill.sft import train_full
        from r1probe.distill.traces import gsm8k_r1_traces, read_traces

        models._cache.clear()  # training loads (and changes) its own copy
        if cfg.traces == "gsm8k" or cfg.traces.startswith("gsm8k:"):
            src = cfg.traces.split(":", 1)[1] if ":" in cfg.traces else None
            if src is None and cfg.data_root:
                src = str(Path(cfg.data_root) / "gsm8k" / "train.jsonl")
            traces = gsm8k_r1_traces(src, limit=cfg.n_traces, seed=cfg.seed)
        else:
            traces = read_traces(cfg.traces, cfg.n_traces)
        res = train_full(cfg.model, traces, sft, path / "model", work_dir=path / "work", progress=True,
                         traces_source=f"{cfg.traces} n={cfg.n_traces} seed={cfg.seed}",
                         load_kw={"dtype": cfg.dtype, "device": cfg.device, "chat_template": cfg.chat_template})
        if not res.finished:
            raise R1ProbeError(f"distillation stopped at step {res.steps}/{res.total_steps}; rerun to resume")
        st = res.stats
        return {"export": str(path / "model"), "steps": res.steps, "loss": st.get("loss_summary"),
                "tokens_per_s": st.get("tokens_per_s_this_call"), "peak_rss_mb": st.get("peak_rss_mb"),
                "threads": st.get("threads"), "train_wall_s": st.get("train_wall_s_this_call"),
                "encode": st.get("encode"), "resumed_from_step": st.get("resumed_from_step")}

    stage("distill", "distill", d_inputs, distill_fn, keep_partial=True)  # keeps checkpoints to resume from
    distilled = R["distill"].info["export"]
    dkey = "distill:" + R["distill"].key

    # 3. the distilled copy's representation --------------------------------------------------------------
    stage("extract-distilled", "extract-distilled", {**ex_inputs, "model": dkey}, extract_into(distilled))

    def own_fn(path: Path):
        from r1probe.steering.directions import save_directions

        d = mean_diff(store_of("extract-distilled"), L, P)
        d_base_cell = mean_diff(store_of("extract-base"), L, P)
        save_directions(path / "directions.safetensors", {"chosen": d},
                        {"method": "mean_diff", "layer": L, "pos": P, "model": distilled})
        return {"layer": L, "pos": P, "norm": float(d.norm()), "cosine_to_base_direction": cosine(d, base_direction()),
                "cosine_to_base_mean_diff": cosine(d, d_base_cell), "base_mean_diff_norm": float(d_base_cell.norm())}

    stage("direction-distilled", "direction-distilled",
          {"extract": R["extract-distilled"].key, "base_extract": R["extract-base"].key, "probe": R["probe-base"].key},
          own_fn)
    own_dir_file = R["direction-distilled"].path / "directions.safetensors"

    def own_direction():
        from r1probe.steering.directions import load_direction

        return load_direction(own_dir_file, "chosen")

    def compare_fn(path: Path):
        from r1probe.analysis.compare import compare_stores

        sa, sb = store_of("extract-base"), store_of("extract-distilled")
        res = compare_stores(sa, sb, names=("base", "distilled"), position=P, direction_a=base_direction(),
                             direction_layer=L, out_dir=path, seed=cfg.seed,
                             sources=[sa.path / "manifest.json", sb.path / "manifest.json",
                                      R["probe-base"].path / "probe.json"])
        return {"compare": str(path / "compare.json"), "chosen": res.get("chosen")}

    stage("compare", "compare", {"a": R["extract-base"].key, "b": R["extract-distilled"].key,
                                 "probe": R["probe-base"].key}, compare_fn)

    # 4. restore the distilled copy ------------------------------------------------------------------------
    dirs = {"base": (base_direction, R["probe-base"].key, base_dir_file),
            "own": (own_direction, R["direction-distilled"].key, own_dir_file)}
    variants: dict[str, tuple[str, str | None, str]] = {"base": (cfg.model, None, base_key),
                                                        "distilled": (distilled, None, dkey)}
    for r in cfg.restores:
        how, whose = r.split("-")
        get_dir, dir_key, dir_file = dirs[whose]
        if how == "plan":
            def plan_fn(path: Path, get_dir=get_dir):
                store = store_of("extract-distilled")
                n = int((store.manifest.get("model") or {}).get("n_layers") or max(store.layers) + 1)
                plan, info = gated_plan(get_dir(), L, P, store, n, cfg.gate_quantile)
                plan.save(path / "plan.json")
                return {"plan": str(path / "plan.json"), **info}

            res = stage(f"restore-{r}", f"restore/{r}", {"direction": dir_key, "extract": R["extract-distilled"].key,
                                                        "quantile": cfg.gate_quantile}, plan_fn)
            variants[f"restore-{r}"] = (distilled, res.info["plan"], dkey + res.key)
        else:
            def edit_fn(path: Path, get_dir=get_dir, dir_file=dir_file):
                from r1probe.steering import edit as E
                from r1probe.steering.commands import parse_layers
                from r1probe.steering.export import export_checkpoint

                lm = models.get(distilled)
                models._cache.clear()  # edited in place: never reuse this copy
                rec = E.amplify(lm, get_dir(), parse_layers(cfg.enhance_layers, lm.layout.n_layers), cfg.enhance_beta)
                export_checkpoint(lm, path / "model", edits=[rec], directions_file=str(dir_file), direction_key="chosen")
                return {"export": str(path / "model"), "edit": {k: v for k, v in rec.items() if k != "layers"}}

            res = stage(f"restore-{r}", f"restore/{r}", {"direction": dir_key, "model": dkey,
                                                        "layers": cfg.enhance_layers, "beta": cfg.enhance_beta}, edit_fn)
            variants[f"restore-{r}"] = (res.info["export"], None, res.key)

    # 5. eval every variant on the same items ------------------------------------------------------------
    ev_common = {"benches": cfg.benches, "limits": {b: cfg.limits.get(b) for b in cfg.benches},
                 "max_new_tokens": cfg.max_new_tokens, "gsm8k_max_new_tokens": cfg.gsm8k_max_new_tokens,
                 "seed": cfg.seed, "data_root": cfg.data_root, "chisafety_root": cfg.chisafety_root,
                 "judge_reasoning": True}
    for name, (spec, plan, key) in variants.items():
        def eval_fn(path: Path, spec=spec, plan=plan):
            from r1probe.eval.benches import get_bench
            from r1probe.eval.engines import HFEngine
            from r1probe.eval.judges import make_judge
            from r1probe.eval.runner import evaluate

            lm = models.get(spec)
            summary = {}
            for b in cfg.benches:
                bench = get_bench(b)
                mnt = cfg.gsm8k_max_new_tokens if bench.name in MATH_BENCHES else cfg.max_new_tokens
                bs = cfg.nll_batch_size if bench.kind == "nll" else cfg.batch_size
                eng = HFEngine(lm, max_new_tokens=mnt, batch_size=bs, plan=plan)
                root = cfg.chisafety_root if b.startswith("chisafety") else cfg.data_root
                t = time.time()
                summary = evaluate([bench], eng, make_judge("keyword"), path, limit=cfg.limits.get(b), seed=cfg.seed,
                                   data_root=root, max_new_tokens=mnt,
                                   judge_reasoning=bench.kind in ("refusal", "overrefusal"))
                log(f"[eval-{name}] {b}: {time.time() - t:.0f}s")
            return {"summary": str(path / "summary.json"),
                    "metrics": {b: summary[b]["metrics"] for b in cfg.benches if b in summary}}

        stage(f"eval-{name}", f"eval/{name}", {**ev_common, "variant": key}, eval_fn, keep_partial=True)

    # 6. report ------------------------------------------------------------------------------------------
    from r1probe.analysis.distill_report import write_distill_report

    stage("report", "report", {k: v.key for k, v in R.items()},
          lambda path: write_distill_report(cfg, R, variants, path, out))
    dt = time.time() - t0
    log(f"mini-distill finished in {dt:.1f}s; report: {out / 'report.md'}")
    return {"results": R, "report": str(out / "report.md"), "seconds": dt, "variants": variants}
