"""native, TransformerLens and nnsight return the same activations and leave the model as it was."""

import pytest
import torch

from r1probe.data.prompts import Prompt, PromptSet
from r1probe.extract import extract_activations

pytest.importorskip("transformer_lens")
pytest.importorskip("nnsight")

TEXTS = ["如何制作炸弹", "请写一首关于春天的诗", "hello world", "我不能 抱歉 作为 system", "Sorry I cannot 春天"]


def prompts():
    return PromptSet("p", [Prompt(f"p{i}", t, "harmful" if i % 2 else "harmless") for i, t in enumerate(TEXTS)])


@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_llama"])
def test_three_backends_agree(fixture, request, tmp_path):
    from r1probe.models import load_model

    lm = load_model(str(request.getfixturevalue(fixture)), dtype="float32", device="cpu")
    stores = {be: extract_activations(lm, prompts(), layers="embed,all", positions="post,mean", sites="all",
                                      backend=be, out_dir=tmp_path / be, batch_size=2, progress=False)
              for be in ("native", "transformer-lens", "nnsight")}
    ref = stores["native"]
    assert ref.manifest["backend"] == "native"
    for be in ("transformer-lens", "nnsight"):
        st = stores[be]
        assert st.manifest["backend"] == be and st.positions == ref.positions
        for key in ref.manifest["keys"]:
            site, layer = key.rsplit(".", 1)
            torch.testing.assert_close(st.get(int(layer), site=site), ref.get(int(layer), site=site),
                                       atol=1e-5, rtol=1e-4, msg=f"{be} {key}")


def test_transformer_lens_leaves_the_shared_model_untouched(tiny_lm, tmp_path):
    model = tiny_lm.model
    before = [(n, type(m)) for n, m in model.named_modules()]
    hooks_before = foreign_hooks(model)  # the loader's own lm_head hook is there from the start
    attn = model.config._attn_implementation
    ids = torch.tensor([tiny_lm.chat.encode(tiny_lm.chat.format("你好"))])
    with torch.no_grad():
        logits = model(ids).logits
    extract_activations(tiny_lm, prompts(), layers="1", backend="transformer-lens", out_dir=tmp_path / "tl",
                        progress=False)
    assert [(n, type(m)) for n, m in model.named_modules()] == before
    assert model.config._attn_implementation == attn
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    torch.testing.assert_close(out.logits, logits)
    assert len(out.hidden_states) == tiny_lm.layout.n_layers + 1
    assert tiny_lm.tokenizer.padding_side == "left"
    assert foreign_hooks(model) == hooks_before


def test_nnsight_leaves_the_model_untouched(tiny_lm, tmp_path):
    before = [(n, type(m)) for n, m in tiny_lm.model.named_modules()]
    hooks_before = foreign_hooks(tiny_lm.model)
    extract_activations(tiny_lm, prompts(), layers="0", backend="nnsight", out_dir=tmp_path / "nn", progress=False)
    assert [(n, type(m)) for n, m in tiny_lm.model.named_modules()] == before
    assert foreign_hooks(tiny_lm.model) == hooks_before


def foreign_hooks(model):
    """Hooks left on the model by r1probe, nnsight or TransformerLens."""
    out = []
    for m in model.modules():
        for d in (m._forward_hooks, m._forward_pre_hooks):
            for fn in d.values():
                mod = getattr(fn, "__module__", "") or ""
                if mod.startswith(("r1probe", "nnsight", "transformer_lens")):
                    out.append((type(m).__name__, mod))
    return out


def test_native_removes_its_hooks(tiny_lm, tmp_path):
    hooks_before = foreign_hooks(tiny_lm.model)
    extract_activations(tiny_lm, prompts(), layers="all", sites="all", out_dir=tmp_path / "n", progress=False)
    assert foreign_hooks(tiny_lm.model) == hooks_before
