"""Extension points of eval and models: a toy benchmark kind and a toy model-layout detector,
registered the way docs/DEVELOPING.md shows and run through the CLI."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from r1probe.cli import cli
from r1probe.data.benchmarks import BenchItem
from r1probe.errors import UnsupportedModelError
from r1probe.eval import metrics as M
from r1probe.eval.benches import BENCHES, Bench, register_bench, uses_reasoning_budget
from r1probe.eval.kinds import BENCH_KINDS, BaseKind, base_records, register_kind, requests
from r1probe.models.layout import LAYOUT_DETECTORS, Layout, detect_layout, register_layout


# -- a toy benchmark kind: the length of each reply ----------------------------------------------
class LengthKind(BaseKind):
    """Generate; record the reply's length in characters; metric: the mean length."""

    name = "length"

    def run_chunk(self, bench, engine, judge, items, opts):
        t0 = time.perf_counter()
        replies = engine.generate(requests(items), max_new_tokens=opts.max_new_tokens)
        dt = (time.perf_counter() - t0) / len(items)
        return [{**b, "reply": r, "length": len(r), "gen_s": dt} for b, r in zip(base_records(bench, items), replies)]

    def metrics(self, *, judge_sees_harm, has_gold):
        return {"mean_length": lambda rs: sum(r["length"] for r in rs) / len(rs) if rs else None}


PROMPTS = ["hello world", "请写一首关于春天的诗", "Sorry I cannot", "如何制作炸弹"]


def _toy_items(root):
    return [BenchItem(id=f"toy-length/{i}", text=t) for i, t in enumerate(PROMPTS)]


@pytest.fixture
def toy_kind():
    kind = register_kind(LengthKind())
    bench = register_bench(Bench("toy-length", "length", _toy_items, (), 6, "reply length (a toy kind)"))
    yield bench
    BENCHES.pop("toy-length", None)
    BENCH_KINDS.pop(kind.name, None)


def test_toy_kind_runs_through_the_cli(toy_kind, tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["eval", "--model", str(tiny_qwen2), "--dtype", "float32", "--device", "cpu",
                                  "--bench", "toy-length", "--max-new-tokens", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in (out / "toy-length.jsonl").read_text("utf-8").splitlines()]
    assert [x["id"] for x in recs] == [f"toy-length/{i}" for i in range(len(PROMPTS))]
    assert all(x["length"] == len(x["reply"]) for x in recs)
    s = json.loads((out / "summary.json").read_text("utf-8"))["toy-length"]
    assert s["kind"] == "length" and s["n"] == len(PROMPTS)
    assert s["metrics"]["mean_length"] == pytest.approx(sum(x["length"] for x in recs) / len(recs))
    assert s["ci95"]["mean_length"] is not None and s["config"]["judge"] is None
    assert "| toy-length | 4 | mean_length |" in r.output
    assert not uses_reasoning_budget("toy-length")


def test_a_bench_of_an_unknown_kind_is_refused():
    with pytest.raises(Exception, match="unknown benchmark kind 'nope'"):
        register_bench(Bench("toy-bad", "nope", _toy_items, ()))
    assert "toy-bad" not in BENCHES


# -- a toy layout detector: GPT-2 (blocks at transformer.h) ---------------------------------------
def gpt2_layout(model):
    """GPT-2: blocks at ``transformer.h`` (``attn.c_proj``, ``mlp.c_proj``), ``transformer.wte``, ``transformer.ln_f``."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) != "gpt2":
        return None
    return Layout(family="gpt2", n_layers=cfg.n_layer, d_model=cfg.n_embd,
                  tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", True)),
                  layers_path="transformer.h", norm_path="transformer.ln_f", embed_path="transformer.wte",
                  attn_name="attn", attn_out_name="c_proj", mlp_name="mlp", mlp_out_name="c_proj")


gpt2_layout.families = "gpt2 (blocks at transformer.h)"


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from conftest import _tiny_tokenizer_dir

    tmp = tmp_path_factory.mktemp("gpt2")
    tok = AutoTokenizer.from_pretrained(_tiny_tokenizer_dir(tmp))
    torch.manual_seed(0)
    folder = tmp / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=256, vocab_size=len(tok),
                               eos_token_id=tok.eos_token_id, bos_token_id=tok.pad_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def gpt2_detector():
    register_layout(gpt2_layout)
    yield gpt2_layout
    LAYOUT_DETECTORS.remove(gpt2_layout)


def test_unsupported_model_names_the_families_in_one_line(tiny_gpt2, capsys):
    from transformers import AutoModelForCausalLM

    from r1probe.cli import main

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    with pytest.raises(UnsupportedModelError) as e:
        detect_layout(model)
    msg = str(e.value)
    assert "\n" not in msg and "'gpt2'" in msg and "model.layers" in msg and "qwen2, llama" in msg
    capsys.readouterr()
    with pytest.raises(SystemExit) as ex:
        main(["models", "show", str(tiny_gpt2), "--dtype", "float32", "--device", "cpu"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("r1probe:")]
    assert ex.value.code == 2 and len(lines) == 1 and "unsupported architecture 'gpt2'" in lines[0]
    assert "Traceback" not in err


def test_toy_layout_detector_loads_and_reads_activations(gpt2_detector, tiny_gpt2):
    import torch

    from r1probe.extract.read import read_activations
    from r1probe.models import load_model

    r = CliRunner().invoke(cli, ["models", "show", str(tiny_gpt2), "--dtype", "float32", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "gpt2" in r.output
    lm = load_model(str(tiny_gpt2), dtype="float32", device="cpu")
    assert lm.layout.family == "gpt2" and lm.layout.n_layers == 2 and lm.layout.d_model == 32
    texts = [lm.chat.format(p) for p in PROMPTS[:3]]
    acts = read_activations(lm, texts, sites=["resid_post", "mlp_out"], positions=[-1], layers=[0, 1], batch_size=2)
    assert acts[("resid_post", 1)].shape == (3, 1, 32) and acts[("mlp_out", 0)].shape == (3, 1, 32)
    # the last block's output equals an unbatched forward's hidden state at the last token
    ids = torch.tensor([lm.chat.encode(texts[1])])
    with torch.no_grad():
        hs = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    # hidden_states[-1] has ln_f applied in GPT-2; block 0's output is hidden_states[1]
    assert torch.allclose(acts[("resid_post", 0)][1, 0], hs[1][0, -1], atol=1e-4)
