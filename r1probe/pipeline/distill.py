"""The mini-distill preset of ``r1probe run``: distillation erodes safety, in miniature, then restore it.

base model -> refusal direction (extract + probe, as the study) -> distilled copy (the R1-style student: SFT on
R1-format traces, no safety data) -> token budgets from its reasoning lengths on dev prompts -> extract the
distilled copy on the same prompts -> its own direction (difference in means at the base's chosen
layer/position) -> compare both (probe curves, per-layer direction cosine, transfer AUROC both ways) -> the
distilled model's representation inside and after its think prefix -> cross-model transfer of the directions
(ablated and added, both ways) -> restore the distilled copy with the base
direction and with its own (a gated run-time plan; an exported amplify edit) -> evaluate every variant with the
same items, limits and seeds -> ``report.md``. The shared steps are the stage functions of
:mod:`r1probe.pipeline.stages`; this module adds the distillation and the distilled model's own direction.
"""

from __future__ import annotations

import json
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
    """SFT of the base model on R1-format traces (resumes from its last checkpoint). With ``traces='r1-student'``
    the student recipe (``r1probe.distill.student``) for this model and seed; when that student is already
    built in the cache (``builtin:r1-student`` is the default model's), it is used as it is."""
    s, d = ctx.settings, ctx.settings.distill
    student = d.traces == "r1-student"
    recipe = d.recipe(s.model.spec, s.seed) if student else None
    sft = recipe.sft_config() if student else d.sft_config(s.seed)
    inputs = {"model": ctx.base_key, **ctx.common(), "traces": d.traces, "sft": sft.training_hash(),
              "data_root": s.eval.data_root,
              **({"recipe": recipe.key()} if student else {"n_traces": d.n_traces})}
    if Path(d.traces).is_file():
        from r1probe.provenance import sha256_file

        inputs["traces_sha256"] = sha256_file(d.traces)

    def fn(path: Path):
        from r1probe.data.partitions import reads_of, write_tuning_reads
        from r1probe.distill.sft import train_full
        from r1probe.distill.student import build_student, student_dir
        from r1probe.distill.traces import gsm8k_r1_traces, read_traces

        ctx.models.release()  # training loads (and changes) its own copy
        if student:
            traces = recipe.traces(s.eval.data_root)
        elif d.traces == "gsm8k" or d.traces.startswith("gsm8k:"):
            src = d.traces.split(":", 1)[1] if ":" in d.traces else None
            if src is None and s.eval.data_root:
                src = str(Path(s.eval.data_root) / "gsm8k" / "train.jsonl")
            traces = gsm8k_r1_traces(src, limit=d.n_traces, seed=s.seed)
        else:
            traces = read_traces(d.traces, d.n_traces)
        # the traces are training data: the report checks its items against them like any tuning read
        write_tuning_reads(path, reads_of(t.id for t in traces if getattr(t, "id", None)))
        m = s.model
        if student:
            cached = student_dir(recipe)
            if (cached / "student.json").exists() and m.dtype in (None, "auto") and not m.chat_template:
                ctx.log(f"distill: the student of this recipe is built already: {cached}")
                export = cached
            else:
                export = build_student(recipe, root=s.eval.data_root, dest=path / "model",
                                       load_kw={"dtype": m.dtype, "device": m.device, "chat_template": m.chat_template})
            meta = json.loads((export / "student.json").read_text("utf-8"))
            st, steps = meta.get("train_stats", {}), meta.get("steps")
            done = {"recipe": meta.get("recipe"), "recipe_sha256": meta.get("recipe_sha256"),
                    "weights_sha256": meta.get("weights_sha256"), "traces_sha256": meta.get("traces_sha256")}
        else:
            res = train_full(m.spec, traces, sft, path / "model", work_dir=path / "work", progress=True,
                             traces_source=f"{d.traces} n={d.n_traces} seed={s.seed}",
                             load_kw={"dtype": m.dtype, "device": m.device, "chat_template": m.chat_template})
            if not res.finished:
                raise R1ProbeError(f"distillation stopped at step {res.steps}/{res.total_steps}; rerun to resume")
            export, st, steps, done = path / "model", res.stats, res.steps, {}
        return {"export": str(export), "steps": steps, "loss": st.get("loss_summary"),
                "tokens_per_s": st.get("tokens_per_s_this_call"), "peak_rss_mb": st.get("peak_rss_mb"),
                "threads": st.get("threads"), "train_wall_s": st.get("train_wall_s_this_call"),
                "encode": st.get("encode"), "resumed_from_step": st.get("resumed_from_step"),
                "n_traces": len(traces), "sources": sorted({t.source for t in traces}), **done}

    r = ctx.stage("distill", "distill", inputs, fn, keep_partial=True)  # keeps checkpoints to resume from
    ctx.values["distilled"] = (r.info["export"], "distill:" + r.key)
    ctx.variants["distilled"] = S.Variant(r.info["export"], None, "distill:" + r.key)


def budget(ctx: Context) -> None:
    """The evaluation token budgets from the distilled model's reasoning on dev prompts it was not trained on."""
    spec, dkey = ctx.values["distilled"]
    S.budget(ctx, spec, dkey, exclude=("distill",))


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


#: (label, extract stage, prompt ending) of the distilled model's stores compared by ``think_positions``
THINK_STORES = (("reply start", "extract-distilled", None), ("inside <think>", "extract-distilled-think-open", "open"),
                ("after </think>", "extract-distilled-think-closed", "closed"))


def think_positions(ctx: Context) -> None:
    """The distilled model's refusal representation at three prompt endings: the reply's start (the study's
    positions), inside an opened reasoning block (``<think>\\n``) and after an empty closed one: per-layer probes,
    the cosine of each ending's direction to the reply start's, the base direction read out of each."""
    if not ctx.settings.distill.think_positions:
        return
    spec, dkey = ctx.values["distilled"]
    for _, name, think in THINK_STORES[1:]:
        S.extract(ctx, name, spec=spec, key=dkey, think=think)
    L, P = ctx.values["chosen"]

    def fn(path: Path):
        from r1probe.analysis.positions import compare_positions

        stores = {label: S.store(ctx, name) for label, name, _ in THINK_STORES}
        compare_positions(stores, reference="reply start", reference_position=P, position=-1,
                          direction=S.direction(ctx, "probe-base"), direction_layer=L, out_dir=path,
                          seed=ctx.settings.seed, sources=[st.path / "manifest.json" for st in stores.values()])
        return {"positions": str(path / "positions.json"), "layer": L, "reference_position": P}

    ctx.stage("think-positions", "think-positions",
              {**{name: ctx.results[name].key for _, name, _ in THINK_STORES}, "probe": ctx.results["probe-base"].key},
              fn)


def transfer(ctx: Context) -> None:
    """Cross-model transfer, causally, on dev prompts (PolyRefuse-zh harmful val, zh-harmless val; neither the
    training nor a report part): the base direction ablated in the distilled model (every write to the residual
    stream; harmful prompts) and added at the output of the chosen layer (strength ``‖d‖``; harmless prompts), and
    the reverse, the distilled model's own direction in the base model; each paired with the same model
    unsteered on the same prompts (McNemar, Newcombe's interval)."""
    s, d = ctx.settings, ctx.settings.distill
    if not d.transfer_prompts:
        return
    from r1probe.eval.judges.refusal import DEFAULT_JUDGE

    spec, dkey = ctx.values["distilled"]
    L, _ = ctx.values["chosen"]
    inputs = {"base": ctx.base_key, "distilled": dkey, "probe": ctx.results["probe-base"].key,
              "own": ctx.results["direction-distilled"].key, "n": d.transfer_prompts, "judge": DEFAULT_JUDGE,
              "max_new_tokens": s.eval.max_new_tokens, "seed": s.seed, "data_root": s.eval.data_root,
              "batch_size": s.eval.batch_size}

    def fn(path: Path):
        from r1probe.data.partitions import load_tuning_reads, reads_of, write_tuning_reads
        from r1probe.eval.api import refusal_rate
        from r1probe.eval.judges import make_judge
        from r1probe.eval.metrics import paired_rate_difference
        from r1probe.provenance import atomic_write_text
        from r1probe.steering.directions import load_direction
        from r1probe.steering.plan import SteeringPlan

        trained = {i for ids in load_tuning_reads(ctx.results["distill"].path).values() for i in ids}
        groups = S.dev_prompt_groups(s, d.transfer_prompts, trained)
        del groups["gsm8k"]
        write_tuning_reads(path, reads_of(it.id for its in groups.values() for it in its))
        dirs = {"base": S.direction(ctx, "probe-base"), "distilled": load_direction(ctx.results["direction-distilled"].path)}
        judge = make_judge(DEFAULT_JUDGE)
        out, rows = {}, []
        for model, other, mspec in (("distilled", "base", spec), ("base", "distilled", s.model.spec)):
            lm, dv = ctx.models.get(mspec), dirs[other]
            plans = {"ablated": SteeringPlan.ablate_everywhere(dv, lm.layout.n_layers),
                     "added": SteeringPlan.add_at(L, dv, float(dv.double().norm()), site="resid_post")}
            res = {}
            for g, how in (("harmful", "ablated"), ("harmless", "added")):
                texts = [it.text for it in groups[g]]
                for cond, plan in (("none", None), (how, plans[how])):
                    ctx.log(f"transfer: {model} model, {other} direction, {g} prompts, {cond}")
                    r = refusal_rate(lm, texts, plan=plan, judge=judge, max_new_tokens=s.eval.max_new_tokens,
                                     batch_size=s.eval.batch_size)
                    res[(g, cond)] = r
                    rows += [{"model": model, "direction": other, "group": g, "condition": cond, "id": it.id,
                              "refusal": None if rec["label"] is None else bool(rec["refusal"]),
                              "outcome": rec["outcome"], "reply": rec["reply"]}
                             for it, rec in zip(groups[g], r["records"])]
                # refusal 0/1 where the judge gave a verdict (an unterminated reasoning has none)
                a, b = ([None if rec["label"] is None else bool(rec["refusal"]) for rec in res[(g, c)]["records"]]
                        for c in ("none", how))
                both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
                out.setdefault(model, {})[g] = {
                    "direction": other, "intervention": how, "n": len(texts),
                    "unterminated": {c: res[(g, c)]["unterminated_rate"] for c in ("none", how)},
                    **paired_rate_difference([int(x) for x, _ in both], [int(y) for _, y in both])}
            ctx.models.release()
        atomic_write_text(path / "replies.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return {"layer": L, "judge": DEFAULT_JUDGE, "max_new_tokens": s.eval.max_new_tokens, "results": out}

    ctx.stage("transfer", "transfer", inputs, fn)


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


STAGES = (base_direction, distill, budget, own_direction, compare, think_positions, transfer, restore, evaluate,
          report)
