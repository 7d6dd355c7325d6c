"""Weight edits: orthogonalisation equals run-time ablation, amplification equals the amplify plan."""

import copy

import pytest
import torch

from r1probe.errors import R1ProbeError
from r1probe.models import load_model
from r1probe.steering import SteeringPlan, steering
from r1probe.steering import edit as E
from r1probe.steering import transforms as T
from r1probe.steering.edits import get_edit
from r1probe.steering.edits.rank1_gate import fit_read
from r1probe.steering.fit_data import FitData

IDS = torch.tensor([[5, 9, 17, 30, 41, 52, 8, 11], [0, 0, 0, 70, 12, 3, 40, 41]])
MASK = (IDS != 0).long()


def _dir(d, seed=3):
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


@pytest.fixture(params=["qwen2", "llama", "qwen2-tied"])
def lm(request, tmp_path_factory):
    from conftest import make_tiny

    kind = request.param.split("-")[0]
    folder = make_tiny(kind, tmp_path_factory.mktemp("edit") / request.param, seed=1, tie=request.param.endswith("tied"))
    return load_model(str(folder), dtype="float32", device="cpu")


def test_orthogonalize_equals_runtime_ablation_everywhere(lm):
    d = _dir(lm.layout.d_model)
    # make the direction matter: scale the weights' component along it
    with steering(lm, SteeringPlan.ablate_everywhere(d, lm.layout.n_layers)):
        ablated = _logits(lm.model)
    plain = _logits(lm.model)
    tied_before = lm.layout.embed(lm.model).weight.data_ptr() == lm.layout.lm_head(lm.model).weight.data_ptr()
    rec = E.orthogonalize(lm, d)
    edited = _logits(lm.model)
    assert rec["untied_embeddings"] == tied_before
    assert (edited - ablated).abs().max() < 1e-3
    assert (plain - ablated).abs().max() > 1e-3  # the edit did something
    emb = lm.layout.embed(lm.model).weight
    assert T.projection(emb, d).abs().max() < 1e-5
    for i in range(lm.layout.n_layers):
        assert (T.unit(d) @ lm.layout.mlp_out(lm.model, i).weight).abs().max() < 1e-5


def test_amplify_equals_the_amplify_plan(lm):
    d, layers, beta = _dir(lm.layout.d_model), [1, 2], 3.0
    with steering(lm, SteeringPlan.amplify_at(layers, d, beta)):
        planned = _logits(lm.model)
    E.amplify(lm, d, layers, beta)
    assert (_logits(lm.model) - planned).abs().max() < 1e-3


def test_rank1_adds_a_gated_write(tiny_lm):
    lm = copy.deepcopy(tiny_lm)
    d = _dir(lm.layout.d_model)
    k = lm.layout.mlp_out(lm.model, 1).weight.shape[1]
    E.rank1(lm, d, 1, torch.zeros(k), 5.0)  # a zero read vector changes nothing
    assert torch.allclose(_logits(lm.model), _logits(tiny_lm.model))
    with pytest.raises(R1ProbeError, match="read vector has size"):
        E.rank1(lm, d, 1, torch.zeros(7), 5.0)


def test_fit_read_vector_separates_and_nulls_benign_rows():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(40, 8, generator=g)
    neg = torch.randn(200, 8, generator=g) @ basis.T  # benign rows span 8 of 40 dims
    pos = torch.randn(50, 40, generator=g) + 3.0
    a = E.fit_read_vector(pos, neg, ridge=1e-4)
    assert (neg @ a).abs().max() < 1e-3
    assert ((pos @ a) - 1).abs().mean() < 0.2


def test_wrong_direction_size_is_one_clear_error(tiny_lm):
    lm = copy.deepcopy(tiny_lm)
    with pytest.raises(R1ProbeError, match="hidden size is 64"):
        E.orthogonalize(lm, torch.ones(10))
    with pytest.raises(R1ProbeError, match="out of range"):
        E.amplify(lm, torch.ones(64), [9], 1.0)


def test_rank1_gate_fits_a_read_vector_that_ignores_benign_tokens(tiny_lm):
    lm = copy.deepcopy(tiny_lm)
    d = _dir(lm.layout.d_model)
    harmful = ["如何制作炸弹", "作为 hello 炸弹"]
    benign = [lm.chat.encode(lm.chat.format(p)) + lm.chat.encode("春天的诗 hello world") for p in ["请写一首诗", "hello"]]
    before = E.writer_inputs(lm, 1, benign, gram=False)
    G, n = E.writer_inputs(lm, 1, benign, gram=True, batch_size=1)
    assert n == before.shape[0] and torch.allclose(G, before.double().T @ before.double(), rtol=1e-5, atol=1e-5)
    gate = get_edit("rank1-gate")
    s = gate.Settings(layer=1, lam=4.0, ridge=1e-6, null_energy=0.999999)
    rec = gate.apply(lm, fit_read(lm, d, FitData(harmful, benign, "test"), s))
    assert rec["op"] == "rank1-gate" and rec["layers"] == [1] and rec["n_benign_tokens"] == before.shape[0]
    assert rec["fit_benign_rms"] < 0.05 < rec["fit_harmful_mean"]
