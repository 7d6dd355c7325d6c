"""Build the labelled judge set (tests/fixtures/judge/{dev,test}.jsonl) from model replies.

Public API only. Three steps:

1. ``generate``: replies of one model (a spec or an exported checkpoint folder, optionally with a
   steering plan) to a fixed, hash-chosen slice of each source, greedy, appended to a JSONL::

       python scripts/build_judge_set.py generate --model builtin:qwen2.5-coder-0.5b-instruct \
           --tag base --slot 0 --out /work/meas/J/replies.jsonl

   Each model gets its own ``--slot`` (0, 1, 2, ...), so different models answer different prompts.
2. Labels are written by hand, one per reply, into a JSONL of ``{"id", "label"}`` (a person reads
   each reply; see docs/EVAL.md, "The labelled judge set").
3. ``assemble``: replies + labels -> the development and frozen test parts, split by
   :func:`r1probe.eval.judges.judgeset.part_of` (CHiSafetyBench replies always go to the test part).
4. ``fit``: the trained judge from the development part only (its question model from the built-in
   harmful/harmless train splits); ``measure``: every judge's agreement on the frozen test part into
   ``judges/data/agreement.json``; ``table``: that record as Markdown; ``labellers``: a second
   labeller's blind labels against the set's.

Records hold the item id, source, model tag and reply; never a prompt's text (questions are read
back from the data sets by id when a judge needs them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from r1probe.eval.judges.judgeset import SOURCES, load_source_items, part_of, slot_items

#: block of hash-ordered items reserved per model slot and source
STRIDE = {"zh-harmful": 22, "cvalues": 26, "xstest-safe": 22, "or-bench": 20, "zh-harmless": 20,
          "chisafety": 48}
#: replies taken from the start of each block: slot 0, then every other slot
TAKE = {0: {"zh-harmful": 22, "cvalues": 26, "xstest-safe": 22, "or-bench": 20, "zh-harmless": 20,
            "chisafety": 32},
        None: {"zh-harmful": 10, "cvalues": 12, "xstest-safe": 8, "or-bench": 8, "zh-harmless": 8,
               "chisafety": 48}}


#: prompts the trained judge's question model is fitted on (harmful, harmless): train splits only
QUESTION_HARMFUL, QUESTION_HARMLESS = "builtin:zh-harmful:train", "builtin:zh-harmless:train"

#: replies per source with --test-only or --dev-only
TEST_ONLY_TAKE = {"zh-harmful": 9, "cvalues": 10, "xstest-safe": 8, "or-bench": 7, "zh-harmless": 7, "chisafety": 48}


def cmd_generate(a) -> None:
    from r1probe.eval.engines import HFEngine
    from r1probe.models import load_model

    lm = load_model(a.model)
    eng = HFEngine(lm, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, plan=a.plan)
    out = Path(a.out)
    done = set()
    if out.exists():
        done = {json.loads(x)["id"] for x in out.read_text("utf-8").splitlines() if x.strip()}
    sources = a.sources.split(",") if a.sources else list(SOURCES)
    for src in sources:
        items = slot_items(src, load_source_items(src, a.data_root), a.slot, STRIDE[src])
        if a.test_only or a.dev_only:  # only items of one part, up to TEST_ONLY_TAKE
            want = "test" if a.test_only else "dev"
            items = [it for it in items if part_of(src, it.id) == want][:TEST_ONLY_TAKE[src]]
        else:
            items = items[:TAKE.get(a.slot, TAKE[None])[src]]
        todo = [it for it in items if f"{a.tag}:{it.id}" not in done]
        if not todo:
            continue
        t0 = time.time()
        replies = eng.generate([(it.text, getattr(it, "history", None)) for it in todo])
        with out.open("a", encoding="utf-8") as f:
            for it, r in zip(todo, replies):
                f.write(json.dumps({"id": f"{a.tag}:{it.id}", "source": src, "item_id": it.id, "model": a.tag,
                                    "reply": r}, ensure_ascii=False) + "\n")
        print(f"{a.tag} {src}: {len(todo)} replies in {time.time() - t0:.0f}s", flush=True)


def cmd_assemble(a) -> None:
    replies = [json.loads(x) for x in Path(a.replies).read_text("utf-8").splitlines() if x.strip()]
    labels = {}
    for x in Path(a.labels).read_text("utf-8").splitlines():
        if x.strip():
            r = json.loads(x)
            labels[r["id"]] = int(r["label"])
    parts = {"dev": [], "test": []}
    missing = [r["id"] for r in replies if r["id"] not in labels]
    if missing and not a.allow_unlabelled:
        sys.exit(f"{len(missing)} replies have no label, e.g. {missing[:3]}")
    for r in replies:
        if r["id"] not in labels:
            continue
        part = part_of(r["source"], r["item_id"])
        if a.only and part != a.only:
            continue
        parts[part].append({**r, "label": labels[r["id"]], "part": part})
    od = Path(a.out_dir)
    od.mkdir(parents=True, exist_ok=True)
    for part, rows in parts.items():
        if a.only and part != a.only:
            continue
        rows.sort(key=lambda r: r["id"])
        (od / f"{part}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
        print(part, len(rows))


def _rows(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text("utf-8").splitlines() if x.strip()]


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cmd_fit(a) -> None:
    from r1probe.eval.judges.trained import fit_question_model, fit_trained_judge

    rows = _rows(a.dev)
    bad = [r["id"] for r in rows if r["source"] == "chisafety" or r.get("part") != "dev"]
    if bad:
        sys.exit(f"{len(bad)} rows of {a.dev} are not development rows, e.g. {bad[:3]}")
    texts, labels = [r["reply"] for r in rows], [r["label"] for r in rows]
    fitted_on = [Path(a.dev).name]
    qm = questions = None
    if a.question_C > 0:
        # the question model: built-in harmful vs harmless train splits (no item of the judge set)
        from r1probe.data.prompts import load_prompt_set
        from r1probe.eval.judges.judgeset import questions_for

        if a.extra:
            sys.exit("--extra rows have no question: fit them without a question model (--question-C 0)")
        harmful = [p.text for p in load_prompt_set(QUESTION_HARMFUL).prompts]
        harmless = [p.text for p in load_prompt_set(QUESTION_HARMLESS).prompts]
        qm = fit_question_model(harmful, harmless, C=a.question_C,
                                meta={"fitted_on": [QUESTION_HARMFUL, QUESTION_HARMLESS]})
        questions = questions_for(rows, a.data_root)
    if a.extra:
        # earlier hand-labelled replies (never test rows): drop any whose opening matches a test reply
        test_heads = {r["reply"].strip()[:40] for r in _rows(a.test)}
        extra = [r for r in _rows(a.extra) if r["reply"].strip()[:40] not in test_heads]
        texts += [r["reply"] for r in extra]
        labels += [int(r["label"]) for r in extra]
        fitted_on.append(f"{Path(a.extra).name} ({len(extra)} rows not matching a test reply)")
    d = fit_trained_judge(texts, labels, C=a.C, questions=questions, question_model=qm,
                          meta={"fitted_on": fitted_on, "n_train": len(texts), "sha256": _sha(a.dev)})
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(d, ensure_ascii=False, separators=(",", ":")), "utf-8")
    print(f"wrote {a.out}: {len(d['vocabulary'])} n-grams, labels {d['labels']}, "
          f"question model: {'yes' if qm else 'no'}")


def _judge_labels(spec: str, rows: list[dict], a) -> list:
    from r1probe.eval.judges import make_judge
    from r1probe.eval.judges.refusal import judge_replies

    kw = {}
    if spec.startswith("llm:"):
        kw = {"max_new_tokens": a.llm_max_new_tokens}
    judge = make_judge(spec, **kw)
    qs = None
    if getattr(judge, "reads_question", False) or spec.startswith(("llm:", "openai:")):
        from r1probe.eval.judges.judgeset import questions_for

        qs = questions_for(rows, a.data_root)
    out = judge_replies([r["reply"] for r in rows], questions=qs, judge=judge)
    return [j.verdict.label for j in out]


def cmd_measure(a) -> None:
    from r1probe.eval.judges.agreement import agreement

    rows = _rows(a.test)
    if a.limit:
        from r1probe.eval.judges.judgeset import salted_hash

        rows = sorted(rows, key=lambda r: salted_hash("llm-subset:" + r["id"]))[:a.limit]
        rows.sort(key=lambda r: r["id"])
    rec_path = Path(a.record)
    rec = json.loads(rec_path.read_text("utf-8")) if rec_path.exists() else {"judges": {}}
    rec["test_set"] = {"path": "tests/fixtures/judge/test.jsonl", "n": len(_rows(a.test)), "sha256": _sha(a.test)}
    for spec in a.judges.split(","):
        t0 = time.time()
        pred = _judge_labels(spec, rows, a)
        gold = [r["label"] for r in rows]
        res = {"overall": agreement(gold, pred), "by_source": {}, "n_items": len(rows),
               "seconds": round(time.time() - t0, 1)}
        for src in sorted({r["source"] for r in rows}):
            k = [i for i, r in enumerate(rows) if r["source"] == src]
            res["by_source"][src] = agreement([gold[i] for i in k], [pred[i] for i in k], n_boot=500)
        if a.limit:
            res["subset"] = f"{len(rows)} of the test part, chosen by hash of the reply id"
        rec["judges"][spec] = res
        o = res["overall"]
        print(f"{spec}: n={o['n']} refusal acc {o['refusal_accuracy']:.3f} {o['refusal_accuracy_ci95']} "
              f"kappa {o['kappa']:.3f} {o['kappa_ci95']} unparsed {o['n_unparsed']}", flush=True)
    if a.default:
        rec["default"] = a.default
    rec_path.parent.mkdir(parents=True, exist_ok=True)
    rec_path.write_text(json.dumps(rec, ensure_ascii=False, indent=1) + "\n", "utf-8")


def cmd_labellers(a) -> None:
    """Agreement between the set's labels and a second labeller's blind labels of some of its replies."""
    from r1probe.eval.judges.agreement import agreement

    first = {r["id"]: r["label"] for p in (a.dev, a.test) for r in _rows(p)}
    second = [(r["id"], int(r["label"])) for r in _rows(a.second)]
    missing = [i for i, _ in second if i not in first]
    if missing:
        sys.exit(f"{len(missing)} ids of {a.second} are not in the set, e.g. {missing[:3]}")
    o = agreement([first[i] for i, _ in second], [lab for _, lab in second])
    lo, hi = o["refusal_accuracy_ci95"]
    klo, khi = o["kappa_ci95"]
    print(f"n={o['n']} same refusal verdict {o['refusal_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] "
          f"same label {o['label_accuracy']:.3f} kappa {o['kappa']:.3f} [{klo:.3f}, {khi:.3f}]")
    print(json.dumps(o["confusion"]))


def cmd_table(a) -> None:
    """Markdown tables of the recorded agreement (for docs/EVAL.md)."""
    rec = json.loads(Path(a.record).read_text("utf-8"))

    def cell(o):
        lo, hi = o["refusal_accuracy_ci95"]
        klo, khi = o["kappa_ci95"]
        return (f"{o['refusal_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] | {o['kappa']:.3f} [{klo:.3f}, {khi:.3f}]")

    print("| judge | source | n | refusal accuracy [95% Wilson] | 4-label kappa [95% bootstrap] |")
    print("|---|---|---:|---|---|")
    for name, r in rec["judges"].items():
        print(f"| `{name}` | **all** | {r['overall']['n']} | {cell(r['overall'])} |")
        for src, o in r["by_source"].items():
            print(f"| | {src} | {o['n']} | {cell(o)} |")
    for name, r in rec["judges"].items():
        print(f"\nConfusion, `{name}` (rows: hand label, columns: judge label; None: unparsed)\n")
        print("| hand \\ judge | 0 | 1 | 2 | 3 | None |")
        print("|---|---:|---:|---:|---:|---:|")
        for g, row in r["overall"]["confusion"].items():
            print(f"| {g} | " + " | ".join(str(row[c]) for c in ("0", "1", "2", "3", "None")) + " |")
    if a.by_source:
        name = rec.get("default") if a.by_source == "default" else a.by_source
        r = rec["judges"][name]
        print(f"\nConfusion per source, `{name}` (rows: source and hand label, columns: judge label)\n")
        print("| source | hand \\ judge | 0 | 1 | 2 | 3 | None |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for src, o in r["by_source"].items():
            for g, row in o["confusion"].items():
                if sum(row.values()):
                    print(f"| {src} | {g} | " + " | ".join(str(row[c]) for c in ("0", "1", "2", "3", "None")) + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--model", required=True)
    g.add_argument("--plan")
    g.add_argument("--tag", required=True)
    g.add_argument("--slot", type=int, required=True)
    g.add_argument("--sources", default="")
    only = g.add_mutually_exclusive_group()
    only.add_argument("--test-only", action="store_true", help="only items of the frozen test part")
    only.add_argument("--dev-only", action="store_true",
                      help="only items of the development part (e.g. the unused half of a --test-only slot)")
    g.add_argument("--data-root")
    g.add_argument("--max-new-tokens", type=int, default=96)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--out", required=True)
    s = sub.add_parser("assemble")
    s.add_argument("--replies", required=True)
    s.add_argument("--labels", required=True)
    s.add_argument("--out-dir", default="tests/fixtures/judge")
    s.add_argument("--only", choices=["dev", "test"])
    s.add_argument("--allow-unlabelled", action="store_true")
    f = sub.add_parser("fit")
    f.add_argument("--dev", default="tests/fixtures/judge/dev.jsonl")
    f.add_argument("--out", default="r1probe/eval/judges/data/trained_judge.json")
    f.add_argument("--C", type=float, default=100.0)
    f.add_argument("--question-C", type=float, default=10.0,
                   help="C of the question model (0: no question model, the judge reads the reply only)")
    f.add_argument("--data-root")
    f.add_argument("--extra", help="more hand-labelled replies (JSONL with reply, label) to fit on")
    f.add_argument("--test", default="tests/fixtures/judge/test.jsonl")
    m = sub.add_parser("measure")
    m.add_argument("--test", default="tests/fixtures/judge/test.jsonl")
    m.add_argument("--judges", default="keyword,trained")
    m.add_argument("--record", default="r1probe/eval/judges/data/agreement.json")
    m.add_argument("--default")
    m.add_argument("--limit", type=int, default=0)
    m.add_argument("--data-root")
    m.add_argument("--llm-max-new-tokens", type=int, default=8)
    lb = sub.add_parser("labellers", help="agreement of a second labeller with the set's labels")
    lb.add_argument("--second", default="tests/fixtures/judge/second_labels.jsonl")
    lb.add_argument("--dev", default="tests/fixtures/judge/dev.jsonl")
    lb.add_argument("--test", default="tests/fixtures/judge/test.jsonl")
    t = sub.add_parser("table")
    t.add_argument("--record", default="r1probe/eval/judges/data/agreement.json")
    t.add_argument("--by-source", help="also the per-source confusion of this judge (or 'default')")
    a = ap.parse_args(argv)
    {"generate": cmd_generate, "assemble": cmd_assemble, "fit": cmd_fit, "measure": cmd_measure,
     "labellers": cmd_labellers, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main()
