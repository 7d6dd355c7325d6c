"""Screening of R1-student recipes on dev prompts: does a greedy reply open and close ``<think>``?

    python scripts/student_recipe_screen.py --name clause32 --recipe '{"keypoint": "clause", "keypoint_chars": 32}' \
        --cap 384 --out runs/student-screen

Builds the student of ``StudentRecipe`` with the ``--recipe`` overrides (a recipe equal to a cached build is
reused; otherwise it is built into ``OUT/students/NAME``), then generates greedily until ``</think>`` or
``--cap`` new tokens (``r1probe.eval.budget.closing_positions``) on dev prompts the recipe did not train on:
PolyRefuse-zh harmful val (up to 64), zh-harmless val (48, hash order) and GSM8K train (32, hash order).
CHiSafetyBench is not read. Writes ``OUT/NAME.json`` (share of replies that open and close the reasoning
within 128 / 192 / 256 / cap tokens, per group), ``OUT/NAME.replies.jsonl`` and ``OUT/NAME.tuning_reads.json``
(every item read).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--recipe", default="{}", help="StudentRecipe fields to override, as JSON.")
    ap.add_argument("--cap", type=int, default=384)
    ap.add_argument("--out", default="runs/student-screen")
    a = ap.parse_args()

    from r1probe.data.benchmarks import MATH_SUFFIX_EN
    from r1probe.data.partitions import reads_of, write_tuning_reads
    from r1probe.distill.student import StudentRecipe, build_student, student_dir
    from r1probe.eval.budget import closing_positions
    from r1probe.models.loader import load_model
    from r1probe.pipeline.settings import load_settings
    from r1probe.pipeline.stages import dev_prompt_groups
    from r1probe.provenance import atomic_write_json, atomic_write_text

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = replace(StudentRecipe(), **json.loads(a.recipe))
    t0 = time.time()
    cached = student_dir(recipe)
    folder = cached if (cached / "student.json").exists() else build_student(recipe, dest=out / "students" / a.name)
    build_s = time.time() - t0
    trained = {t.id for t in recipe.traces()}
    groups = dev_prompt_groups(load_settings(env={}, flags={}), 64, trained)  # the budget stage's dev prompts
    groups = {"harmful": groups["harmful"], "harmless": groups["harmless"][:48], "gsm8k": groups["gsm8k"][:32]}
    items = [(g, it) for g, its in groups.items() for it in its]
    write_tuning_reads(out / f"{a.name}.tuning_reads.json", reads_of(it.id for _, it in items))
    lm = load_model(str(folder))
    t0 = time.time()
    pos, replies = closing_positions(lm, [it.text + (MATH_SUFFIX_EN if g == "gsm8k" else "") for g, it in items],
                                     cap=a.cap)
    res = {"name": a.name, "recipe": json.loads(a.recipe), "recipe_sha256": recipe.key(), "folder": str(folder),
           "build_s": round(build_s, 1), "generate_s": round(time.time() - t0, 1), "cap": a.cap}
    budgets = sorted({128, 192, 256, a.cap})

    def rates(ps, rs):
        return {"n": len(ps), "opens": sum(r.lstrip().startswith("<think>") for r in rs) / len(rs),
                **{f"closes_within_{b}": sum(1 for p in ps if p is not None and 0 < p <= b) / len(ps)
                   for b in budgets}}

    for g in groups:
        res[g] = rates([p for (gg, _), p in zip(items, pos) if gg == g],
                       [r for (gg, _), r in zip(items, replies) if gg == g])
    res["all"] = rates(pos, replies)
    atomic_write_json(out / f"{a.name}.json", res)
    atomic_write_text(out / f"{a.name}.replies.jsonl", "".join(
        json.dumps({"group": g, "id": it.id, "closing_position": p, "reply": r}, ensure_ascii=False) + "\n"
        for (g, it), p, r in zip(items, pos, replies)))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
