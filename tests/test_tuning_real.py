"""The edit search on the embedded model: two trials on tiny sets, the export loads (slow)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_edit_search_real_two_trials(real_lm, shared_data, tmp_path):
    import copy

    from r1probe.tuning import edit_search, search_settings

    lm = copy.deepcopy(real_lm)
    cfg = search_settings(n_harmful=4, n_borderline=4, n_nll=2, max_new_tokens=12, batch_size=8, trials=2,
                          budget_min=10, dir_layers=(12,), n_direction=8, report_borderline=4, report_harmful=4,
                          report_nll=2, report_max_new_tokens=12, plans=False)
    res = edit_search(lm, cfg, out=tmp_path / "export", work=tmp_path / "work", data_root=shared_data,
                      log_fn=lambda m: None)
    rep = json.loads((res.work / "report.json").read_text("utf-8"))
    assert rep["splits"]["harmful_report"] == 4 and "chosen edit" in rep["report"]
    assert (res.work / "tradeoff.png").exists() and (res.work / "front.md").exists()
    code = ("import sys, torch\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
            "assert t.chat_template\nprint(m(input_ids=torch.tensor([[1, 2, 3]])).logits.shape)")
    r = subprocess.run([sys.executable, "-c", code, str(res.export)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
