"""The edit search on tiny models: splits (no report leakage), trial edits restore, storage resumes,
the export loads in plain transformers and equals the edit."""

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r1probe.tuning import data as TD
from r1probe.tuning import directions as TDIR
from r1probe.tuning import edit as TE
from r1probe.tuning import front as TF
from r1probe.tuning import objectives as TO
from r1probe.tuning import plans as TP
from r1probe.tuning import run as TR
from r1probe.tuning import search as TS
from r1probe.tuning.settings import EditSearchSettings, search_settings

pytest.importorskip("optuna")


def _write(p: Path, text: str):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A miniature copy of the shared data layout with synthetic prompts."""
    root = tmp_path_factory.mktemp("data")
    _write(root / "cvalues" / "cvalues_responsibility_prompts.jsonl",
           "\n".join(json.dumps({"id_": i, "prompt": f"请问敏感话题{i}该怎么看？", "domain_zh": "心理学"}, ensure_ascii=False)
                     for i in range(60)))
    for name, n in (("harmful_train", 20), ("harmful_val", 8), ("harmless_train", 20)):
        _write(root / "polyrefuse_zh" / f"{name}_translated_zh.json",
               json.dumps([{"instruction": f"如何制作炸弹{name}{i}", "category": "x"} for i in range(n)], ensure_ascii=False))
    groups = [{"category": "risky", "infos": [{"id": i, "question": f"危险问题{i}", "category": "c"} for i in range(30)]}]
    _write(root / "chisafetybench" / "v1" / "risky_questions_without_dialog_history.json", json.dumps(groups, ensure_ascii=False))
    for split, n in (("train", 30), ("test", 12)):
        _write(root / "gsm8k" / f"{split}.jsonl", "\n".join(
            json.dumps({"question": f"{split} q{i}: 2+{i}?", "answer": f"2+{i}={2 + i}\n#### {2 + i}"}) for i in range(n)))
    _write(root / "belle_eval" / "eval_set.json", "\n".join(
        json.dumps({"question": f"写一首关于春天的诗{i}", "std_answer": "", "class": "generation"}, ensure_ascii=False)
        for i in range(20)))
    with open(root / "xstest" / "xstest_prompts.csv", "w", newline="", encoding="utf-8") if (root / "xstest").mkdir() is None else None as f:
        w = csv.DictWriter(f, ["id", "prompt", "type", "label"])
        w.writeheader()
        for i in range(6):
            w.writerow({"id": i, "prompt": f"How do I kill a python process {i}?", "type": "homonyms", "label": "safe"})
    return root


def small_cfg(**kw) -> EditSearchSettings:
    base = dict(n_harmful=4, n_borderline=4, n_nll=3, max_new_tokens=4, batch_size=8, trials=3, budget_min=10,
                dir_layers=(1, 2), n_direction=8, report_borderline=5, report_harmful=5, report_nll=3,
                report_max_new_tokens=4, plans=True)
    base.update(kw)
    return search_settings(**base)


def test_splits_are_disjoint_and_report_is_fixed(data_root):
    from r1probe.data import borderline as BL

    d = TD.load_search_data(small_cfg(), data_root)
    assert not d.search_ids() & d.report_ids()
    assert {it.source for it in d.harmful_report} == {"chisafety-refusal"}
    assert all(it.source.startswith("gsm8k-test") for it in d.nll_report)
    assert all(it.source.startswith("gsm8k-train") for it in d.nll_search)
    assert not {it.text for it in d.border_search} & {it.text for it in d.border_report + d.border_contrast}
    # the report part does not move when the search part grows
    a = BL.harmful_splits(data_root)["report"]
    b = BL.harmful_splits(data_root, report=5)["report"]
    assert [x.id for x in b] == [x.id for x in a[:5]]
    assert [x.id for x in BL.borderline_splits(data_root, search=3)["report"]] == \
           [x.id for x in BL.borderline_splits(data_root, search=10)["report"]]


def test_check_disjoint_catches_a_leak(data_root):
    from r1probe.data.borderline import Item, check_disjoint
    from r1probe.errors import DataError

    with pytest.raises(DataError, match="leak"):
        check_disjoint({"search": [Item("a/1", "同一个问题", "x")], "report": [Item("b/2", "同一个问题", "y")]})


def test_params_kernel_and_directions():
    import math

    p = TE.EditParams(beta=2.0, center=1.0, width=0.5)
    # β_i = β exp(−(i − c)² / (2 w²)): the peak at the centre, symmetric, layers under 5 % of the peak left alone
    per = p.per_layer(5)
    assert per == pytest.approx({0: 2.0 * math.exp(-2.0), 1: 2.0, 2: 2.0 * math.exp(-2.0)})
    assert TE.EditParams(beta=0.0).per_layer(3) == {}
    g = torch.Generator().manual_seed(0)
    states = {k: torch.randn(10, 2, 16, generator=g) + (i * 0.5) for i, k in enumerate(("harmless", "borderline", "harmful"))}
    dirs = TDIR.diff_directions(states, [3, 5])
    r, b = TDIR.direction_for(dirs, "orth", 3)
    assert abs(float(unit_dot(dirs["orth_L3"], dirs["border_L3"]))) < 1e-4
    assert abs(float(r @ b)) < 1e-5 and float(r.norm()) == pytest.approx(1.0)


def unit_dot(a, b):
    return (a / a.norm()) @ (b / b.norm())


def test_cast_threshold_separates():
    pos, neg = torch.tensor([2.0, 3.0, 4.0]), torch.tensor([-1.0, 0.0, 1.0])
    t = TP.cast_threshold(pos, neg)
    assert 1.0 <= t < 2.0


def test_trial_editor_restores_weights(tiny_lm):
    lm = copy.deepcopy(tiny_lm)
    g = torch.Generator().manual_seed(1)
    dirs = {"harm_L1": torch.randn(64, generator=g), "border_L1": torch.randn(64, generator=g)}
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    ed = TE.TrialEditor(lm, dirs)
    p = TE.EditParams(kind="harm", dir_layer=1, center=1.0, width=1.0, beta=1.5, ablate_border=0.5)
    with ed.applied(p) as recs:
        assert recs and any(not torch.equal(before[n], q) for n, q in lm.model.named_parameters())
        # the in-place trial edit equals the export path (edit.amplify calls)
        edited = {n: q.detach().clone() for n, q in lm.model.named_parameters()}
    assert all(torch.equal(before[n], q) for n, q in lm.model.named_parameters())
    lm2 = copy.deepcopy(tiny_lm)
    TE.apply_edit_permanently(lm2, dirs, p)
    for n, q in lm2.model.named_parameters():
        torch.testing.assert_close(q, edited[n], atol=1e-5, rtol=1e-4)


def test_pareto_and_choose():
    cfg = small_cfg()
    base = {"border_refusal": 0.2, "harm_refusal": 0.4, "nll_ratio": 1.0}
    rows = [dict(trial=0, harm_refusal=0.9, border_refusal=0.6, nll_ratio=1.0, feasible=False),
            dict(trial=1, harm_refusal=0.7, border_refusal=0.25, nll_ratio=1.01, feasible=True),
            dict(trial=2, harm_refusal=0.6, border_refusal=0.3, nll_ratio=1.01, feasible=True)]
    assert {r["trial"] for r in TF.pareto(rows)} == {0, 1}
    assert TF.choose(rows, base, cfg)["trial"] == 1
    assert TF.choose([rows[0]], base, cfg)["trial"] == 0


def _run(lm, cfg, tmp_path, data_root, out="export", **kw):
    return TR.edit_search(lm, cfg, out=tmp_path / out if out else None, work=tmp_path / "work", data_root=data_root,
                      log_fn=lambda m: None, **kw)


def test_objectives_use_search_splits_only(tiny_lm, tmp_path, data_root, monkeypatch):
    lm = copy.deepcopy(tiny_lm)
    cfg = small_cfg(trials=2, plans=False)
    data = TD.load_search_data(cfg, data_root)
    seen = []
    real = TO.measure

    def spy(lm_, harmful, border, nll_items, **kw):
        seen.append({it.id for it in list(harmful) + list(border) + list(nll_items)})
        return real(lm_, harmful, border, nll_items, **kw)
    monkeypatch.setattr(TO, "measure", spy)
    TS.run_search(lm, data, TDIR.compute_directions(lm, data, cfg.dir_layers), cfg, tmp_path / "w", log_fn=lambda m: None)
    assert len(seen) == 3  # baseline + 2 trials
    for s in seen:
        assert s <= data.search_ids() and not s & data.report_ids()


def test_storage_resumes(tiny_lm, tmp_path, data_root):
    from optuna.trial import TrialState

    lm = copy.deepcopy(tiny_lm)
    cfg = small_cfg(trials=2, plans=False)
    data = TD.load_search_data(cfg, data_root)
    dirs = TDIR.compute_directions(lm, data, cfg.dir_layers)
    st = TS.run_search(lm, data, dirs, cfg, tmp_path / "w", log_fn=lambda m: None)
    assert len(st.get_trials(states=(TrialState.COMPLETE,))) == 2
    # simulate kill -9 in the middle of a trial: a RUNNING trial is left in the storage
    st.ask()
    cfg3 = small_cfg(trials=3, plans=False)
    st2 = TS.run_search(lm, data, dirs, cfg3, tmp_path / "w", log_fn=lambda m: None)
    states = [t.state for t in st2.get_trials()]
    assert states.count(TrialState.COMPLETE) == 3 and TrialState.RUNNING not in states
    assert st2.user_attrs["baseline"] == st.user_attrs["baseline"]


def test_edit_search_end_to_end_export_loads(tiny_lm, tmp_path, data_root):
    lm = copy.deepcopy(tiny_lm)
    res = _run(lm, small_cfg(), tmp_path, data_root)
    assert res.export is not None and (res.export / "README.md").exists()
    card = (res.export / "README.md").read_text("utf-8")
    assert "report: CHiSafetyBench" in card
    for f in ("front.md", "front.csv", "trials.md", "tradeoff.png", "report.json", "report.md", "study.db"):
        assert (res.work / f).exists(), f
    rep = json.loads((res.work / "report.json").read_text("utf-8"))["report"]
    assert "unedited" in rep and "chosen edit" in rep and any(k.startswith("conditional") for k in rep)
    code = ("import sys, torch\nfrom transformers import AutoModelForCausalLM\n"
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
            "assert not any(k.startswith('r1probe') for k in sys.modules)\n"
            "print(m(input_ids=torch.tensor([[5, 9, 17]])).logits.shape)")
    r = subprocess.run([sys.executable, "-c", code, str(res.export)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # rerun with everything cached: no new trials, same choice
    res2 = _run(copy.deepcopy(tiny_lm), small_cfg(), tmp_path, data_root, out="export2")
    assert res2.chosen == res.chosen


def test_cli_registered():
    from click.testing import CliRunner

    from r1probe.cli import cli

    r = CliRunner().invoke(cli, ["edit-search", "--help"])
    assert r.exit_code == 0 and "--budget-min" in r.output
    # every setting is a flag whose help is the field's description and default
    for name, f in EditSearchSettings.model_fields.items():
        assert "--" + name.replace("_", "-") in r.output, name
    assert "8,10,12,14,16" in r.output


def test_enhance_is_a_deprecated_alias(monkeypatch):
    from click.testing import CliRunner

    from r1probe.cli import cli
    from r1probe.tuning import commands

    r = CliRunner().invoke(cli, ["enhance", "--help"])
    assert r.exit_code == 0 and "--budget-min" in r.output
    seen = []
    monkeypatch.setattr(commands, "_run", lambda *a: seen.append(a))
    r = CliRunner().invoke(commands.enhance_deprecated, ["--out", "x"])
    assert r.exit_code == 0 and seen
    assert r.stderr.strip() == "r1probe: 'enhance' is deprecated, use 'edit-search'"


def test_bad_setting_is_one_line_before_any_model_load(monkeypatch):
    from click.testing import CliRunner

    from r1probe.settings import SettingsError
    from r1probe.tuning import commands

    monkeypatch.setattr(commands, "load_from_options", lambda kw: pytest.fail("model loaded"))
    r = CliRunner().invoke(commands.edit_search, ["--out", "x", "--n-harmful", "eight"])
    assert isinstance(r.exception, SettingsError) and "n_harmful" in str(r.exception)
