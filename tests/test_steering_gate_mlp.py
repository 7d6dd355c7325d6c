"""The gate-mlp weight edit: inert padding, a silent/active gate, the closed form, the export and the CLI."""

import copy
import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from r1probe.cli import cli
from r1probe.errors import R1ProbeError
from r1probe.models import load_model
from r1probe.steering import save_directions
from r1probe.steering.edits import make_settings, run_edit
from r1probe.steering.edits import gate_mlp as G
from r1probe.steering.export import export_checkpoint

HARMFUL = ["如何制作炸弹", "作为 炸弹", "炸弹 world"]
BENIGN = ["请写一首诗", "hello", "system user"]
LAYER, LAM = 1, 3.0


def _ids(lm, prompts):
    """Left-padded chat-formatted batch of ``prompts``."""
    rows = [lm.chat.encode(lm.chat.format(p)) for p in prompts]
    n = max(map(len, rows))
    ids = torch.tensor([[0] * (n - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _logits(lm, ids, mask):
    pos = (mask.cumsum(-1) - 1).clamp_min(0)  # positions counted over real tokens, as the fit reads them
    with torch.no_grad():
        return lm.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


def _mlp_io(lm, ids, mask, layer=LAYER):
    """(MLP input, MLP output) at ``layer`` for every position of the batch."""
    got = {}
    mlp = lm.layout.mlp(lm.model, layer)
    h = mlp.register_forward_hook(lambda m, a, out: got.update(x=a[0].detach(), y=out.detach()))
    try:
        _logits(lm, ids, mask)
    finally:
        h.remove()
    return got["x"], got["y"]


@pytest.fixture(params=["qwen2", "llama"])
def tiny(request, tiny_qwen2, tiny_llama):
    return load_model(str(tiny_qwen2 if request.param == "qwen2" else tiny_llama), dtype="float32", device="cpu")


@pytest.fixture
def files(tmp_path):
    save_directions(tmp_path / "dirs" / "directions.safetensors",
                    {"chosen": torch.randn(64, generator=torch.Generator().manual_seed(0)),
                     "other": torch.randn(64, generator=torch.Generator().manual_seed(1))})
    harm = tmp_path / "harm.jsonl"
    harm.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in HARMFUL))
    ben = tmp_path / "ben.jsonl"
    ben.write_text("".join(json.dumps({"question": t, "std_answer": "春天 hello"}) + "\n" for t in BENIGN))
    return {"dirs": str(tmp_path / "dirs"), "harmful": str(harm), "benign": [str(ben)]}


def _settings(files, **kw):
    return {"layers": str(LAYER), "lam": LAM, "harmful": files["harmful"], "benign": files["benign"],
            "ridge": 1e-6, "null_energy": 0.999999, "threshold": 0.5, "width": 0.25, **kw}


def test_inert_padding_leaves_logits_unchanged(tiny):
    lm = copy.deepcopy(tiny)
    ids, mask = _ids(lm, HARMFUL + BENIGN)
    before = _logits(lm, ids, mask)
    k = lm.model.config.intermediate_size
    assert G.grow_mlps(lm, {}) == k + G.NEURONS == lm.model.config.intermediate_size
    for i in range(lm.layout.n_layers):
        assert lm.layout.mlp(lm.model, i).down_proj.weight.shape[1] == k + G.NEURONS
    assert (_logits(lm, ids, mask) - before).abs().max() < 1e-5


def test_closed_form_is_silent_below_and_saturates_above():
    g = torch.Generator().manual_seed(0)
    k, d = 32, 16
    c = torch.zeros(k)
    c[0] = 1.0
    a = torch.zeros(k)
    a[1] = 1.0
    r = torch.randn(d, generator=g)
    x = torch.randn(200, k, generator=g)
    x[:, 0] = 1.0  # the bias channel reads exactly 1
    x[:, 1] = torch.linspace(-2, 2, 200)  # the read score
    t, w, lam = 0.5, 0.25, 20.0
    delta = G.gate_delta(x, a, c, r, lam, t, w)
    s = x[:, 1]
    assert delta[s <= t].abs().max() < 1e-5
    assert (delta[s >= t + w] - lam * G.unit(r)).abs().max() < 1e-4
    between = (delta @ G.unit(r))[(s > t) & (s < t + w)]
    dip = 0.2785 * lam / G.SPAN  # silu's minimum is -0.2785: the ramp dips and overshoots by at most this
    assert (between >= -dip).all() and (between <= lam + dip).all()
    assert between[-1] > between[0] + 0.9 * lam


def test_bias_channel_fit_recovers_a_constant_direction():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=g)
    x[:, 3] = 2.0 + 1e-3 * torch.randn(500, generator=g)
    c = G.fit_bias_channel(x.mean(0), torch.cov(x.T), ridge=1e-6)
    b = x @ c
    assert abs(float(b.mean()) - 1) < 1e-4 and float(b.std()) < 1e-3


def test_gate_is_silent_below_its_threshold_and_active_above(tiny, files):
    base = tiny
    lm = copy.deepcopy(base)
    rec, = run_edit("gate-mlp", lm, files["dirs"], _settings(files))
    assert rec["op"] == "gate-mlp" and rec["layers"] == [LAYER] and rec["threshold"] == 0.5 and rec["lambda"] == LAM
    assert rec["intermediate_size"] == base.model.config.intermediate_size + 2 == lm.model.config.intermediate_size
    fit = rec["fit"][0]
    assert fit["harmful_open"] == 1.0 and fit["benign_above_threshold"] == 0.0
    r = G.unit(_direction(files))
    # per token at the gated layer: the MLP input is the same (earlier layers only gained inert neurons)
    ids, mask = _ids(lm, HARMFUL + BENIGN)
    x0, y0 = _mlp_io(base, ids, mask)
    x1, y1 = _mlp_io(lm, ids, mask)
    assert (x1 - x0).abs().max() < 1e-5
    mlp = lm.layout.mlp(lm.model, LAYER)
    a, c = _read_and_bias(mlp, rec)
    s_hat, b = G.read_scores(x0, a, c)
    # the construction is exact where the bias channel reads about 1 (its fit tokens; here a few others of the
    # tiny random model read less, where threshold and strength scale with b)
    real = mask.bool() & (b > 0.8)
    assert real.sum() >= mask.sum() - 3
    delta = y1 - y0
    below, above = real & (s_hat <= rec["threshold"]), real & (s_hat >= rec["threshold"] + rec["width"])
    assert below.sum() > 10 and above.sum() >= 6
    assert delta[below].abs().max() < 1e-5  # silent
    want = LAM * b[above].unsqueeze(-1) ** 2 * r  # active: the residual moves by lambda b^2 r^
    assert (delta[above] - want).abs().max() < 1e-3 * LAM
    # whole inputs: benign prompts (every token below threshold) give the same logits
    ids_b, mask_b = _ids(lm, BENIGN)
    assert (_logits(lm, ids_b, mask_b) - _logits(base, ids_b, mask_b)).abs().max() < 1e-5
    ids_h, mask_h = _ids(lm, HARMFUL)
    assert (_logits(lm, ids_h, mask_h) - _logits(base, ids_h, mask_h)).abs().max() > 1e-2


def _direction(files):
    from r1probe.steering.directions import DirectionSet

    return DirectionSet.load(files["dirs"]).get("chosen", 64)


def _read_and_bias(mlp, rec):
    """Recover ``a`` and ``c`` from the two new rows: ``c = up``, ``a = (g₁ + (β t + Z) c) / β``."""
    c = mlp.up_proj.weight[-1].detach().float()
    g1 = mlp.gate_proj.weight[-2].detach().float()
    beta = (G.SPAN + 2 * G.MARGIN) / rec["width"]
    return (g1 + (beta * rec["threshold"] + G.MARGIN) * c) / beta, c


def test_edit_equals_the_closed_form_added_at_run_time(tiny, files):
    """The grown MLP equals the unedited model plus ``gate_delta`` added to the layer's MLP output (a hook)."""
    base = tiny
    s = make_settings("gate-mlp", _settings(files))
    from r1probe.steering.directions import DirectionSet

    fitted = G.GateMlp().fit(base, DirectionSet.load(files["dirs"]), s, log=lambda m: None)
    lm = copy.deepcopy(base)
    G.GateMlp().apply(lm, fitted)
    v = fitted.data["layers"][LAYER]
    ids, mask = _ids(lm, HARMFUL + BENIGN)
    mlp = base.layout.mlp(base.model, LAYER)
    hook = mlp.register_forward_hook(lambda m, a, out: out + G.gate_delta(a[0], v["read"], v["bias"],
                                                                          fitted.direction, s.lam, s.threshold,
                                                                          s.width).to(out.dtype))
    try:
        ref = _logits(base, ids, mask)
    finally:
        hook.remove()
    edited = _logits(lm, ids, mask)
    assert (edited - ref).abs().max() < 1e-3
    assert (edited - _logits(base, ids, mask)).abs().max() > 1e-2


def test_read_key_reads_a_probe_direction(tiny, files):
    lm = copy.deepcopy(tiny)
    rec, = run_edit("gate-mlp", lm, files["dirs"], _settings(files, read_key="other", threshold=100.0))
    assert rec["read_key"] == "other" and "direction other" in rec["fit"][0]["read"]
    # score = d^ . h / rms(h) <= sqrt(d) = 8 < 100: the gate never opens
    ids, mask = _ids(lm, HARMFUL + BENIGN)
    assert (_logits(lm, ids, mask) - _logits(tiny, ids, mask)).abs().max() < 1e-5


def test_export_reloads_in_a_clean_process_with_stock_transformers(tiny, files, tmp_path):
    lm = copy.deepcopy(tiny)
    recs = run_edit("gate-mlp", lm, files["dirs"], _settings(files))
    out = export_checkpoint(lm, tmp_path / "export", edits=recs, directions_file=files["dirs"])
    ids, mask = _ids(lm, HARMFUL + BENIGN)
    want = _logits(lm, ids, mask)
    torch.save({"ids": ids, "mask": mask}, tmp_path / "inp.pt")
    code = ("import json, sys, torch\n"
            "from transformers import AutoModelForCausalLM\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(out)!r}, dtype=torch.float32)\n"
            f"inp = torch.load({str(tmp_path / 'inp.pt')!r})\n"
            "with torch.no_grad():\n"
            "    lo = m(input_ids=inp['ids'], attention_mask=inp['mask'],\n"
            "           position_ids=(inp['mask'].cumsum(-1) - 1).clamp_min(0)).logits\n"
            f"torch.save(lo, {str(tmp_path / 'lo.pt')!r})\n"
            "print(json.dumps({'size': m.config.intermediate_size, 'mods': [k for k in sys.modules if k.startswith('r1probe')]}))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info == {"size": tiny.model.config.intermediate_size + 2, "mods": []}
    assert (torch.load(tmp_path / "lo.pt") - want).abs().max() < 1e-5
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["intermediate_size"] == tiny.model.config.intermediate_size + 2 and "auto_map" not in cfg
    man = json.loads((out / "r1probe_manifest.json").read_text())
    e = man["edits"][0]
    assert (e["op"], e["layers"], e["lambda"], e["threshold"], e["width"]) == ("gate-mlp", [LAYER], LAM, 0.5, 0.25)


def test_cli_edit_exports_a_gate(tiny_qwen2, files, tmp_path):
    out = tmp_path / "gate"
    r = CliRunner().invoke(cli, ["edit", "--model", str(tiny_qwen2), "--dtype", "float32", "--device", "cpu",
                                 "--directions", files["dirs"], "--op", "gate-mlp", "--layer", "1,2", "--lam", "4",
                                 "--harmful", files["harmful"], "--benign", files["benign"][0],
                                 "--set", "threshold=0.6", "--set", "width=0.2", "--out", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    e = json.loads((out / "r1probe_manifest.json").read_text())["edits"][0]
    assert e["layers"] == [1, 2] and e["threshold"] == 0.6 and e["width"] == 0.2 and e["lambda"] == 4.0
    assert len(e["fit"]) == 2 and json.loads((out / "config.json").read_text())["intermediate_size"] == 130
    assert "gate-mlp" in (out / "README.md").read_text()


@pytest.mark.parametrize("args, msg", [
    (["--set", "width=0"], "width"),
    (["--lam", "-1"], "must be positive"),
    (["--beta", "2"], "--beta does not apply to --op gate-mlp"),
    (["--layer", "1", "--set", "read_key=nope"], "nope"),
    (["--layer", "7"], "out of range"),
])
def test_bad_settings_are_one_clear_line(tiny_qwen2, files, tmp_path, args, msg):
    r = CliRunner().invoke(cli, ["edit", "--model", str(tiny_qwen2), "--dtype", "float32", "--device", "cpu",
                                 "--directions", files["dirs"], "--op", "gate-mlp", "--harmful", files["harmful"],
                                 "--benign", files["benign"][0], *args, "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, R1ProbeError), r.output
    assert msg in str(r.exception) and "\n" not in str(r.exception)
    assert not (tmp_path / "x").exists()


def test_a_non_swiglu_model_is_refused(tiny):
    lm = copy.deepcopy(tiny)
    lm.model.config.hidden_act = "gelu"
    with pytest.raises(R1ProbeError, match="needs a SwiGLU MLP"):
        G.swiglu_parts(lm, 0)


@pytest.mark.slow
def test_real_model_gate_moves_a_harmful_prompt_and_not_a_harmless_one(real_lm, tmp_path):
    """The embedded model, gate at layer 12 fitted on 32 + 32 built-in train prompts: a held-out harmful prompt's
    last-token residual after block 12 moves along r̂, a harmless one's stays put; the export reloads."""
    from r1probe.data.prompts import load_prompt_set
    from r1probe.extract.read import read_activations

    harm = [p.text for p in load_prompt_set("builtin:zh-harmful", split="train").sample(32, seed=0).prompts]
    safe = [p.text for p in load_prompt_set("builtin:zh-harmless", split="train").sample(32, seed=0).prompts]
    (tmp_path / "h.jsonl").write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in harm))
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in safe))
    acts = read_activations(real_lm, [real_lm.chat.format(p) for p in harm + safe], sites=["resid_pre"],
                            positions=[-1], layers=[12], batch_size=16)[("resid_pre", 12)][:, 0]
    r = acts[:32].mean(0) - acts[32:].mean(0)
    save_directions(tmp_path / "dirs" / "directions.safetensors", {"chosen": r})
    probe = ["如何制作炸弹？请给出详细步骤。", "请写一首关于春天的诗。"]
    texts = [real_lm.chat.format(p) for p in probe]

    def after_12(lm):
        return read_activations(lm, texts, sites=["resid_post"], positions=[-1], layers=[12])[("resid_post", 12)][:, 0]

    before = after_12(real_lm)
    lm = copy.copy(real_lm)
    lm.model = copy.deepcopy(real_lm.model)
    lam = 20.0
    recs = run_edit("gate-mlp", lm, tmp_path / "dirs", {"layers": "12", "lam": lam, "harmful": str(tmp_path / "h.jsonl"),
                                                       "benign": [str(tmp_path / "s.jsonl")], "threshold": 0.5,
                                                       "width": 0.25}, log=lambda m: None)
    fit = recs[0]["fit"][0]
    assert 0.8 < fit["bias_min"] and fit["bias_max"] < 1.2
    moved = after_12(lm) - before
    along = moved @ G.unit(r)
    assert along[0] > 0.5 * lam and moved[1].abs().max() < 0.05 * lam, (along, moved[1].abs().max())
    out = export_checkpoint(lm, tmp_path / "export", edits=recs, directions_file=str(tmp_path / "dirs"))
    ids = lm.chat.encode(texts[0])
    with torch.no_grad():
        want = lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    torch.save({"ids": ids, "want": want}, tmp_path / "inp.pt")
    code = ("import torch\nfrom transformers import AutoModelForCausalLM\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(out)!r}, dtype=torch.{str(lm.model.dtype).split('.')[-1]})\n"
            f"d = torch.load({str(tmp_path / 'inp.pt')!r})\n"
            "with torch.no_grad():\n    lo = m(input_ids=torch.tensor([d['ids']])).logits[0, -1].float()\n"
            "print(float((lo - d['want']).abs().max()), m.config.intermediate_size)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    diff, size = res.stdout.split()
    # the same dtype as this process's model (float32 on a CPU without native bfloat16 matmul)
    assert float(diff) < 0.1 and int(size) == real_lm.model.config.intermediate_size + 2


def test_the_mlp_in_site_reads_what_the_mlp_reads(tiny):
    from r1probe.extract.read import read_activations

    ids, mask = _ids(tiny, BENIGN)
    x, _ = _mlp_io(tiny, ids, mask)
    got = read_activations(tiny, [tiny.chat.format(p) for p in BENIGN], sites=["mlp_in"], positions=[-1],
                           layers=[LAYER])[("mlp_in", LAYER)][:, 0]
    assert (got - x[:, -1]).abs().max() < 1e-5
