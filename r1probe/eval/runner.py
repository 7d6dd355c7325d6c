"""Run benchmarks: generate (or score), judge, append per-sample JSONL, summarise.

Everything that depends on a benchmark's kind (how a chunk of items becomes records, the
metrics, the summary's extra fields) is looked up in :mod:`r1probe.eval.kinds`.

Output folder layout::

    OUT/<bench>.jsonl   one record per item, appended (flushed + fsynced) as soon as it is judged
    OUT/summary.json    {"<bench>": {"n", "kind", "metrics", "ci95", ...}, "manifest": {...}}
    OUT/summary.md      the same as a Markdown table

Rerunning the same command resumes: ids already in ``<bench>.jsonl`` are skipped, a line cut
by a crash (kill -9) is dropped and its item redone, so every id appears exactly once.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from r1probe.errors import DataError, R1ProbeError
from r1probe.eval import metrics as M
from r1probe.eval import sampling as S
from r1probe.eval.benches import Bench, select
from r1probe.eval.kinds import ChunkOptions, get_kind
from r1probe.provenance import atomic_write_json, atomic_write_text, base_manifest, sha256_file


class ResultsFile:
    """An append-only JSONL of per-sample records keyed by ``id``, robust to a crash mid-line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        """Records by id; a trailing partial line (crash) is cut off the file; duplicates keep the first."""
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        recs: dict[str, dict] = {}
        good_end = 0
        pos = 0
        for line in raw.splitlines(keepends=True):
            end = pos + len(line)
            pos = end
            if not line.endswith(b"\n"):
                break  # partial last line
            s = line.strip()
            if not s:
                good_end = end
                continue
            try:
                r = json.loads(s)
            except json.JSONDecodeError:
                break
            recs.setdefault(str(r["id"]), r)
            good_end = end
        if good_end < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        return recs

    def append(self, recs: Sequence[dict]) -> None:
        if not recs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in recs)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def metrics_for(bench: Bench, judge_sees_harm: bool, has_gold: bool = True) -> dict[str, M.Metric]:
    """The metrics of ``bench``'s kind (:meth:`r1probe.eval.kinds.BenchKind.metrics`)."""
    return get_kind(bench.kind).metrics(judge_sees_harm=judge_sees_harm, has_gold=has_gold)


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_WEIGHTS_CACHE: dict[tuple, str] = {}


def weights_fingerprint(model: dict | None) -> str | None:
    """A content hash of a model's weights from its provenance (``model_provenance``): the GGUF sha256 for a
    builtin or ``.gguf`` model, the hub revision (commit) for a hub id, else the sha256 over the weight files
    (``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``, ``*.gguf``) of the folder it was loaded from:
    ``sha256(name + "\0" + sha256(file contents) + "\n" for each file, sorted by name)``. None when unknown."""
    if not isinstance(model, dict):
        return None
    if model.get("gguf_sha256"):
        return f"gguf-sha256:{model['gguf_sha256']}"
    src = model.get("loaded_from")
    p = Path(src) if src else None
    if p is not None and p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
        if files:
            key = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files) + (str(p.resolve()),)
            if key not in _WEIGHTS_CACHE:
                import hashlib

                h = hashlib.sha256()
                for f in files:
                    h.update(f"{f.name}\0{sha256_file(f)}\n".encode("utf-8"))
                _WEIGHTS_CACHE[key] = f"files-sha256:{h.hexdigest()}"
            return _WEIGHTS_CACHE[key]
    if model.get("revision"):
        return f"revision:{model['revision']}"
    return None


def _fingerprint(bench: Bench, engine, judge, mnt: int, judge_reasoning: bool, answers, data_root=None) -> dict:
    """What must not change between a run and its resumption (batch size and concurrency may): the engine and
    its generation settings, the plan, the model's weights (:func:`weights_fingerprint`), the judge, the token
    budget and the bench's data files (its version)."""
    desc = engine.describe()
    eng = {k: v for k, v in desc.items() if k not in ("batch_size", "concurrency", "max_new_tokens")}
    if isinstance(eng.get("model"), dict):
        eng["model"] = {k: v for k, v in eng["model"].items() if k != "loaded_from"}
    kind = get_kind(bench.kind)
    return json.loads(json.dumps({
        "bench": bench.name, "engine": eng, "max_new_tokens": mnt if kind.generates else None,
        "judge": judge.describe() if judge is not None and kind.needs_judge else None,
        "judge_reasoning": bool(judge_reasoning), "answers": sorted(answers.items()) if answers else None,
        "weights": weights_fingerprint(desc.get("model")), "data": _data_hashes(bench, data_root),
    }, default=str))


def _check_fingerprint(path: Path, fp: dict, progress=None) -> None:
    """Refuse to resume results made under a different configuration; when only the model's weights changed,
    the old results are moved aside (``<bench>.weights-<hash>.jsonl``) and everything is generated again."""
    if path.exists():
        old = json.loads(path.read_text("utf-8"))
        if old != fp:
            diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
            if diff == ["weights"] or (diff == ["engine", "weights"] and _same_but_weights(old, fp)):
                tag = str(old.get("weights") or "unknown").split(":")[-1][:12]
                jl = path.parent / f"{fp['bench']}.jsonl"
                if jl.exists():
                    jl.replace(path.parent / f"{fp['bench']}.weights-{tag}.jsonl")
                path.replace(path.parent / f"{fp['bench']}.weights-{tag}.config.json")
                if progress:
                    progress(f"{fp['bench']}: the model's weights changed; earlier replies moved aside, regenerating")
                atomic_write_json(path, fp)
                return
            raise R1ProbeError(f"{path.parent} holds {fp['bench']} results made with a different "
                               f"{', '.join(diff)}; use a new --out (or delete {path.name} and the .jsonl)")
    else:
        atomic_write_json(path, fp)


def _same_but_weights(old: dict, new: dict) -> bool:
    """The engine descriptions differ only in provenance fields that follow the weights (e.g. a GGUF sha256)."""
    follow = ("gguf_sha256", "revision")
    strip = lambda e: {**e, "model": {k: v for k, v in (e.get("model") or {}).items() if k not in follow}} \
        if isinstance(e, dict) and isinstance(e.get("model"), dict) else e  # noqa: E731
    return strip(old.get("engine")) == strip(new.get("engine"))


def bench_items(bench: Bench, *, limit: int | None = None, seed: int | None = 0, data_root: str | None = None,
                split: str | None = None, split_seed: int | None = None, items: list | None = None) -> list:
    """The items :func:`run_bench` evaluates: the bench's items (``items`` overrides the loader; a seeded bench
    loads the split of ``split_seed``), those of partition ``split``, then the ``limit`` sample of ``seed``."""
    from r1probe.data.partitions import filter_items

    split_seed = split_seed if split_seed is not None else (seed or 0)
    if items is None:
        items = bench.load(data_root, seed=split_seed) if getattr(bench, "seeded", False) else bench.load(data_root)
        items = filter_items(bench.name, items, split, root=data_root, seed=split_seed)
    return select(items, limit, seed)


def find_tuning_reads(model: str | None = None, plan: str | None = None,
                      records: Sequence[str] = ()) -> tuple[dict[str, list[str]], list[str]]:
    """The tuning-read records behind an evaluation and where they came from: the evaluated export's manifest
    (``r1probe_manifest.json`` ``tuning_reads``, or its ``tuning_reads.json``), the record beside a plan's
    directions, and ``records`` (files or folders). Returns ``(merged {set: [ids]}, sources)``."""
    from r1probe.data.partitions import TUNING_READS, load_tuning_reads, merge_reads

    found, sources = [], []
    if model and Path(model).is_dir():
        man = Path(model) / "r1probe_manifest.json"
        if (Path(model) / TUNING_READS).exists():
            found.append(load_tuning_reads(Path(model) / TUNING_READS))
            sources.append(str(Path(model) / TUNING_READS))
        elif man.exists():
            reads = json.loads(man.read_text("utf-8")).get("tuning_reads")
            if isinstance(reads, dict):
                found.append(reads)
                sources.append(str(man))
    if plan:
        try:
            d = json.loads(Path(plan).read_text("utf-8")).get("directions")
        except (OSError, json.JSONDecodeError, AttributeError):
            d = None
        if d:
            rec = (Path(d) if Path(d).is_dir() else Path(d).parent) / TUNING_READS
            if rec.exists():
                found.append(load_tuning_reads(rec))
                sources.append(str(rec))
    for r in records:
        found.append(load_tuning_reads(r))
        sources.append(str(r))
    return merge_reads(*found), sources


def tuning_overlap(benches: Sequence[Bench], reads: dict, **item_kw) -> str:
    """Check the items ``benches`` would report (:func:`bench_items` with ``item_kw``) against the tuning
    record ``reads``: returns ``tuning/report overlap: 0 items``, or raises
    :class:`r1probe.data.partitions.TuningOverlapError` naming the overlapping items."""
    from r1probe.data.partitions import check_overlap

    reported = {b.name: [it.id for it in bench_items(b, **item_kw)] for b in benches}
    return check_overlap(reads, reported)


def run_bench(bench: Bench, engine, judge=None, out_dir: str | os.PathLike | None = None, *,
              limit: int | None = None, seed: int | None = 0, data_root: str | None = None,
              max_new_tokens: int | None = None, chunk_size: int = 16, judge_reasoning: bool = False,
              answers: dict | None = None, progress: Callable[[str], None] | None = None,
              items: list | None = None, split: str | None = None,
              split_seed: int | None = None, samples: int = 1,
              unchanged_from: str | os.PathLike | None = None) -> tuple[list[dict], dict]:
    """Evaluate one benchmark; returns ``(records, summary_entry)``.

    With ``out_dir`` records are appended to ``out_dir/<bench>.jsonl`` as they are judged and
    ids already there are skipped (resume). ``items`` overrides the benchmark's loader.
    ``split``: ``report``, ``dev`` or ``all``/None, the partition of :mod:`r1probe.data.partitions`
    evaluated (before the ``limit`` sample); ``split_seed``: the seed of seeded splits (the built-in
    prompt sets' train/val/test; default ``seed``, else 0). ``samples``: generations per item, each its
    own record (:mod:`r1probe.eval.sampling`), with per-item aggregates in the entry's ``samples``
    (generating kinds only).

    ``unchanged_from``: the eval folder of the same model without the engine's plan, same settings. When
    every step of the plan is conditional, an item whose prompt leaves every gate closed runs the unedited
    model, so its record is copied from there (:func:`unchanged_records`) instead of generated again; each
    record of such a run says whether its gates opened (``gate_open``).
    """
    kind = get_kind(bench.kind)
    if kind.needs_judge and judge is None:
        from r1probe.eval.judges.refusal import default_judge

        judge = default_judge()
    t_start = time.perf_counter()
    split_seed = split_seed if split_seed is not None else (seed or 0)
    all_items = bench_items(bench, limit=limit, seed=seed, data_root=data_root, split=split, split_seed=split_seed,
                            items=items)
    if not all_items:
        raise DataError(f"{bench.name}: no items")
    samples = samples if kind.generates else 1  # a scored kind (MCQ log-likelihood, NLL) gives one answer
    all_items = S.expand_samples(all_items, samples)
    rf = ResultsFile(Path(out_dir) / f"{bench.name}.jsonl") if out_dir is not None else None
    mnt = max_new_tokens or bench.max_new_tokens
    fp = _fingerprint(bench, engine, judge, mnt, judge_reasoning, answers, data_root) \
        if rf is not None or unchanged_from is not None else None
    if rf is not None:
        _check_fingerprint(Path(out_dir) / f"{bench.name}.config.json", fp, progress)
    done = rf.load() if rf else {}
    todo = [it for it in all_items if it.id not in done]
    opts = ChunkOptions(mnt, judge_reasoning, answers)
    new: dict[str, dict] = {}
    gate_open: dict[str, bool] = {}
    if unchanged_from is not None and todo and samples == 1:
        kept, gate_open = unchanged_records(bench, engine, todo, unchanged_from, fp, progress)
        if kept:
            if rf:
                rf.append(list(kept.values()))
            new.update(kept)
            todo = [it for it in todo if it.id not in kept]
    for s, chunk in S.sample_chunks(todo, chunk_size):
        recs = S.tag_records(kind.run_chunk(bench, S.engine_for(engine, s), judge, chunk, opts), chunk)
        for r in recs:
            if r["id"] in gate_open:
                r["gate_open"] = gate_open[r["id"]]
        if rf:
            rf.append(recs)
        for r in recs:
            new[r["id"]] = r
        if progress:
            progress(f"{bench.name}: {len(done) + len(new)}/{len(all_items)}")
    recs = [done.get(it.id) or new[it.id] for it in all_items]
    has_gold = kind.has_gold(recs)
    sees = bool(getattr(judge, "sees_harm", False))
    entry = M.summarize(kind.metric_records(recs, has_gold), kind.metrics(judge_sees_harm=sees, has_gold=has_gold))
    entry["n"] = len(recs)
    entry["kind"] = bench.kind
    kind.finish(entry, recs, judge=judge, judge_reasoning=judge_reasoning, has_gold=has_gold)
    gen = [r.get("gen_s") for r in recs if isinstance(r.get("gen_s"), (int, float)) and not math.isnan(r["gen_s"])]
    entry["timing"] = {"this_run_s": round(time.perf_counter() - t_start, 2), "new": len(new),
                       "resumed": len(all_items) - len(new),
                       "mean_gen_s_per_item": (sum(gen) / len(gen)) if gen else None}
    checked = [r for r in recs if "gate_open" in r]
    if checked:
        entry["gates"] = {"checked": len(checked), "open": sum(bool(r["gate_open"]) for r in checked),
                          "from_unchanged": sum("unchanged_from" in r for r in checked)}
    entry["config"] = {"limit": limit, "seed": seed, "split": split or "all", "split_seed": split_seed,
                       "max_new_tokens": mnt if kind.generates else None,
                       "judge": judge.describe() if judge is not None and kind.needs_judge else None,
                       "judge_reasoning": judge_reasoning, "data": _data_hashes(bench, data_root)}
    if samples > 1:
        entry["config"]["samples"] = samples
        entry["samples"] = S.aggregate(recs, samples)
    return recs, entry


def unchanged_records(bench: Bench, engine, items: Sequence, src: str | os.PathLike, fp: dict,
                      progress: Callable[[str], None] | None = None) -> tuple[dict[str, dict], dict[str, bool]]:
    """``(records, gate_open)``: ``engine``'s plan checked on each item's prompt (``engine.gates_open``, the
    prompt as ``bench``'s kind formats it), and for the items whose gates all stay closed the record of the
    same item in ``src/<bench>.jsonl``, the unedited model's run, marked ``gate_open: False`` and
    ``unchanged_from``. Nothing is taken (``({}, {})``) unless the plan's every step is conditional, the engine
    is greedy and ``src`` was made with ``fp`` less the plan (same model, weights, budget, judge, data)."""
    kind = get_kind(bench.kind)
    form = getattr(kind, "prompt_form", None)
    check = getattr(engine, "gates_open", None)
    if form not in ("reply", "closed-think") or check is None or getattr(engine, "temperature", 0) != 0:
        return {}, {}
    src = Path(src)
    cfg = src / f"{bench.name}.config.json"
    try:
        theirs = json.loads(cfg.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        theirs = None
    eng = fp.get("engine") if isinstance(fp, dict) else None
    mine = {**fp, "engine": {k: v for k, v in eng.items() if k != "plan"}} if isinstance(eng, dict) else None
    if mine is None or "plan" not in eng or theirs != mine:
        if progress and theirs is not None and isinstance(eng, dict) and "plan" in eng:
            progress(f"{bench.name}: {src} was made with other settings; every item is generated")
        return {}, {}
    opened = check([(it.text, it.history) for it in items], close_think=form == "closed-think")
    if opened is None:
        return {}, {}
    gate = {it.id: bool(o) for it, o in zip(items, opened)}
    theirs_recs = ResultsFile(src / f"{bench.name}.jsonl").load()
    kept = {it.id: {**theirs_recs[it.id], "gate_open": False, "unchanged_from": str(src)}
            for it in items if not gate[it.id] and it.id in theirs_recs}
    if progress:
        progress(f"{bench.name}: gates open on {sum(gate.values())}/{len(items)} prompts; "
                 f"{len(kept)} closed ones take the unedited model's records")
    return kept, gate


def _data_hashes(bench: Bench, data_root) -> dict:
    from r1probe.data.benchmarks import data_root as droot

    root = droot(data_root)
    out = {}
    for rel in bench.files:
        p = root / rel
        if bench.name.startswith("chisafety"):  # its data root may be the CHiSafetyBench folder itself
            from r1probe.data.chisafety import resolve_root

            p = resolve_root(data_root) / rel.split("/", 1)[1]
        out[rel] = sha256_file(p) if p.exists() else "missing"
    return out


def evaluate(benches: Sequence[Bench], engine, judge=None, out_dir: str | os.PathLike | None = None, *,
             manifest: dict | None = None, progress=None, **kw) -> dict:
    """Run several benchmarks one after another; write (merge into) ``out_dir/summary.json`` and
    ``summary.md`` after each."""
    return evaluate_together([(b, engine, kw) for b in benches], judge, out_dir, manifest=manifest,
                             progress=progress, share=False)


def evaluate_together(jobs: Sequence[tuple], judge=None, out_dir: str | os.PathLike | None = None, *,
                      manifest: dict | None = None, progress=None, share: bool = True) -> dict:
    """:func:`evaluate` of several benchmarks, each job ``(bench, engine, run_bench keyword arguments)``
    with its own engine (e.g. its own token budget). With ``share`` and engines that can share calls
    (:func:`r1probe.eval.gang.can_share`) the benchmarks run side by side, their generations meeting in
    shared engine calls, and ``summary.json`` is written once all have ended (records are appended as
    each chunk is judged, so an interrupted run resumes); otherwise one after another, the summary
    written after each."""
    from r1probe.eval.gang import can_share, run_together

    if not jobs:
        raise R1ProbeError("no benchmarks to evaluate")
    summary: dict = {}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if (out / "summary.json").exists():
            try:
                summary = json.loads((out / "summary.json").read_text("utf-8"))
            except json.JSONDecodeError:
                summary = {}
    engines = [e for _, e, _ in jobs]
    if share and can_share(engines):
        gen = [i for i, (b, _, _) in enumerate(jobs) if get_kind(b.kind).generates]
        entries = run_together(engines, lambda i, eng: run_bench(jobs[i][0], eng, judge, out, progress=progress,
                                                                 **jobs[i][2])[1], lead=gen[0] if gen else 0,
                               progress=progress)
        summary.update({b.name: entry for (b, _, _), entry in zip(jobs, entries)})
        if out is not None:
            _write_summary(out, summary, engines[0], judge, manifest)
    else:
        for b, eng, kw in jobs:
            _, summary[b.name] = run_bench(b, eng, judge, out, progress=progress, **kw)
            if out is not None:
                _write_summary(out, summary, eng, judge, manifest)
    if out is None:
        summary["manifest"] = _manifest(engines[0], judge, manifest)
    return summary


def _manifest(engine, judge, extra):
    m = base_manifest(engine=engine.describe(), judge=judge.describe() if judge is not None else None)
    if extra:
        m.update(extra)
    return m


def _write_summary(out: Path, summary: dict, engine, judge, extra) -> None:
    summary["manifest"] = _manifest(engine, judge, extra)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))


def _fmt(v, digits=3):
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}"


def summary_markdown(summary: dict) -> str:
    lines = ["| benchmark | n | metric | value | 95% CI |", "|---|---:|---|---:|---|"]
    for name, e in summary.items():
        if name == "manifest" or not isinstance(e, dict) or "metrics" not in e:
            continue
        for m, v in e["metrics"].items():
            ci = e.get("ci95", {}).get(m)
            lines.append(f"| {name} | {e['n']} | {m} | {_fmt(v)} | "
                         f"{'[' + _fmt(ci[0]) + ', ' + _fmt(ci[1]) + ']' if ci else ''} |")
    notes = [f"- {k}: {e['notes']}" for k, e in summary.items() if isinstance(e, dict) and e.get("notes")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def load_run(path: str | os.PathLike) -> tuple[dict, dict[str, dict[str, dict]]]:
    """A run folder (or its summary.json) → (summary, {bench: {id: record}})."""
    p = Path(path)
    folder = p.parent if p.is_file() else p
    sj = folder / "summary.json"
    if not sj.exists():
        raise R1ProbeError(f"{folder}: no summary.json")
    summary = json.loads(sj.read_text("utf-8"))
    recs = {}
    for name in summary:
        if name == "manifest":
            continue
        f = folder / f"{name}.jsonl"
        if f.exists():
            recs[name] = ResultsFile(f).load()
    return summary, recs


def compare_runs(a: str | os.PathLike, b: str | os.PathLike, B: int = 1000, seed: int = 0) -> list[dict]:
    """Metric differences (B − A) per shared benchmark, paired over shared ids: rates by exact McNemar with
    Newcombe's paired interval, means by the paired bootstrap (:func:`r1probe.eval.metrics.paired_compare`)."""
    from r1probe.eval.benches import BENCHES

    sa, ra = load_run(a)
    sb, rb = load_run(b)
    rows = []
    for name in sa:
        if name == "manifest" or name not in sb or name not in ra or name not in rb:
            continue
        bench = BENCHES.get(name)
        if bench is None:
            continue
        sees = all(s[name].get("metrics", {}).get("HR") is not None for s in (sa, sb))
        has_gold = get_kind(bench.kind).has_gold(list(ra[name].values()))
        for m, f in metrics_for(bench, sees, has_gold).items():
            res = M.paired_compare(ra[name], rb[name], f, B=B, seed=seed)
            rows.append({"bench": name, "metric": m, **res})
        for m, f in (("unterminated_rate", M.unterminated_rate),):
            if any("terminated" in r for r in ra[name].values()):
                rows.append({"bench": name, "metric": m, **M.paired_bootstrap(ra[name], rb[name], f, B=B, seed=seed)})
    return rows


def compare_markdown(rows: list[dict]) -> str:
    lines = ["| benchmark | metric | n paired | A | B | B − A | 95% CI (paired) | McNemar p |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        ci = r.get("ci95")
        lines.append(f"| {r['bench']} | {r['metric']} | {r['n']} | {_fmt(r['a'])} | {_fmt(r['b'])} | "
                     f"{_fmt(r['diff'])} | {'[' + _fmt(ci[0]) + ', ' + _fmt(ci[1]) + ']' if ci else ''} | "
                     f"{_fmt(r.get('p_mcnemar'))} |")
    return "\n".join(lines) + "\n"
