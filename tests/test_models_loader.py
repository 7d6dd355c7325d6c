import pytest
import torch
from transformers import AutoModelForCausalLM

from r1probe.errors import R1ProbeError, UnsupportedModelError
from r1probe.models import load_model


@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_llama"])
def test_saved_tiny_models_load_with_identical_logits(fixture, request, monkeypatch):
    folder = request.getfixturevalue(fixture)
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 23, 42, 7]])
    packed = load_model(str(folder), dtype="float32", device="cpu")  # the CPU kernel auto picks
    monkeypatch.setenv("R1PROBE_CPU_LINEAR", "mkl")  # transformers' own kernel: the same numbers, bit for bit
    lm = load_model(str(folder), dtype="float32", device="cpu")
    assert lm.provenance["linear_kernel"] == "mkl"
    with torch.no_grad():
        assert torch.equal(ref(ids).logits, lm.model(ids).logits)
        torch.testing.assert_close(packed.model(ids).logits, ref(ids).logits, rtol=1e-5, atol=1e-5)
    assert lm.layout.family == ("qwen2" if fixture == "tiny_qwen2" else "llama")
    assert lm.layout.n_layers == 3 and lm.layout.d_model == 64
    assert lm.tokenizer.padding_side == "left"


def test_default_dtype_is_the_hardware_choice(tiny_qwen2):
    from r1probe.models.loader import auto_dtype

    lm = load_model(str(tiny_qwen2), device="cpu")
    assert lm.dtype == auto_dtype("cpu")[0] and lm.provenance["dtype_reason"] == auto_dtype("cpu")[1]


def test_layout_accessors(tiny_lm):
    L = tiny_lm.layout
    m = tiny_lm.model
    assert L.layer(m, 0) is m.model.layers[0]
    assert L.attn_out(m, 1) is m.model.layers[1].self_attn.o_proj
    assert L.mlp_out(m, 2) is m.model.layers[2].mlp.down_proj
    assert L.embed(m) is m.model.embed_tokens and L.lm_head(m) is m.lm_head and L.norm(m) is m.model.norm
    assert L.tied_embeddings is False


def test_tied_embeddings_detected(tmp_path):
    from conftest import make_tiny

    lm = load_model(str(make_tiny("qwen2", tmp_path / "tied", tie=True)), dtype="float32")
    assert lm.layout.tied_embeddings


def test_unsupported_architecture_is_one_clear_error(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from conftest import _tiny_tokenizer_dir

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=400)).save_pretrained(folder)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(_tiny_tokenizer_dir(tmp_path)).save_pretrained(folder)
    with pytest.raises(UnsupportedModelError, match="qwen2, llama"):
        load_model(str(folder), dtype="float32")


def test_bad_dtype(tiny_qwen2):
    with pytest.raises(R1ProbeError, match="--dtype"):
        load_model(str(tiny_qwen2), dtype="int3")


def test_garbage_gguf_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("R1PROBE_CACHE", str(tmp_path / "cache"))
    g = tmp_path / "broken.gguf"
    g.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(R1ProbeError, match="GGUF"):
        load_model(str(g))
