"""Several benchmarks' generations in shared engine calls (``r1probe.eval.gang``)."""

import json
import threading

import pytest

from r1probe.errors import R1ProbeError
from r1probe.eval import runner
from r1probe.eval.benches import get_bench
from r1probe.eval.engines import HFEngine
from r1probe.eval.gang import Gang, can_share, run_together
from r1probe.eval.judges import KeywordJudge

BENCHES = {"chisafety-refusal": 6, "gsm8k": 3, "gsm8k-nll": 4, "safetybench-zh": 3, "cmath": 3}


def _jobs(lm, data_root, budgets):
    return [(get_bench(b), HFEngine(lm, max_new_tokens=budgets[b], batch_size=4),
             dict(limit=n, seed=0, data_root=data_root, max_new_tokens=budgets[b], chunk_size=4))
            for b, n in BENCHES.items()]


def _records(out, bench):
    return [{k: r[k] for k in ("id", "reply", "nll", "pred") if k in r}
            for r in map(json.loads, (out / f"{bench}.jsonl").read_text("utf-8").splitlines())]


def test_benches_together_give_the_records_of_benches_one_by_one(tmp_path, tiny_lm, shared_data):
    """Five benches of four kinds, two token budgets: shared calls (float32) give every record the
    sequential run gives, in fewer engine calls, and one summary with every bench."""
    budgets = {b: (7 if b in ("gsm8k", "cmath") else 3) for b in BENCHES}
    seq = tmp_path / "seq"
    for b, eng, kw in _jobs(tiny_lm, str(shared_data), budgets):
        runner.run_bench(b, eng, KeywordJudge(), seq, **kw)
    calls = []
    orig = HFEngine.generate_many

    def counting(self, c, **kw):
        calls.append([len(r) for r, _, _ in c])
        return orig(self, c, **kw)
    HFEngine.generate_many = counting
    said: list[str] = []
    try:
        together = tmp_path / "tog"
        summary = runner.evaluate_together(_jobs(tiny_lm, str(shared_data), budgets), KeywordJudge(), together,
                                           progress=said.append)
    finally:
        HFEngine.generate_many = orig
    for b in BENCHES:
        assert sorted(_records(together, b), key=lambda r: r["id"]) == sorted(_records(seq, b), key=lambda r: r["id"]), b
    # chisafety's 6 items in chunks of 4, gsm8k's and cmath's 3: two shared calls, the first with three benches
    assert calls[0] == [4, 3, 3] and len(calls) == 2
    assert "generate: 10/10" in said and "generate: 2/2" in said  # the shared calls' progress
    assert set(json.loads((together / "summary.json").read_text())) >= set(BENCHES) | {"manifest"}
    assert summary["gsm8k-nll"]["metrics"]["mean_nll"] > 0


def test_engines_that_differ_do_not_share(tiny_lm, tiny_llama):
    from r1probe.models import load_model

    tiny_llama_lm = load_model(str(tiny_llama), dtype="float32")
    a = HFEngine(tiny_lm, max_new_tokens=3)
    assert can_share([a, HFEngine(tiny_lm, max_new_tokens=9, batch_size=2)])
    assert not can_share([a, HFEngine(tiny_llama_lm, max_new_tokens=3)])
    assert not can_share([a, HFEngine(tiny_lm, max_new_tokens=3, temperature=0.7)])
    sampling = HFEngine(tiny_lm, max_new_tokens=3, temperature=0.7)
    assert not can_share([sampling, sampling])  # each sample has its own seed: never shared
    assert not can_share([a])
    with pytest.raises(R1ProbeError, match="cannot share"):
        run_together([a, HFEngine(tiny_llama_lm)], lambda i, e: None)


def test_an_error_reaches_every_waiting_member_and_nobody_hangs():
    """The shared call fails: each member's generate raises it; a member failing on its own leaves
    without blocking the others."""

    class Broken:
        max_new_tokens = 2

        def generate_many(self, calls):
            raise RuntimeError("engine broke")

    gang = Gang(Broken(), 3)
    errors = []

    def member(i):
        try:
            if i == 2:
                raise ValueError("own failure")
            gang.member(i, Broken()).generate([("x", None)])
        except Exception as e:  # noqa: BLE001
            errors.append(type(e).__name__)
        finally:
            gang.leave()
    ts = [threading.Thread(target=member, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in ts)
    assert sorted(errors) == ["RuntimeError", "RuntimeError", "ValueError"]
