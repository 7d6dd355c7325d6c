"""Extending steering: a toy transform and a toy weight edit registered in a test and run through the CLI."""

import json

import pytest
import torch
from click.testing import CliRunner
from pydantic import Field

from r1probe.cli import cli
from r1probe.models import load_model
from r1probe.steering import save_directions
from r1probe.steering import transforms as T
from r1probe.steering.edits import EDITS, EditSettings, Fitted, register_edit
from r1probe.steering.transforms import TRANSFORMS, FunctionTransform, register_transform


def scale(h, d, s, *, normalized=False):
    """``h' = h + (s − 1)(h·d̂) d̂``: the projection on ``d̂`` is multiplied by ``s``."""
    u = (d.float() if normalized else T.unit(d)).to(h.device)
    h32 = h.float()
    return (h32 + (float(s) - 1.0) * (h32 @ u).unsqueeze(-1) * u).to(h.dtype)


class ToySettings(EditSettings):
    layer: int = Field(1, description="The layer whose MLP output projection is scaled.")
    factor: float = Field(2.0, description="The factor.")


class Toy:
    """Multiply one MLP output projection by a factor (the direction is only read, for its size check)."""

    name = "toy"
    summary = "W_L <- factor W_L on one MLP output projection"
    Settings = ToySettings

    def fit(self, lm, directions, settings, *, log=print):
        return Fitted(settings, directions.get(settings.direction_key, lm.layout.d_model))

    @torch.no_grad()
    def apply(self, lm, fitted):
        s = fitted.settings
        w = lm.layout.mlp_out(lm.model, s.layer).weight
        w.mul_(s.factor)
        return {"op": self.name, "layer": s.layer, "factor": s.factor}


@pytest.fixture
def toys():
    register_transform(FunctionTransform("scale", scale, ("alpha",), "h + (alpha - 1)(h.d^) d^"))
    register_edit(Toy())
    try:
        yield
    finally:
        TRANSFORMS.pop("scale")
        EDITS.pop("toy")


@pytest.fixture
def dirs(tmp_path):
    save_directions(tmp_path / "dirs" / "directions.safetensors",
                    {"chosen": torch.randn(64, generator=torch.Generator().manual_seed(0))})
    return str(tmp_path / "dirs")


def _opts(path):
    return ["--model", str(path), "--dtype", "float32", "--device", "cpu"]


def _steer(tiny, dirs, out, *args):
    r = CliRunner().invoke(cli, ["steer", *_opts(tiny), "--directions", dirs, "--data", str(out.parent / "p.jsonl"),
                                 "--max-new-tokens", "8", "--out", str(out), *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return [json.loads(x)["completion"] for x in out.read_text().splitlines()]


def test_a_registered_transform_runs_through_steer(toys, tiny_qwen2, dirs, tmp_path):
    h, d = torch.randn(2, 5, 64), torch.randn(64)
    assert torch.allclose(TRANSFORMS["scale"].apply(h, d, alpha=3.0), T.amplify(h, d, 2.0), atol=1e-5)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in ["hello", "请写一首诗", "如何制作炸弹"]))
    scaled = _steer(tiny_qwen2, dirs, tmp_path / "scale.jsonl", "--op", "scale", "--layer", "1", "--alpha", "40")
    amplified = _steer(tiny_qwen2, dirs, tmp_path / "amp.jsonl", "--op", "amplify", "--layer", "1", "--alpha", "39")
    plain = _steer(tiny_qwen2, dirs, tmp_path / "plain.jsonl", "--op", "scale", "--layer", "1", "--alpha", "1")
    assert scaled == amplified  # h + 39 (h.d^) d^ either way
    assert scaled != plain      # scale 1 is the identity, scale 40 changes the replies
    unsteered = CliRunner().invoke(cli, ["steer", *_opts(tiny_qwen2), "--directions", dirs, "--op", "add", "--layer",
                                         "1", "--alpha", "0", "--data", str(tmp_path / "p.jsonl"), "--max-new-tokens",
                                         "8", "--out", str(tmp_path / "zero.jsonl")], catch_exceptions=False)
    assert unsteered.exit_code == 0
    assert [json.loads(x)["completion"] for x in (tmp_path / "zero.jsonl").read_text().splitlines()] == plain
    plan = json.loads((tmp_path / "scale.jsonl.manifest.json").read_text())["plan"]
    assert plan["steps"][0]["op"] == "scale" and plan["steps"][0]["alpha"] == 40.0
    # the CLI lists it, and its parameter is required
    assert "scale: h + (alpha - 1)" in " ".join(CliRunner().invoke(cli, ["steer", "--help"]).output.split())
    r = CliRunner().invoke(cli, ["steer", *_opts(tiny_qwen2), "--directions", dirs, "--op", "scale", "--layer", "1",
                                 "--prompt", "x"])
    assert "--op scale needs --alpha" in str(r.exception)


def test_a_registered_edit_runs_through_edit(toys, tiny_qwen2, dirs, tmp_path):
    out = tmp_path / "toy"
    r = CliRunner().invoke(cli, ["edit", *_opts(tiny_qwen2), "--directions", dirs, "--op", "toy", "--layer", "2",
                                 "--set", "factor=3", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "r1probe_manifest.json").read_text())["edits"] == [{"op": "toy", "layer": 2, "factor": 3.0}]
    before = load_model(str(tiny_qwen2), dtype="float32", device="cpu").model.state_dict()
    after = load_model(str(out), dtype="float32", device="cpu").model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["model.layers.2.mlp.down_proj.weight"]
    assert torch.allclose(after[changed[0]], 3.0 * before[changed[0]])
    assert "toy: W_L <- factor W_L" in " ".join(CliRunner().invoke(cli, ["edit", "--help"]).output.split())
    # a flag the edit has no setting for, and an unknown setting, are one line each
    r = CliRunner().invoke(cli, ["edit", *_opts(tiny_qwen2), "--directions", dirs, "--op", "toy", "--beta", "1",
                                 "--out", str(tmp_path / "x")])
    assert "--beta does not apply to --op toy" in str(r.exception)
    r = CliRunner().invoke(cli, ["edit", *_opts(tiny_qwen2), "--directions", dirs, "--op", "toy", "--set", "nope=1",
                                 "--out", str(tmp_path / "x")])
    assert "nope" in str(r.exception) and "unknown setting" in str(r.exception)
    assert not (tmp_path / "x").exists()


def test_enhance_is_a_deprecated_alias_of_rank1_gate(tiny_qwen2, dirs, tmp_path):
    harm = tmp_path / "harm.jsonl"
    harm.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in ["如何制作炸弹", "作为 炸弹"]))
    ben = tmp_path / "ben.jsonl"
    ben.write_text("".join(json.dumps({"question": t, "std_answer": "春天 hello"}) + "\n" for t in ["请写一首诗", "hello"]))
    recs = {}
    for op in ("enhance", "rank1-gate"):
        r = CliRunner().invoke(cli, ["edit", *_opts(tiny_qwen2), "--directions", dirs, "--op", op, "--layer", "1",
                                     "--lam", "3", "--harmful", str(harm), "--benign", str(ben),
                                     "--out", str(tmp_path / op)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        dep = [x for x in r.stderr.splitlines() if "deprecated" in x]
        assert dep == (["r1probe: 'enhance' is deprecated, use 'rank1-gate'"] if op == "enhance" else [])
        recs[op] = json.loads((tmp_path / op / "r1probe_manifest.json").read_text())["edits"]
    assert recs["enhance"] == recs["rank1-gate"] and recs["enhance"][0]["op"] == "rank1-gate"


def test_registries_reject_bad_registrations():
    from r1probe.errors import R1ProbeError
    from r1probe.steering.edits import get_edit
    from r1probe.steering.transforms import get_transform

    with pytest.raises(R1ProbeError, match="not step fields"):
        register_transform(FunctionTransform("bad", scale, ("strength",), "x"))
    with pytest.raises(R1ProbeError, match="already registered"):
        register_transform(FunctionTransform("add", scale, ("alpha",), "x"))
    with pytest.raises(R1ProbeError, match="choose one of add, ablate, clamp, amplify"):
        get_transform("nope")

    class Undocumented(EditSettings):
        k: int = 1

    class NoDoc(Toy):
        name = "nodoc"
        Settings = Undocumented

    with pytest.raises(R1ProbeError, match="without a description: k"):
        register_edit(NoDoc())
    assert "nodoc" not in EDITS
    with pytest.raises(R1ProbeError, match="unknown weight edit 'nope'"):
        get_edit("nope")


def test_direction_set_resolves_chosen_from_probe_json(tmp_path):
    from r1probe.errors import R1ProbeError
    from r1probe.steering.directions import DirectionSet

    a, b = torch.randn(8), torch.randn(8)
    save_directions(tmp_path / "directions.safetensors", {"layer3_pos-1": a, "layer4_pos-1": b})
    (tmp_path / "probe.json").write_text(json.dumps({"chosen": {"layer": 4, "pos": -1}}))
    ds = DirectionSet.load(tmp_path)
    assert ds.chosen == "layer4_pos-1" and torch.equal(ds.get(), b) and torch.equal(ds.get("layer3_pos-1"), a)
    with pytest.raises(R1ProbeError, match="hidden size is 16"):
        ds.get(None, 16)
    with pytest.raises(R1ProbeError, match="no direction 'x'"):
        ds.get("x")
