"""The benchmark-kind registry (r1probe.eval.kinds) and the bench helpers built on it."""

import pytest

from r1probe.errors import R1ProbeError
from r1probe.eval.benches import BENCHES, uses_reasoning_budget
from r1probe.eval.kinds import BENCH_KINDS, BenchKind, get_kind


def test_every_bench_kind_is_registered():
    assert list(BENCH_KINDS) == ["refusal", "overrefusal", "mcq", "mcq-gen", "math", "nll"]
    for b in BENCHES.values():
        assert isinstance(get_kind(b.kind), BenchKind)
    assert get_kind("refusal").needs_judge and get_kind("overrefusal").needs_judge
    assert not get_kind("mcq").generates and not get_kind("nll").generates and get_kind("mcq-gen").generates


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(R1ProbeError, match="unknown benchmark kind 'nope'; known: refusal, overrefusal"):
        get_kind("nope")


def test_reasoning_budget_is_the_maths_benches():
    assert {n for n in BENCHES if uses_reasoning_budget(n)} == {"gsm8k", "math500", "cmath"}
    with pytest.raises(R1ProbeError, match="unknown benchmark"):
        uses_reasoning_budget("gsm9k")
