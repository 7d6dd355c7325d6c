import json

import pytest

from r1probe.analysis.positions import compare_positions
from r1probe.errors import R1ProbeError
from r1probe.extract import extract_activations
from tests.test_analysis_compare import _sets


def test_positions_inside_and_after_the_think_prefix(tiny_lm, tmp_path):
    stores = {name: extract_activations(tiny_lm, _sets(), positions="post", think=think, out_dir=tmp_path / name,
                                        progress=False)
              for name, think in (("reply start", None), ("inside <think>", "open"), ("after </think>", "closed"))}
    m = {n: s.manifest for n, s in stores.items()}
    assert m["inside <think>"]["post_instruction_suffix"].endswith("<think>\n")
    assert m["after </think>"]["post_instruction_suffix"].endswith("</think>\n\n")
    assert m["inside <think>"]["post_instruction_tokens"] > m["reply start"]["post_instruction_tokens"]
    # the last token differs, so do the activations there
    a, b = stores["reply start"].get(1, -1), stores["inside <think>"].get(1, -1)
    assert (a - b).abs().max() > 1e-4
    ref = stores["reply start"]
    d = ref.mean(1, -1, "harmful") - ref.mean(1, -1, "harmless")
    res = compare_positions(stores, reference="reply start", direction=d, direction_layer=1, out_dir=tmp_path / "p",
                            estimators=("mean_diff",))
    assert res["layers"] == [0, 1, 2]
    assert res["stores"]["reply start"]["cosine_to_reference"] == [pytest.approx(1.0)] * 3
    other = res["stores"]["inside <think>"]["cosine_to_reference"]
    assert len(other) == 3 and all(-1 <= c <= 1 for c in other) and min(other) < 0.999
    assert res["stores"]["reply start"]["chosen"]["cosine_to_direction"] == pytest.approx(1.0, abs=1e-5)
    assert len(res["stores"]["after </think>"]["curves"]["mean_diff"]["auroc"]) == 3
    saved = json.loads((tmp_path / "p" / "positions.json").read_text())
    assert saved["result"]["reference"] == "reply start"
    for k in ("probe_auroc", "cosine"):
        assert (tmp_path / "p" / res["figures"][k]["png"].split("/")[-1]).exists()


def test_positions_of_different_prompts_are_refused(tiny_lm, tmp_path):
    sets = _sets()
    a = extract_activations(tiny_lm, sets, positions="last", out_dir=tmp_path / "a", progress=False)
    b = extract_activations(tiny_lm, [sets[0], sets[1][:6]], positions="last", think="open", out_dir=tmp_path / "b",
                            progress=False)
    with pytest.raises(R1ProbeError, match="different prompts"):
        compare_positions({"a": a, "b": b}, reference="a", out_dir=tmp_path / "c")
