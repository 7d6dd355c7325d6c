"""``r1probe steer`` (run-time steering) and ``r1probe edit`` (weight edits exported as checkpoints)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import click

from r1probe.cli_options import load_from_options, model_options, stderr_progress
from r1probe.errors import DataError, R1ProbeError

PROMPT_FIELDS = ("prompt", "instruction", "question", "text", "goal", "input")
ANSWER_FIELDS = ("answer", "std_answer", "response", "output", "completion", "target")


def read_prompts(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """Prompts from a JSON list, JSONL or CSV file: rows ``{"id", "prompt"}`` (first of prompt/instruction/question/text)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"prompt file not found: {p}")
    text = p.read_text("utf-8")
    rows: list
    if p.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        try:
            obj = json.loads(text)
            rows = obj if isinstance(obj, list) else obj.get("data") or obj.get("prompts") or []
        except json.JSONDecodeError:
            try:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as e:
                raise DataError(f"{p}: neither JSON nor JSONL ({e})") from e
    out = []
    for i, r in enumerate(rows):
        if isinstance(r, str):
            out.append({"id": str(i), "prompt": r})
            continue
        key = next((k for k in PROMPT_FIELDS if isinstance(r.get(k), str) and r[k].strip()), None)
        if key is None:
            raise DataError(f"{p}: row {i} has none of the fields {', '.join(PROMPT_FIELDS)}")
        row = {"id": str(r.get("id", i)), "prompt": r[key].strip()}
        ans = next((r[k] for k in ANSWER_FIELDS if isinstance(r.get(k), str) and r[k].strip()), None)
        if ans is not None:
            row["answer"] = ans
        out.append(row)
    if not out:
        raise DataError(f"{p}: no prompts")
    return out[:limit] if limit else out


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """``"12"``, ``"8,10,12"``, ``"8-15"``, ``"all"`` or negative offsets -> layer indices."""
    if spec.strip() == "all":
        return list(range(n_layers))
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError as e:
            raise R1ProbeError(f"--layer {spec!r}: use e.g. 12, 8,10,12, 8-15 or all") from e
    if not out:
        raise R1ProbeError(f"--layer {spec!r}: no layers")
    return out


def judge_completion(text: str, thinks: bool) -> dict:
    """Keyword refusal on the answer (after ``</think>``) when the model thinks, else on the whole text."""
    from r1probe.eval.judges.keyword import is_refusal
    from r1probe.models.chat import split_reasoning

    sp = split_reasoning(text, prompt_opened_think=thinks)
    scored = sp.answer if (sp.thought and sp.terminated) else (text if not sp.thought else sp.reasoning)
    return {"reasoning": sp.reasoning if sp.thought else None, "answer": sp.answer,
            "terminated": sp.terminated, "refused": bool(is_refusal(scored))}


def build_plan(lm, *, plan_path, op, layer, alpha, value, tokens, site, directions, direction_key,
               condition_layer, threshold, condition_position):
    from r1probe.steering.plan import Condition, SteeringPlan, SteeringStep

    if plan_path:
        plan = SteeringPlan.load(plan_path)
        return plan if directions is None else plan.with_directions(directions)
    if op is None:
        raise R1ProbeError("give --plan PLAN.json or --op add|ablate|clamp|amplify (with --layer)")
    name = direction_key or "chosen"
    n = lm.layout.n_layers
    if op == "ablate" and layer in (None, "all"):
        return SteeringPlan.ablate_everywhere(name, n, tokens=tokens, directions=directions)
    if layer is None:
        raise R1ProbeError(f"--op {op} needs --layer")
    cond = None
    if condition_layer is not None:
        if threshold is None:
            raise R1ProbeError("--condition-layer needs --threshold")
        pos = condition_position if condition_position == "mean" else int(condition_position)
        cond = Condition(layer=condition_layer, direction=name, threshold=threshold, position=pos)
    if op in ("add", "amplify") and alpha is None:
        raise R1ProbeError(f"--op {op} needs --alpha")
    if op == "clamp" and value is None:
        raise R1ProbeError("--op clamp needs --value")
    step = SteeringStep(op, parse_layers(layer, n), name, alpha=alpha if op in ("add", "amplify") else None,
                        value=value if op == "clamp" else None, tokens=tokens, site=site, condition=cond)
    return SteeringPlan([step], directions=directions)


def with_strength(plan, alpha: float):
    """A copy of ``plan`` whose add/amplify steps use strength ``alpha``."""
    from dataclasses import replace

    steps = [replace(s, alpha=alpha) if s.op in ("add", "amplify") else s for s in plan.steps]
    if not any(s.op in ("add", "amplify") for s in plan.steps):
        raise R1ProbeError("--sweep-alpha needs a plan with an add or amplify step")
    return replace(plan, steps=steps)


def run_prompts(lm, plan, prompts: list[str], *, max_new_tokens: int, batch_size: int, system=None) -> list[dict]:
    from r1probe.models.generate import generate_texts
    from r1probe.steering.runtime import steering

    texts = [lm.chat.format(p, system=system) for p in prompts]
    if plan is None:
        outs = generate_texts(lm, texts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    else:
        with steering(lm, plan):
            outs = generate_texts(lm, texts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [{"prompt": p, "completion": o, **judge_completion(o, lm.chat.thinks)} for p, o in zip(prompts, outs)]


@click.command()
@model_options()
@click.option("--directions", type=click.Path(exists=True), default=None,
              help="Directions file or folder (directions.safetensors [+ probe.json]).")
@click.option("--direction-key", default=None, help="Direction to use (default: chosen; e.g. layer12_pos-1).")
@click.option("--plan", "plan_path", type=click.Path(exists=True, dir_okay=False), default=None, help="A steering plan JSON.")
@click.option("--op", type=click.Choice(["add", "ablate", "clamp", "amplify"]), default=None)
@click.option("--layer", default=None, help="Layer(s): 12, 8,10,12, 8-15 or all (ablate defaults to everywhere).")
@click.option("--alpha", type=float, default=None, help="Strength of add / amplify.")
@click.option("--value", type=float, default=None, help="Target projection of clamp.")
@click.option("--tokens", type=click.Choice(["prompt", "generated", "both"]), default="both", show_default=True)
@click.option("--site", type=click.Choice(["resid_pre", "resid_post", "attn_out", "mlp_out"]), default="resid_pre",
              show_default=True)
@click.option("--condition-layer", type=int, default=None, help="CAST: gate rows by the prompt's score at this layer.")
@click.option("--threshold", type=float, default=None, help="CAST: steer rows whose score exceeds this.")
@click.option("--condition-position", default="-1", show_default=True, help="CAST: token offset or 'mean'.")
@click.option("--prompt", "-p", multiple=True, help="A prompt (repeatable).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None, help="Prompt file (JSON/JSONL/CSV).")
@click.option("--harmless", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Harmless prompt file for --sweep-alpha.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N prompts of each file.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write per-prompt results as JSONL.")
@click.option("--sweep-alpha", default=None, help="Comma-separated strengths: print refusal rates per strength.")
@click.option("--system", default=None, help="System prompt.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=128, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--save-plan", type=click.Path(dir_okay=False), default=None, help="Save the plan built from flags as JSON.")
def steer(directions, direction_key, plan_path, op, layer, alpha, value, tokens, site, condition_layer, threshold,
          condition_position, prompt, data, harmless, limit, out, sweep_alpha, system, max_new_tokens, batch_size,
          save_plan, **kw):
    """Generate with a steering plan active (one prompt, a prompt set, or a strength sweep)."""
    from r1probe.models import model_provenance
    from r1probe.provenance import atomic_write_json, atomic_write_text, base_manifest, sha256_file

    if not prompt and not data:
        raise R1ProbeError("give --prompt TEXT or --data FILE")
    lm = load_from_options(kw)
    if sweep_alpha and alpha is None:
        alpha = 0.0  # replaced per strength
    plan = build_plan(lm, plan_path=plan_path, op=op, layer=layer, alpha=alpha, value=value, tokens=tokens, site=site,
                      directions=directions, direction_key=direction_key, condition_layer=condition_layer,
                      threshold=threshold, condition_position=condition_position)
    plan.resolve(lm.layout.d_model)  # fail early on names and sizes
    if save_plan:
        plan.save(save_plan)
    rows = [{"id": f"prompt/{i}", "prompt": p} for i, p in enumerate(prompt)]
    if data:
        rows += read_prompts(data, limit)
    gen = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, system=system)
    if sweep_alpha:
        try:
            alphas = [float(a) for a in sweep_alpha.split(",") if a.strip()]
        except ValueError as e:
            raise R1ProbeError(f"--sweep-alpha {sweep_alpha!r}: comma-separated numbers") from e
        harmless_rows = read_prompts(harmless, limit) if harmless else []
        table = []
        for a in alphas:
            p = with_strength(plan, a)
            res_h = run_prompts(lm, p, [r["prompt"] for r in rows], **gen)
            res_b = run_prompts(lm, p, [r["prompt"] for r in harmless_rows], **gen) if harmless_rows else []
            rec = {"alpha": a, "harmful_refusal": sum(r["refused"] for r in res_h) / len(res_h),
                   "harmless_refusal": (sum(r["refused"] for r in res_b) / len(res_b)) if res_b else None}
            table.append(rec)
            stderr_progress(f"alpha={a:g}: harmful refusal {rec['harmful_refusal']:.1%}" +
                            (f", harmless refusal {rec['harmless_refusal']:.1%}" if res_b else ""))
        click.echo(f"{'alpha':>8}  {'harmful refusal':>16}  {'harmless refusal':>17}")
        for rec in table:
            hb = "-" if rec["harmless_refusal"] is None else f"{rec['harmless_refusal']:.1%}"
            click.echo(f"{rec['alpha']:>8g}  {rec['harmful_refusal']:>16.1%}  {hb:>17}")
        if out:
            atomic_write_json(out, {"sweep": table, "plan": plan.to_dict(), **base_manifest(model=model_provenance(lm))})
        return
    results = run_prompts(lm, plan, [r["prompt"] for r in rows], **gen)
    for r, res in zip(rows, results):
        res["id"] = r["id"]
    if out:
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
        man = base_manifest(model=model_provenance(lm), plan=plan.to_dict(), n=len(results),
                            refusal_rate=sum(r["refused"] for r in results) / len(results),
                            data_sha256=sha256_file(data) if data else None,
                            directions_sha256=_dir_sha(plan.directions))
        atomic_write_json(str(out) + ".manifest.json", man)
        click.echo(f"{len(results)} results -> {out} (refusal {man['refusal_rate']:.1%})")
    else:
        for res in results:
            click.echo(f"### {res['prompt']}")
            click.echo(res["completion"].strip())
            click.echo(f"[refused: {res['refused']}]\n")


def _dir_sha(path):
    if not path:
        return None
    from r1probe.provenance import sha256_file
    from r1probe.steering.directions import directions_path

    return sha256_file(directions_path(path))


@click.command()
@model_options()
@click.option("--directions", type=click.Path(exists=True), required=True, help="Directions file or folder.")
@click.option("--direction-key", default=None, help="Direction to use (default: chosen).")
@click.option("--op", type=click.Choice(["orthogonalize", "amplify", "enhance"]), required=True,
              help="orthogonalize: remove the direction (abliteration); amplify: W <- (I + beta r r^T) W; "
                   "enhance: W_L <- W_L + lam r a^T with a read vector a fitted on --harmful vs --benign.")
@click.option("--layer", default=None, help="Layers for amplify/enhance (e.g. 8-15).")
@click.option("--beta", type=float, default=None, help="Amplification strength.")
@click.option("--writers", default="attn,mlp", show_default=True, help="Which output projections to edit (amplify).")
@click.option("--lam", type=float, default=None, help="enhance: strength of the rank-1 write (lambda).")
@click.option("--harmful", type=click.Path(exists=True, dir_okay=False), default=None,
              help="enhance: harmful prompts to fit the read vector on (JSON/JSONL/CSV; default: the built-in "
                   "zh-harmful train split, with the default benign set).")
@click.option("--benign", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="enhance: benign prompts (with answer/std_answer fields when present) whose tokens the edit must leave "
                   "alone (default: built-in zh-harmless train prompts + GSM8K train 1-200 with solutions).")
@click.option("--data-root", default=None, help="enhance: shared data folder for the default GSM8K benign texts "
                                               "(default $R1PROBE_DATA or ../shared/data).")
@click.option("--borderline", type=click.IntRange(0), default=0, show_default=True,
              help="enhance with the default fit data: also keep the read vector silent on the first N CValues "
                   "borderline contrast prompts (sensitive but answerable; 332 in all); trades refusal for less over-refusal.")
@click.option("--benign-limit", type=click.IntRange(1), default=150, show_default=True)
@click.option("--null-energy", type=float, default=0.99, show_default=True, help="enhance: benign energy kept out of the read vector.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Export folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing export folder.")
@click.option("--measure", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="Prompt file(s) to measure keyword refusal on before export (recorded in the model card).")
@click.option("--measure-limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--max-shard-size", default="400MB", show_default=True)
def edit(directions, direction_key, op, layer, beta, writers, lam, harmful, benign, data_root, borderline, benign_limit,
         null_energy, out, overwrite, measure, measure_limit, max_shard_size, **kw):
    """Edit the weights along the refusal direction and export a standard checkpoint folder."""
    from r1probe.steering import edit as E
    from r1probe.steering.directions import load_direction
    from r1probe.steering.export import export_checkpoint

    if Path(out).exists() and not overwrite:
        raise R1ProbeError(f"{out} already exists (pass --overwrite to replace it)")
    lm = load_from_options(kw)
    d = load_direction(directions, direction_key, lm.layout.d_model)
    which = [w.strip() for w in writers.split(",") if w.strip()]
    if op == "orthogonalize":
        records = [E.orthogonalize(lm, d)]
    elif op == "amplify":
        if layer is None or beta is None:
            raise R1ProbeError("--op amplify needs --layer and --beta")
        records = [E.amplify(lm, d, parse_layers(layer, lm.layout.n_layers), beta, which=which)]
    else:
        if bool(harmful) != bool(benign):
            raise R1ProbeError("--op enhance: give both --harmful FILE and --benign FILE, or neither (built-in fit data)")
        lay = parse_layers(layer or str(ENHANCE_DEFAULTS["layer"]), lm.layout.n_layers)
        if len(lay) != 1:
            raise R1ProbeError("--op enhance edits one layer (e.g. --layer 12)")
        if harmful and borderline:
            raise R1ProbeError("--borderline applies to the default fit data; add such prompts to a --benign file instead")
        if harmful:
            harm = [r["prompt"] for r in read_prompts(harmful)]
            texts = []
            for f in benign:
                for r in read_prompts(f, benign_limit):
                    ids = lm.chat.encode(lm.chat.format(r["prompt"]))
                    if r.get("answer"):
                        ids = ids + lm.tokenizer(r["answer"], add_special_tokens=False)["input_ids"][:96]
                    texts.append(ids)
            fit_desc = f"harmful: {harmful}; benign: {', '.join(benign)} (first {benign_limit} each)"
        else:
            from r1probe.steering.fit_data import default_fit_data

            fit = default_fit_data(lm, data_root=data_root, borderline=borderline)
            harm, texts, fit_desc = fit.harmful, fit.benign, fit.description
        stderr_progress(f"fitting the read vector on {len(harm)} harmful prompts and {len(texts)} benign texts")
        records = [E.enhance(lm, d, harm, texts, layer=lay[0], lam=lam if lam is not None else ENHANCE_DEFAULTS["lam"],
                             null_energy=null_energy)]
        records[0]["fit_data"] = fit_desc
    metrics = {}
    for f in measure:
        rows = read_prompts(f, measure_limit)
        res = run_prompts(lm, None, [r["prompt"] for r in rows], max_new_tokens=64, batch_size=8)
        metrics[f"keyword refusal on {Path(f).name} (first {len(rows)})"] = f"{sum(r['refused'] for r in res) / len(res):.1%}"
        stderr_progress(f"{Path(f).name}: refusal {sum(r['refused'] for r in res) / len(res):.1%}")
    path = export_checkpoint(lm, out, edits=records, directions_file=directions,
                             direction_key=direction_key or "chosen", metrics=metrics, overwrite=overwrite,
                             max_shard_size=max_shard_size)
    click.echo(f"exported {op} checkpoint -> {path}")


#: the enhancement measured on the embedded model (r1probe/steering/README.md: layer 12, λ 20 with the layer-12
#: direction; λ 10 reached 0.78 on CHiSafetyBench); overridable by flags
ENHANCE_DEFAULTS: dict = {"layer": 12, "lam": 20.0}
