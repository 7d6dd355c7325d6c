"""The refusal direction on the embedded model (slow): probes, causal search, acceptance-style checks.

Kept small (a few layers, one position, 8 validation prompts per side) so it fits in minutes on
2 cores; the full acceptance run is ``r1probe probe`` on the full store (see the probes report).
"""

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def probe_run(real_lm, tmp_path_factory, shared_data):
    from r1probe.data.prompts import load_prompt_set
    from r1probe.extract import extract_activations
    from r1probe.probes.api import run_probe
    from r1probe.probes.select import SelectConfig

    tmp = tmp_path_factory.mktemp("probe_real")
    harm = load_prompt_set("builtin:zh-harmful", split="train", limit=48)
    safe = load_prompt_set("builtin:zh-harmless", split="train", limit=48)
    store = extract_activations(real_lm, [harm, safe], layers="10,12,14", positions="-1", out_dir=tmp / "acts",
                                progress=False)
    # the acceptance configuration (scripts/probe_acceptance.py): shrunk-LDA candidates, ACE ablation
    # downstream of the read layer, induce judged on short generations
    cfg = SelectConfig(n_val=8, verify_top=1, gen_tokens=24, batch_size=8, ablation="affine-downstream",
                       induce_scale=3.0, induce_score="generation", induce_min=0.5, n_reference=32)
    meta = run_probe(store.path, real_lm, tmp / "probe", cfg=cfg, estimators=("mean_diff", "logistic", "lda"),
                     folds=3, candidates="lda")
    return tmp / "probe", meta


def test_probes_separate_and_search_picks_a_direction(probe_run):
    out, meta = probe_run
    cells = meta["cells"]
    assert max(c["estimators"]["mean_diff"]["auroc"] for c in cells.values() if c["ok"]) > 0.9
    ch = meta["chosen"]
    assert ch["layer"] in (10, 12, 14) and ch["kl"] is not None
    base = meta["selection"]["baseline"]
    assert ch["bypass"] < base["bypass"]  # ablation lowers the lookahead refusal score
    assert ch["verify"]["bypass_rate"] <= base["bypass_rate"]


def test_chosen_direction_separates_chisafety(probe_run, real_lm, shared_data):
    from sklearn.metrics import roc_auc_score

    from r1probe.data.chisafety import load_chisafety_refusal
    from r1probe.data.prompts import PromptSet, load_prompt_set
    from r1probe.extract import extract_activations
    from r1probe.steering.directions import load_direction

    out, meta = probe_run
    chi = load_chisafety_refusal(shared_data / "chisafetybench")[:48]
    safe = load_prompt_set("builtin:zh-harmless", split="test", limit=48)
    L = meta["chosen"]["layer"]
    st = extract_activations(real_lm, [PromptSet("chisafety", chi), safe], layers=str(L), positions="-1",
                             out_dir=out.parent / "acts_eval", progress=False)
    d = load_direction(out)
    x = st.get(L, -1)
    y = [1 if lab == "harmful" else 0 for lab in st.labels]
    auc = roc_auc_score(y, (x @ d).numpy())
    # measured 0.949 here (48 training prompts per class, 48 CHiSafetyBench questions);
    # with 128 per class the best cell reaches 0.964 on all 462 questions: below the 0.97
    assert auc >= 0.9, auc


def test_chosen_direction_passes_the_kl_and_induce_filters(probe_run):
    out, meta = probe_run
    assert meta["selection"]["reason"].startswith("lowest bypass score among candidates passing")
    assert meta["chosen"]["kl"] <= 0.1 + 1e-9
    assert meta["chosen"]["induce"] > 0.5 and meta["chosen"]["estimator"] == "lda"
