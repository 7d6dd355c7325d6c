import json
import math

from r1probe.analysis.tables import fmt_ci, to_latex, to_markdown, write_table


def test_fmt_ci():
    assert fmt_ci(0.42, (0.33, 0.52)) == "0.420 [0.330, 0.520]"
    assert fmt_ci(float("nan")) == "n/a" and fmt_ci(None) == "n/a"
    assert fmt_ci(0.5, (math.nan, 1.0)) == "0.500"


def test_markdown_and_latex_shapes():
    md = to_markdown(["model", "RR-1"], [["base", "0.42"], ["a|b", "0.9"]])
    assert md.splitlines()[1] == "|---|---|" and "a\\|b" in md
    tex = to_latex(["model", "RR_1 %"], [["base & co", "0.42"]], caption="拒答率")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "RR\\_1 \\%" in tex and "base \\& co" in tex


def test_write_table_with_sidecar(tmp_path):
    src = tmp_path / "summary.json"
    src.write_text("{}")
    paths = write_table(["a", "b"], [[1, 2]], tmp_path / "t", sources=[src], caption="c")
    side = json.loads(open(paths["sidecar"]).read())
    assert side["sources"][0]["sha256"] and open(paths["csv"]).read().splitlines() == ["a,b", "1,2"]
