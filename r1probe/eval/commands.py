"""CLI verbs ``r1probe eval`` and ``r1probe serve`` (thin wrappers over :mod:`r1probe.eval`)."""

from __future__ import annotations

import json
import sys

import click

from r1probe.cli_options import (ProgressBars, load_from_options, model_options, quiet_option, sampling_options,
                                 stderr_progress)
from r1probe.errors import R1ProbeError
from r1probe.steering.commands import RegistryOption as HelpFnOption


def _check_user_bench_lengths(lm, benches, system) -> None:
    """Prompts of user benches (``file:PATH:KIND``) against the model's context, before any generation."""
    from r1probe.eval.benches import BENCHES
    from r1probe.models.limits import check_prompt_lengths

    for b in benches:
        if BENCHES.get(b.name) is b:
            continue
        items = b.load(None)
        check_prompt_lengths(lm, [lm.chat.format(it.text, system=system, history=it.history) for it in items],
                             [f"{b.source}: prompt {it.id.split('/', 1)[1]}" for it in items])


def _bench_help() -> str:
    from r1probe.eval.benches import bench_help

    return bench_help()


@click.command("eval")
@model_options()
@click.option("--bench", "bench", default=None, cls=HelpFnOption, help_fn=lambda: _bench_help(),
              help="Benchmarks, comma-separated.")
@click.option("--limit", type=int, default=None, help="Evaluate N items per benchmark (a seeded sample).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit sample.")
@click.option("--first", is_flag=True, help="With --limit N: the first N items in file order instead of a seeded sample.")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Output folder (per-sample JSONL, summary.json, summary.md); rerun to resume.")
@click.option("--judge", default="default", show_default=True,
              help="default (the judge chosen on the frozen judge-set test part) | keyword | trained | llm:MODEL_SPEC | "
                   "openai:URL#MODEL")
@click.option("--judge-max-new-tokens", type=int, default=32, show_default=True,
              help="Verdict length for LLM judges (give R1-style judges room to think).")
@click.option("--judge-reasoning", is_flag=True, help="Also judge the reasoning block (R1-style models).")
@click.option("--engine", type=click.Choice(["hf", "openai"]), default="hf", show_default=True)
@click.option("--url", default=None, help="--engine openai: server URL, optionally URL#MODEL.")
@click.option("--api-key", default=None, envvar="OPENAI_API_KEY", help="--engine openai: bearer token.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="--engine openai: parallel requests.")
@click.option("--thinks", is_flag=True,
              help="--engine openai: the served model is R1-style (its prompt opens <think>), so a reply without "
                   "</think> is unterminated reasoning, not an answer.")
@click.option("--max-new-tokens", type=int, default=None,
              help="Generation length (default per benchmark: 256 refusal, 512 gsm8k/cmath, 1024 math500).")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Rows in flight when generating, batch of scored benches (default: the engine's for the "
                   "device; 16 for scored benches).")
@click.option("--plan", default=None, type=click.Path(dir_okay=False), help="Steering plan JSON (hf engine).")
@click.option("--unchanged-from", "unchanged_from", default=None, type=click.Path(exists=True, file_okay=False),
              help="With a --plan whose every step is conditional: the eval folder of the same model without the "
                   "plan (same settings); items whose prompts leave the gates closed take their records from there.")
@click.option("--answers", default=None, type=click.Path(dir_okay=False),
              help="Answer key for chisafety-mcq (JSON {id: letter} or CSV id,letter).")
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="Folder holding the benchmark data (default $R1PROBE_DATA or ../shared/data).")
@click.option("--compare", nargs=2, default=None, type=click.Path(exists=True),
              help="Compare two run folders A B: metric differences B-A paired over shared items (rates: exact "
                   "McNemar with Newcombe's interval; means: paired bootstrap).")
@sampling_options("Generations per item: one record each, plus mean / majority / pass@k aggregates.")
@click.option("--system", default=None, help="System prompt for every item (a dialogue's own system message wins).")
@click.option("--split", type=click.Choice(["report", "dev", "all"]), default="report", show_default=True,
              help="Partition evaluated (r1probe.data.partitions; before --limit): report for reported numbers, "
                   "dev for tuning.")
@click.option("--tuning-record", "tuning_record", multiple=True, type=click.Path(exists=True),
              help="A tuning_reads.json (or a folder holding one) whose items must not be reported; repeatable. "
                   "The evaluated export's manifest and a plan's directions folder are checked too.")
@quiet_option
def eval_cmd(**kw):
    """Evaluate safety (CHiSafetyBench, SafetyBench-zh), reasoning (GSM8K, MATH-500, CMATH) and over-refusal."""
    from r1probe.eval import runner
    from r1probe.eval.benches import parse_benches

    if kw["compare"]:
        a, b = kw["compare"]
        click.echo(runner.compare_markdown(runner.compare_runs(a, b)), nl=False)
        return
    if not kw["bench"]:
        raise R1ProbeError("--bench is required (or --compare A B)")
    if kw["bench"].strip() == "list":
        from r1probe.eval.benches import bench_table

        click.echo(bench_table(kw["data_root"]), nl=False)
        return
    benches = parse_benches(kw["bench"])
    reads, sources = runner.find_tuning_reads(kw.get("model") if kw["engine"] == "hf" else None, kw["plan"],
                                              kw["tuning_record"])
    if kw["split"] == "dev":
        overlap = "tuning/report overlap: not checked (--split dev)"
    else:  # refuses (exit 2, naming the items) before any model loads
        overlap = runner.tuning_overlap(benches, reads, limit=kw["limit"], seed=None if kw["first"] else kw["seed"],
                                        data_root=kw["data_root"], split=kw["split"], split_seed=kw["seed"])
    if kw["out"]:
        from r1probe.provenance import check_writable_dir

        check_writable_dir(kw["out"])
    answers = None
    if kw["answers"]:
        from r1probe.data.chisafety import load_answer_key

        answers = load_answer_key(kw["answers"])
    if kw["unchanged_from"] and not kw["plan"]:
        raise R1ProbeError("--unchanged-from reuses the unedited model's records where a --plan's gates stay closed: "
                           "give the --plan")
    if kw["engine"] == "openai":
        if not kw["url"]:
            raise R1ProbeError("--engine openai needs --url http://HOST:PORT[#MODEL]")
        if kw["plan"]:
            raise R1ProbeError("--plan applies to the hf engine (serve the plan with `r1probe serve --plan`)")
        from r1probe.eval.engines import OpenAIEngine

        from r1probe.eval.engines import parse_endpoint
        from r1probe.eval.sampling import resolve_sampling

        sampling = resolve_sampling(kw["temperature"], kw["top_p"], name=parse_endpoint(kw["url"])[1],
                                    r1=kw["thinks"])
        engine = OpenAIEngine(kw["url"], max_new_tokens=kw["max_new_tokens"] or 256, concurrency=kw["concurrency"],
                              api_key=kw["api_key"], thinks=kw["thinks"], temperature=sampling["temperature"],
                              top_p=sampling["top_p"], seed=kw["sample_seed"], system=kw["system"])
        lm = None
    else:
        from r1probe.eval.engines import HFEngine

        from r1probe.eval.sampling import resolve_sampling

        resolve_sampling(kw["temperature"], kw["top_p"])  # bad values fail before the model loads
        lm = load_from_options(kw)
        _check_user_bench_lengths(lm, benches, kw["system"])
        sampling = resolve_sampling(kw["temperature"], kw["top_p"], lm=lm, name=kw.get("model"))
        engine = HFEngine(lm, max_new_tokens=kw["max_new_tokens"] or 256, batch_size=kw["batch_size"],
                          plan=kw["plan"], temperature=sampling["temperature"], top_p=sampling["top_p"],
                          seed=kw["sample_seed"], system=kw["system"])
    sampling.update(samples=kw["samples"], seed=kw["sample_seed"], system=kw["system"])
    if sampling["temperature"] > 0 or kw["samples"] > 1:
        stderr_progress(f"sampling: temperature {sampling['temperature']:g}, top-p {sampling['top_p']:g}, "
                        f"{kw['samples']} sample(s) per item ({sampling['source']})")
    judge = None
    from r1probe.eval.kinds import get_kind

    if any(get_kind(b.kind).needs_judge for b in benches):
        from r1probe.eval.judges import make_judge

        js = kw["judge"]
        extra = {"max_new_tokens": kw["judge_max_new_tokens"]} if js.startswith(("llm:", "openai:")) else {}
        if js.startswith("llm:") and lm is not None and js[4:] == kw.get("model"):
            extra["lm"] = lm
        judge = make_judge(js, **extra)
    chunk = engine.chunk_size() if kw["engine"] == "hf" else max(kw["concurrency"], 1) * 2
    bars = ProgressBars(quiet=kw["quiet"])
    run_kw = dict(limit=kw["limit"], seed=None if kw["first"] else kw["seed"], data_root=kw["data_root"],
                  max_new_tokens=kw["max_new_tokens"], chunk_size=chunk, judge_reasoning=kw["judge_reasoning"],
                  answers=answers, samples=kw["samples"], split=kw["split"], split_seed=kw["seed"],
                  unchanged_from=kw["unchanged_from"])
    manifest = {"benches": [b.name for b in benches], "limit": kw["limit"],
                "seed": None if kw["first"] else kw["seed"], "sampling": sampling, "split": kw["split"],
                "tuning_records": sources, "tuning_overlap": overlap}
    # several benches on one greedy hf engine: side by side, their generations in shared engine calls
    summary = runner.evaluate_together([(b, engine, run_kw) for b in benches], judge, kw["out"], manifest=manifest,
                                       progress=bars)
    bars.close()
    click.echo(runner.summary_markdown({k: v for k, v in summary.items() if k in {b.name for b in benches}}), nl=False)
    for b in benches:
        agg = summary.get(b.name, {}).get("samples")
        if agg:
            vals = ", ".join(f"{k} {v:.3f}" for k, v in agg.items() if isinstance(v, float))
            click.echo(f"{b.name}: {agg['k']} samples of {agg['items']} items: {vals}")
    click.echo(overlap + (f" (records: {', '.join(sources)})" if sources else " (no tuning records found)"))
    if kw["out"]:
        stderr_progress(f"wrote {kw['out']}/summary.json")


@click.command("serve")
@model_options()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True, help="0 picks a free port (printed).")
@click.option("--plan", default=None, type=click.Path(dir_okay=False), help="Steering plan applied to every request.")
@click.option("--max-tokens", "max_tokens", type=int, default=256, show_default=True,
              help="Default max_tokens when a request gives none.")
@click.option("--name", "model_name", default=None, help="Model name served and checked (default: the spec).")
@click.option("--api-key", default=None, envvar="R1PROBE_API_KEY",
              help="Require 'Authorization: Bearer KEY' on /v1 (default: open).")
@click.option("--batch-window-ms", type=float, default=10.0, show_default=True,
              help="Requests arriving within this window are generated together.")
@click.option("--batch-size", type=int, default=None, help="Rows in flight in the engine (default by device).")
@click.option("--verbose", is_flag=True, help="Log each request.")
@quiet_option
def serve(**kw):
    """Serve the model (optionally steered) behind an OpenAI-compatible HTTP API (FastAPI + uvicorn)."""
    from r1probe.eval.server import serve as make_server

    name = kw.pop("model_name") or kw["model"]
    host, port, plan, mt, verbose = kw.pop("host"), kw.pop("port"), kw.pop("plan"), kw.pop("max_tokens"), kw.pop("verbose")
    api_key, window, bs = kw.pop("api_key"), kw.pop("batch_window_ms"), kw.pop("batch_size")
    if mt <= 0:
        raise R1ProbeError(f"--max-tokens must be positive, not {mt}")
    bars = ProgressBars(quiet=kw.pop("quiet"), unit="step")
    bars(f"serve start-up: [0/2] loading {kw['model']}")
    lm = load_from_options(kw)
    bars("serve start-up: [1/2] starting the server")
    srv = make_server(lm, host, port, model_name=name, plan=plan, default_max_tokens=mt, api_key=api_key,
                      verbose=verbose, window_s=max(0.0, window) / 1000.0, batch_size=bs)
    bars("serve start-up: [2/2] ready")
    click.echo(json.dumps({"listening": srv.url, "model": name}), err=False)
    sys.stdout.flush()
    try:
        srv.run()
    except KeyboardInterrupt:
        pass
