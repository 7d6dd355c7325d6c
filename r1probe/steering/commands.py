"""``r1probe steer`` (run-time steering) and ``r1probe edit`` (weight edits exported as checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from r1probe.cli_options import (load_from_options, model_options, quiet_option, sampling_options,
                                 stderr_progress)
from r1probe.errors import R1ProbeError
from r1probe.steering.edits import ALIASES, EDITS
from r1probe.steering.fit_data import read_prompts
from r1probe.steering.plan import parse_layers
from r1probe.steering.transforms import TRANSFORMS

__all__ = ["steer", "edit", "read_prompts", "parse_layers", "build_plan", "run_prompts"]



class RegistryChoice(click.Choice):
    """A ``click.Choice`` over a registry's names, read when the command runs (so later registrations count)."""

    def __init__(self, registry: dict, aliases: dict | None = None):
        self._registry, self._aliases = registry, aliases if aliases is not None else {}
        super().__init__([])

    @property
    def choices(self):
        return (*self._registry, *self._aliases)

    @choices.setter
    def choices(self, value):  # click.Choice.__init__ assigns it
        pass

    def get_metavar(self, *args, **kw) -> str:  # deprecated aliases are accepted but not advertised
        return f"[{'|'.join(self._registry)}]"


class RegistryOption(click.Option):
    """An option whose help text is computed when ``--help`` is shown (``help_fn``)."""

    def __init__(self, *args, help_fn=None, **kw):
        self._help_fn = help_fn
        super().__init__(*args, **kw)

    def get_help_record(self, ctx):
        if self._help_fn is not None:
            self.help = self._help_fn()
        return super().get_help_record(ctx)


def _transform_help() -> str:
    from r1probe.steering.transforms import TRANSFORMS

    return "; ".join(f"{t.name}: {t.summary}" + (f" (needs --{', --'.join(t.params)})" if t.params else "")
                     for t in TRANSFORMS.values())


def _edit_help() -> str:
    from r1probe.steering.edits import EDITS

    return "; ".join(f"{e.name}: {e.summary} (settings: {', '.join(e.Settings.model_fields)})" for e in EDITS.values())


def verdict_fields(text: str, thinks: bool) -> dict:
    """The reasoning/answer split of a completion and the refusal rule's verdict (``eval.judges.refusal``)."""
    from r1probe.eval.judges.refusal import judge_refusal
    from r1probe.models.chat import split_reasoning

    sp = split_reasoning(text, prompt_opened_think=thinks)
    v = judge_refusal(text, prompt_opened_think=thinks)
    return {"reasoning": sp.reasoning if sp.thought else None, "answer": sp.answer,
            "terminated": sp.terminated, "outcome": v.outcome, "refused": v.refused}


def build_plan(lm, *, plan_path, op, layer, alpha, value, tokens, site, directions, direction_key,
               condition_layer, threshold, condition_position):
    from r1probe.steering.plan import Condition, SteeringPlan, SteeringStep
    from r1probe.steering.transforms import TRANSFORMS, get_transform

    if plan_path:
        plan = SteeringPlan.load(plan_path)
        return plan if directions is None else plan.with_directions(directions)
    if op is None:
        raise R1ProbeError(f"give --plan PLAN.json or --op {'|'.join(TRANSFORMS)} (with --layer)")
    transform = get_transform(op)
    name = direction_key or "chosen"
    n = lm.layout.n_layers
    if op == "ablate" and layer in (None, "all"):  # ablation defaults to every write to the residual stream
        return SteeringPlan.ablate_everywhere(name, n, tokens=tokens, directions=directions)
    if layer is None:
        raise R1ProbeError(f"--op {op} needs --layer")
    cond = None
    if condition_layer is not None:
        if threshold is None:
            raise R1ProbeError("--condition-layer needs --threshold")
        pos = condition_position if condition_position == "mean" else int(condition_position)
        cond = Condition(layer=condition_layer, direction=name, threshold=threshold, position=pos)
    given = {"alpha": alpha, "value": value}
    for p in transform.params:
        if given[p] is None:
            raise R1ProbeError(f"--op {op} needs --{p}")
    params = {p: (v if p in transform.params else None) for p, v in given.items()}
    step = SteeringStep(op, parse_layers(layer, n), name, tokens=tokens, site=site, condition=cond, **params)
    return SteeringPlan([step], directions=directions)


def with_strength(plan, alpha: float):
    """A copy of ``plan`` whose steps that take a strength (``alpha``) use ``alpha``."""
    from dataclasses import replace

    from r1probe.steering.transforms import get_transform

    takes = [("alpha" in get_transform(s.op).params) for s in plan.steps]
    if not any(takes):
        raise R1ProbeError("--sweep-alpha needs a plan with a step that takes --alpha")
    steps = [replace(s, alpha=alpha) if t else s for s, t in zip(plan.steps, takes)]
    return replace(plan, steps=steps)


def run_prompts(lm, plan, prompts: list[str], *, max_new_tokens: int, batch_size: int | None, system=None,
                progress: bool = False, desc: str = "generate", temperature: float = 0.0, top_p: float = 1.0,
                seed: int | None = 0, samples: int = 1) -> list[dict]:
    """One record per prompt and sample (prompt-major; ``sample`` set when ``samples > 1``, drawn with
    ``seed + sample``), generated by :func:`r1probe.models.engine.generate` with ``plan`` active."""
    from tqdm.auto import tqdm

    from r1probe.models.engine import SamplingParams, generate

    texts = [lm.chat.format(p, system=system) for p in prompts]
    sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, n=samples)
    with tqdm(total=len(texts) * samples, desc=desc, disable=not progress, unit="reply") as bar:
        outs = generate(lm, texts, sp, plan=plan, batch_size=batch_size,
                        progress=lambda n, total: bar.update(n - bar.n))
    recs = []
    for p, cs in zip(prompts, outs):
        for k, c in enumerate(cs):
            recs.append({"prompt": p, "completion": c.text, **verdict_fields(c.text, lm.chat.thinks),
                         **({"sample": k} if samples > 1 else {})})
    return recs


@click.command()
@model_options()
@click.option("--directions", type=click.Path(exists=True), default=None,
              help="Directions file or folder (directions.safetensors [+ probe.json]).")
@click.option("--direction-key", default=None, help="Direction to use (default: chosen; e.g. layer12_pos-1).")
@click.option("--plan", "plan_path", type=click.Path(exists=True, dir_okay=False), default=None, help="A steering plan JSON.")
@click.option("--op", cls=RegistryOption, type=RegistryChoice(TRANSFORMS), default=None, help_fn=_transform_help,
              help="The steering transform.")
@click.option("--layer", default=None, help="Layer(s): 12, 8,10,12, 8-15 or all (ablate defaults to everywhere).")
@click.option("--alpha", type=float, default=None, help="Strength of the transforms that take one (add, amplify).")
@click.option("--value", type=float, default=None, help="Target projection of the transforms that take one (clamp).")
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
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Rows in flight when generating (default: the engine's for the device).")
@click.option("--save-plan", type=click.Path(dir_okay=False), default=None, help="Save the plan built from flags as JSON.")
@sampling_options("Replies per prompt (records <id>#s<k>; rates are means over the samples).")
@quiet_option
def steer(directions, direction_key, plan_path, op, layer, alpha, value, tokens, site, condition_layer, threshold,
          condition_position, prompt, data, harmless, limit, out, sweep_alpha, system, max_new_tokens, batch_size,
          save_plan, temperature, top_p, samples, sample_seed, quiet, **kw):
    """Generate with a steering plan active (one prompt, a prompt set, or a strength sweep)."""
    from r1probe.models import model_provenance
    from r1probe.models.limits import check_prompt_lengths
    from r1probe.provenance import atomic_write_json, atomic_write_text, base_manifest, check_writable_file, sha256_file

    from r1probe.eval.sampling import resolve_sampling

    if not prompt and not data:
        raise R1ProbeError("give --prompt TEXT or --data FILE")
    resolve_sampling(temperature, top_p)  # bad values fail before the model loads
    for path, flag in ((out, "--out"), (save_plan, "--save-plan")):
        if path:
            check_writable_file(path, flag)
    rows = [{"id": f"prompt/{i}", "prompt": p} for i, p in enumerate(prompt)]
    names = [f"--prompt {i + 1}" for i in range(len(prompt))]
    if data:
        rows += read_prompts(data, limit)
        names += [f"{data}: prompt {r['id']}" for r in rows[len(prompt):]]
    harmless_rows = read_prompts(harmless, limit) if sweep_alpha and harmless else []
    names += [f"{harmless}: prompt {r['id']}" for r in harmless_rows]
    lm = load_from_options(kw)
    check_prompt_lengths(lm, [lm.chat.format(r["prompt"], system=system) for r in rows + harmless_rows], names)
    if sweep_alpha and alpha is None:
        alpha = 0.0  # replaced per strength
    plan = build_plan(lm, plan_path=plan_path, op=op, layer=layer, alpha=alpha, value=value, tokens=tokens, site=site,
                      directions=directions, direction_key=direction_key, condition_layer=condition_layer,
                      threshold=threshold, condition_position=condition_position)
    plan.resolve(lm.layout.d_model)  # fail early on names and sizes
    if save_plan:
        plan.save(save_plan)
    sampling = resolve_sampling(temperature, top_p, lm=lm, name=kw.get("model"))
    gen = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, system=system, progress=not quiet,
               temperature=sampling["temperature"], top_p=sampling["top_p"], seed=sample_seed, samples=samples)
    sampling.update(samples=samples, seed=sample_seed)
    if sampling["temperature"] > 0 or samples > 1:
        stderr_progress(f"sampling: temperature {sampling['temperature']:g}, top-p {sampling['top_p']:g}, "
                        f"{samples} sample(s) per prompt ({sampling['source']})")
    if sweep_alpha:
        try:
            alphas = [float(a) for a in sweep_alpha.split(",") if a.strip()]
        except ValueError as e:
            raise R1ProbeError(f"--sweep-alpha {sweep_alpha!r}: comma-separated numbers") from e
        table = []
        for a in alphas:
            p = with_strength(plan, a)
            res_h = run_prompts(lm, p, [r["prompt"] for r in rows], desc=f"alpha={a:g} harmful", **gen)
            res_b = run_prompts(lm, p, [r["prompt"] for r in harmless_rows], desc=f"alpha={a:g} harmless",
                                **gen) if harmless_rows else []
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
            atomic_write_json(out, {"sweep": table, "plan": plan.to_dict(), "sampling": sampling,
                                    **base_manifest(model=model_provenance(lm))})
        return
    results = run_prompts(lm, plan, [r["prompt"] for r in rows], desc="steer", **gen)
    for i, res in enumerate(results):
        rid = rows[i // samples]["id"]
        res["id"] = f"{rid}#s{res['sample']}" if samples > 1 else rid
    if out:
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
        man = base_manifest(model=model_provenance(lm), plan=plan.to_dict(), n=len(results),
                            refusal_rate=sum(r["refused"] for r in results) / len(results),
                            data_sha256=sha256_file(data) if data else None,
                            directions_sha256=_dir_sha(plan.directions), sampling=sampling)
        if samples > 1:
            by_prompt = [results[i:i + samples] for i in range(0, len(results), samples)]
            man["refusal_rate_majority"] = sum(sum(bool(r["refused"]) for r in g) * 2 > len(g)
                                               for g in by_prompt) / len(by_prompt)
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


def refusal_metric(results: list[dict]) -> dict:
    """The refusal rate of ``run_prompts`` results with its 95% Wilson interval (``scipy.stats.binomtest``), over
    the judged replies (unterminated reasoning has no verdict): ``{"value", "ci", "n", "unit", "judge"}``."""
    from scipy.stats import binomtest

    judged = [r for r in results if r.get("refused") is not None]
    k, n = sum(bool(r["refused"]) for r in judged), len(judged)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson") if n else None
    return {"value": k / n if n else None, "ci": [float(ci.low), float(ci.high)] if ci else None, "n": n,
            "unit": "rate", "judge": "keyword refusal rule", "unterminated": len(results) - n}


#: edit flags -> the settings field they set (the first of the names the chosen edit's Settings has)
EDIT_FLAGS = {"direction_key": ("direction_key",), "layer": ("layers", "layer"), "beta": ("beta",),
              "writers": ("writers",), "lam": ("lam",), "harmful": ("harmful",), "benign": ("benign",),
              "data_root": ("data_root",), "borderline": ("borderline",), "benign_limit": ("benign_limit",),
              "null_energy": ("null_energy",)}


def edit_settings(op: str, flags: dict, sets: tuple[str, ...] = ()) -> tuple[str, object]:
    """The registered name of ``op`` and its ``Settings`` from the given flags (None: not given) and ``KEY=VALUE``s.

    A flag the chosen edit has no setting for is one clear error, as is an unknown key.
    """
    from r1probe.steering.edits import get_edit, make_settings, resolve_name

    name = resolve_name(op)
    fields = get_edit(name).Settings.model_fields
    values: dict = {}
    for flag, v in flags.items():
        if v is None or v == ():
            continue
        field = next((f for f in EDIT_FLAGS[flag] if f in fields), None)
        if field is None:
            raise R1ProbeError(f"--{flag.replace('_', '-')} does not apply to --op {name} "
                               f"(its settings: {', '.join(fields)})")
        values[field] = list(v) if isinstance(v, tuple) else v
    for kv in sets:
        k, eq, v = kv.partition("=")
        if not eq:
            raise R1ProbeError(f"--set {kv!r}: expected KEY=VALUE")
        values[k.strip().replace("-", "_")] = v.strip()
    return name, make_settings(name, values)


@click.command()
@model_options()
@click.option("--directions", type=click.Path(exists=True), required=True,
              help="Probe folder (directions.safetensors + probe.json) or directions file.")
@click.option("--direction-key", default=None, help="Direction to use (default: chosen).")
@click.option("--op", cls=RegistryOption, type=RegistryChoice(EDITS, ALIASES), required=True, help_fn=_edit_help,
              help="The weight edit.")
@click.option("--layer", default=None, help="amplify: layers (e.g. 8-15); rank1-gate: its one layer (default 12).")
@click.option("--beta", type=float, default=None, help="amplify: strength (W <- (I + beta r r^T) W).")
@click.option("--writers", default=None, help="amplify: which output projections to edit (default attn,mlp).")
@click.option("--lam", type=float, default=None, help="rank1-gate: strength of the rank-1 write (lambda; default 20).")
@click.option("--harmful", type=click.Path(exists=True, dir_okay=False), default=None,
              help="rank1-gate: harmful prompts to fit the read vector on (JSON/JSONL/CSV; default: the built-in "
                   "zh-harmful train split, with the default benign set).")
@click.option("--benign", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="rank1-gate: benign prompts (with answer/std_answer fields when present) whose tokens the edit must "
                   "leave alone (default: built-in zh-harmless train prompts + GSM8K train 1-200 with solutions).")
@click.option("--data-root", default=None, help="rank1-gate: shared data folder for the default GSM8K benign texts "
                                               "(default $R1PROBE_DATA or ../shared/data).")
@click.option("--borderline", type=click.IntRange(0), default=None,
              help="rank1-gate with the default fit data: also keep the read vector silent on the first N CValues "
                   "borderline contrast prompts (sensitive but answerable; 332 in all); trades refusal for less over-refusal.")
@click.option("--benign-limit", type=click.IntRange(1), default=None, help="rank1-gate: prompts per --benign file "
                                                                          "(default 150).")
@click.option("--null-energy", type=float, default=None, help="rank1-gate: benign energy kept out of the read vector "
                                                              "(default 0.99).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any setting of the chosen edit (see --op), e.g. --set ridge=0.001 (repeatable).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Export folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing export folder.")
@click.option("--measure", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="Prompt file(s) to measure refusal on (the refusal rule, keyword judge) before export "
                   "(recorded in the model card).")
@click.option("--measure-limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--max-shard-size", default="400MB", show_default=True)
@quiet_option
def edit(directions, direction_key, op, layer, beta, writers, lam, harmful, benign, data_root, borderline, benign_limit,
         null_energy, sets, out, overwrite, measure, measure_limit, max_shard_size, quiet, **kw):
    """Edit the weights along the refusal direction and export a standard checkpoint folder."""
    from r1probe.models.limits import check_prompt_lengths
    from r1probe.provenance import check_writable_dir
    from r1probe.steering.edits import run_edit
    from r1probe.steering.export import export_checkpoint

    if Path(out).exists() and not overwrite:
        raise R1ProbeError(f"{out} already exists (pass --overwrite to replace it)")
    check_writable_dir(out)
    measured = [(f, read_prompts(f, measure_limit)) for f in measure]
    flags = dict(direction_key=direction_key, layer=layer, beta=beta, lam=lam, harmful=harmful, benign=benign,
                 data_root=data_root, borderline=borderline, benign_limit=benign_limit, null_energy=null_energy,
                 writers=[w.strip() for w in writers.split(",") if w.strip()] if writers is not None else None)
    name, settings = edit_settings(op, flags, sets)
    lm = load_from_options(kw)
    for f, rows in measured:
        check_prompt_lengths(lm, [lm.chat.format(r["prompt"]) for r in rows], [f"{f}: prompt {r['id']}" for r in rows])
    records = run_edit(name, lm, directions, settings, log=stderr_progress)
    metrics = {}
    for f, rows in measured:
        res = run_prompts(lm, None, [r["prompt"] for r in rows], max_new_tokens=64, batch_size=None, progress=not quiet,
                          desc=f"measure {Path(f).name}")
        metrics[f"keyword refusal on {Path(f).name} (first {len(rows)})"] = m = refusal_metric(res)
        if not quiet:
            stderr_progress(f"{Path(f).name}: refusal {m['value']:.1%} (95% CI {m['ci'][0]:.1%}-{m['ci'][1]:.1%}, "
                            f"n={m['n']})" if m["n"] else f"{Path(f).name}: no reply could be judged")
    key = getattr(settings, "direction_key", None) or "chosen"
    path = export_checkpoint(lm, out, edits=records, directions_file=directions, direction_key=key, metrics=metrics,
                             overwrite=overwrite, max_shard_size=max_shard_size)
    click.echo(f"exported {name} checkpoint -> {path}")
