"""The study's numbers on the embedded model: a small fixed run of ``r1probe run`` chooses the same cell
and produces the same per-sample replies as the recorded reference (``tests/fixtures/study_reference.json``).

The fixture holds item ids, replies and verdicts only (no benchmark prompt text: CHiSafetyBench has no
licence and is never vendored), and the hardware it was recorded on: greedy replies depend on the dtype and the
CPU's bfloat16 kernels, so on other hardware the test is skipped. Rebuild it from a run folder with
``python tests/test_pipeline_reference.py RUN_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "study_reference.json"
#: the fixed run (r1probe run flags; the data root is the default one)
ARGV = ["--n-train", "8", "--n-val", "4", "--benches", "chisafety-refusal,zh-harmless,gsm8k",
        "--limits", "chisafety-refusal=4,zh-harmless=4,gsm8k=2", "--edits", "orthogonalize",
        "--plans", "conditional", "--separability.n", "0", "--threads", "1",
        # the plan's closed-gate rows generated, as when the reference was recorded
        "--no-eval.reuse-closed-gates"]
VERDICTS = ("refusal", "label", "outcome", "correct", "pred", "terminated", "thought")


def record(run_dir: str | Path) -> dict:
    """Chosen cell and per-variant, per-bench ``[{id, reply, verdicts...}]`` of a study run folder."""
    run_dir = Path(run_dir)
    chosen = json.loads((run_dir / "probe" / "stage.json").read_text())["info"]["chosen"]
    evals: dict = {}
    for d in sorted(p for p in (run_dir / "eval").iterdir() if p.is_dir()):
        for f in sorted(d.glob("*.jsonl")):
            rows = [json.loads(x) for x in f.read_text("utf-8").splitlines() if x.strip()]
            evals.setdefault(d.name, {})[f.stem] = [
                {"id": r["id"], "reply": r.get("reply"), **{k: r[k] for k in VERDICTS if k in r}}
                for r in sorted(rows, key=lambda r: r["id"])]
    return {"argv": ARGV, "hardware": hardware(), "chosen": {k: chosen[k] for k in ("key", "layer", "pos")},
            "evals": evals}


def hardware() -> dict:
    """What decides the replies' floating-point rounding: the auto dtype and the CPU flags behind it (in float32
    also the linear layers' kernel, ``r1probe.models.kernels``)."""
    from r1probe.models import kernels
    from r1probe.models.loader import auto_dtype

    dtype, why = auto_dtype("cpu")
    out = {"dtype": str(dtype).removeprefix("torch."), "why": why}
    if dtype == torch.float32:
        out["linear_kernel"] = kernels.choose(torch.nn.Module(), "cpu", torch.float32)[0]
    return out


@pytest.mark.slow
def test_study_reproduces_the_reference(tmp_path, shared_data):
    from r1probe.cli import main

    ref = json.loads(FIXTURE.read_text("utf-8"))
    if hardware() != ref["hardware"]:
        pytest.skip(f"the reference was recorded with {ref['hardware']}; this machine runs {hardware()} "
                    "(greedy replies depend on the dtype and the CPU's bfloat16 kernels)")
    if not (Path(shared_data) / "chisafetybench").exists() and "chisafety-refusal" in ref["evals"].get("base", {}):
        pytest.skip("CHiSafetyBench is not in the shared data folder")
    main(["run", *ARGV, "--out", str(tmp_path / "study")])
    got = record(tmp_path / "study")
    assert got["chosen"] == ref["chosen"]
    assert set(got["evals"]) == set(ref["evals"])
    for variant, benches in ref["evals"].items():
        for bench, rows in benches.items():
            assert [r["id"] for r in got["evals"][variant][bench]] == [r["id"] for r in rows], (variant, bench)
            assert [r["reply"] for r in got["evals"][variant][bench]] == [r["reply"] for r in rows], (variant, bench)


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(record(sys.argv[1]), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE}")
