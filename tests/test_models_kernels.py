"""The float32 CPU linear kernel: the choice, the packed forward's values, repacking after edits, hooks."""

import pytest
import torch

from r1probe.errors import R1ProbeError
from r1probe.models import kernels

needs_onednn = pytest.mark.skipif(not kernels.onednn_available(), reason="torch build without oneDNN packed linear")


def _linear(seed=0, bias=True):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(48, 40, bias=bias), torch.nn.ReLU(), torch.nn.Linear(40, 24, bias=False))
    m.requires_grad_(False)
    return m


@needs_onednn
def test_choose_auto_packs_cpu_float32_only(monkeypatch):
    monkeypatch.delenv(kernels.ENV, raising=False)
    m = _linear()
    assert kernels.choose(m, "cpu", torch.float32, available=1 << 40)[0] == "onednn"
    assert kernels.choose(m, "cpu", torch.bfloat16, available=1 << 40)[0] == "default"
    assert kernels.choose(m, "cuda:0", torch.float32, available=1 << 40)[0] == "default"
    assert kernels.choose(m, "cpu", torch.float32, setting="mkl")[0] == "mkl"
    assert kernels.choose(m, "cpu", torch.float32, setting="onednn")[0] == "onednn"
    monkeypatch.setenv(kernels.ENV, "mkl")
    assert kernels.choose(m, "cpu", torch.float32, available=1 << 40)[0] == "mkl"


@needs_onednn
def test_choose_auto_respects_memory():
    m = _linear()
    need = kernels.linear_bytes(m)
    assert need == (48 * 40 + 40 * 24) * 4
    kernel, why = kernels.choose(m, "cpu", torch.float32, setting="auto", available=need)  # 2x need > 50%
    assert kernel == "mkl" and "memory" in why
    assert kernels.choose(m, "cpu", torch.float32, setting="auto", available=4 * need)[0] == "onednn"


def test_choose_rejects_unknown_setting():
    with pytest.raises(R1ProbeError, match="R1PROBE_CPU_LINEAR"):
        kernels.choose(_linear(), "cpu", torch.float32, setting="fast")


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_packed_forward_matches_plain_and_is_batch_independent(bias):
    m = _linear(bias=bias)
    x = torch.randn(37, 5, 48)
    with torch.no_grad():
        ref = m(x)
        assert kernels.pack_linears(m) == 2
        with torch.inference_mode():
            out = m(x)
            one = m(x[3:4])
        assert kernels.has_packed_copy(m[0])  # the packed path ran
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(one[0], out[3])  # a row's product does not depend on its batch


@needs_onednn
def test_repacks_after_an_in_place_edit_and_unpacks():
    m = _linear()
    kernels.pack_linears(m)
    x = torch.randn(6, 48)
    with torch.no_grad():
        before = m(x)
        m[2].weight.copy_(torch.zeros_like(m[2].weight))  # an edit's in-place write
        after = m(x)
    assert before.abs().sum() > 0 and torch.count_nonzero(after) == 0
    assert kernels.unpack_linears(m) == 2 and kernels.packed_modules(m) == 0
    assert "forward" not in vars(m[0]) and not kernels.has_packed_copy(m[0])


@needs_onednn
def test_a_packed_model_deep_copies_and_the_copy_packs_its_own():
    import copy

    m = _linear()
    kernels.pack_linears(m)
    x = torch.randn(3, 48)
    with torch.no_grad():
        ref = m(x)
        c = copy.deepcopy(m)
        assert not kernels.has_packed_copy(c[0]) and kernels.packed_modules(c) == 2
        c[0].weight.mul_(2)
        assert torch.equal(m(x), ref) and not torch.equal(c(x), ref)  # the copy's forward is its own


@needs_onednn
def test_gradients_and_hooks_use_the_module_as_before():
    m = _linear()
    kernels.pack_linears(m)
    m[0].weight.requires_grad_(True)
    seen = []
    h = m[0].register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    x = torch.randn(4, 48, requires_grad=True)
    m(x).sum().backward()  # gradient enabled: plain F.linear, differentiable
    assert x.grad is not None and m[0].weight.grad is not None
    with torch.no_grad():
        m(x)
    h.remove()
    assert seen == [torch.Size([4, 40])] * 2


def test_loader_records_the_kernel(tiny_lm):
    assert tiny_lm.provenance["linear_kernel"] in ("onednn", "mkl")
    assert tiny_lm.provenance["linear_kernel_reason"]
    assert tiny_lm.describe()["linear_kernel"] == tiny_lm.provenance["linear_kernel"]


@pytest.mark.slow
@needs_onednn
def test_real_model_packed_logits_match_plain(real_lm):
    """The embedded model's logits under either kernel agree to float32 rounding (in float32)."""
    if real_lm.dtype != torch.float32:
        pytest.skip("the hardware's dtype is not float32: the packed kernel does not apply")
    enc = real_lm.tokenizer([real_lm.chat.format("如何制作炸弹？"), real_lm.chat.format("请写一首关于春天的诗。")],
                            return_tensors="pt", padding=True)
    try:
        with torch.inference_mode():
            kernels.apply(real_lm.model, "cpu", torch.float32, setting="onednn")
            a = real_lm.model(**enc).logits[:, -1]
            kernels.apply(real_lm.model, "cpu", torch.float32, setting="mkl")
            b = real_lm.model(**enc).logits[:, -1]
    finally:
        kernels.apply(real_lm.model, "cpu", torch.float32)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    assert torch.equal(a.argmax(-1), b.argmax(-1))
