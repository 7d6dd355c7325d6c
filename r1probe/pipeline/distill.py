"""The mini-distill preset of ``r1probe run``: distillation erodes safety, in miniature, then restore it.

base model -> refusal direction (extract + probe, as the study) -> distilled copy (SFT on GSM8K rewritten
into R1 format, no safety data) -> extract the distilled copy on the same prompts -> its own direction
(difference in means at the base's chosen layer/position) -> compare both (probe curves, per-layer
direction cosine, transfer AUROC) -> restore the distilled copy with the base direction and with its own
(a gated run-time plan; an exported amplify edit) -> evaluate every variant with the same items, limits
and seeds -> ``report.md``. The shared steps are the stage functions of :mod:`r1probe.pipeline.stages`;
this module adds the distillation and the distilled model's own direction.
"""

from __future__ import annotations

from pathlib import Path

import torch

from r1probe.errors import R1ProbeError
from r1probe.pipeline import stages as S
from r1probe.pipeline.stages import Context


def mean_diff(store, layer: int, position) -> torch.Tensor:
    """Difference in means ``mean(harmful) - mean(harmless)`` at one cell of an activation store (float32)."""
    return (store.get(layer, position, "harmful").double().mean(0)
            - store.get(layer, position, "harmless").double().mean(0)).float()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """``a·b / (‖a‖ ‖b‖)`` in float64."""
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


gated_plan = S.gated_plan


def base_direction(ctx: Context) -> None:
    ctx.variants["base"] = S.Variant(ctx.settings.model.spec, None, ctx.base_key)
    S.extract(ctx, "extract-base")
    S.probe(ctx, "probe-base", "extract-base")


def distill(ctx: Context) -> None:
    """SFT of the base model on R1-format traces (resumes from its last checkpoint)."""
    s, d = ctx.settings, ctx.settings.distill
    sft = d.sft_config(s.seed)
    inputs = {"model": ctx.base_key, **ctx.common(), "traces": d.traces, "n_traces": d.n_traces,
              "sft": sft.training_hash(), "data_root": s.eval.data_root}
    if Path(d.traces).is_file():
        from r1probe.provenance import sha256_file

        inputs["traces_sha256"] = sha256_file(d.traces)

    def fn(path: Path):
        from r1probe.distill.sft import train_full
        from r1probe.distill.traces import gsm8k_r1_traces, read_traces

        ctx.models.release()  # training loads (and changes) its own copy
        if d.traces == "gsm8k" or d.traces.startswith("gsm8k:"):
            src = d.traces.split(":", 1)[1] if ":" in d.traces else None
            if src is None and s.eval.data_root:
                src = str(Path(s.eval.data_root) / "gsm8k" / "train.jsonl")
            traces = gsm8k_r1_traces(src, limit=d.n_traces, seed=s.seed)
        else:
            traces = read_traces(d.traces, d.n_traces)
        from r1probe.data.partitions import reads_of, write_tuning_reads

        # the traces are training data: the report checks its items against them like any tuning read
        write_tuning_reads(path, reads_of(t.id for t in traces if getattr(t, "id", None)))
        m = s.model
        res = train_full(m.spec, traces, sft, path / "model", work_dir=path / "work", progress=True,
                         traces_source=f"{d.traces} n={d.n_traces} seed={s.seed}",
                         load_kw={"dtype": m.dtype, "device": m.device, "chat_template": m.chat_template})
        if not res.finished:
            raise R1ProbeError(f"distillation stopped at step {res.steps}/{res.total_steps}; rerun to resume")
        st = res.stats
        return {"export": str(path / "model"), "steps": res.steps, "loss": st.get("loss_summary"),
                "tokens_per_s": st.get("tokens_per_s_this_call"), "peak_rss_mb": st.get("peak_rss_mb"),
                "threads": st.get("threads"), "train_wall_s": st.get("train_wall_s_this_call"),
                "encode": st.get("encode"), "resumed_from_step": st.get("resumed_from_step")}

    r = ctx.stage("distill", "distill", inputs, fn, keep_partial=True)  # keeps checkpoints to resume from
    ctx.values["distilled"] = (r.info["export"], "distill:" + r.key)
    ctx.variants["distilled"] = S.Variant(r.info["export"], None, "distill:" + r.key)


def own_direction(ctx: Context) -> None:
    """The distilled copy's activations and its difference in means at the base's chosen cell."""
    spec, dkey = ctx.values["distilled"]
    S.extract(ctx, "extract-distilled", spec=spec, key=dkey)
    L, P = ctx.values["chosen"]

    def fn(path: Path):
        from r1probe.steering.directions import save_directions

        d = mean_diff(S.store(ctx, "extract-distilled"), L, P)
        d_base_cell = mean_diff(S.store(ctx, "extract-base"), L, P)
        save_directions(path / "directions.safetensors", {"chosen": d},
                        {"method": "mean_diff", "layer": L, "pos": P, "model": spec})
        return {"layer": L, "pos": P, "norm": float(d.norm()),
                "cosine_to_base_direction": cosine(d, S.direction(ctx, "probe-base")),
                "cosine_to_base_mean_diff": cosine(d, d_base_cell), "base_mean_diff_norm": float(d_base_cell.norm())}

    ctx.stage("direction-distilled", "direction-distilled",
              {"extract": ctx.results["extract-distilled"].key, "base_extract": ctx.results["extract-base"].key,
               "probe": ctx.results["probe-base"].key}, fn)


def compare(ctx: Context) -> None:
    S.compare(ctx, "extract-base", "extract-distilled", names=("base", "distilled"), probe_name="probe-base",
              spec_b=ctx.values["distilled"][0], seed=ctx.settings.seed)


def restore(ctx: Context) -> None:
    """The distilled copy restored with the base direction and with its own: a gated plan or an amplify edit."""
    spec, dkey = ctx.values["distilled"]
    d = ctx.settings.distill
    whose_stage = {"base": "probe-base", "own": "direction-distilled"}
    for r in d.restores:
        how, whose = r.split("-")
        if how == "plan":
            S.plan(ctx, "conditional", name=f"restore-{r}", rel=f"restore/{r}", extract_name="extract-distilled",
                   directions=whose_stage[whose], spec=spec, key=dkey)
        else:
            S.edit(ctx, "amplify", name=f"restore-{r}", rel=f"restore/{r}", spec=spec, key=dkey,
                   directions=whose_stage[whose], amplify=(d.amplify_layers, d.amplify_beta))


def evaluate(ctx: Context) -> None:
    # refuses (naming the items) before any generation when training or a tuning step read a reported item
    ctx.values["tuning_overlap"] = S.tuning_overlap(ctx)
    ctx.log(ctx.values["tuning_overlap"][0])
    for variant in list(ctx.variants):
        S.evaluate(ctx, variant)


def report(ctx: Context) -> None:
    from r1probe.pipeline.distill_report import write_distill_report

    ctx.stage("report", "report", {k: v.key for k, v in ctx.results.items()},
              lambda path: write_distill_report(ctx, path))


STAGES = (base_direction, distill, own_direction, compare, restore, evaluate, report)
