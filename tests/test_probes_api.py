"""End to end on the tiny model: extract -> r1probe probe (train + select) -> directions file -> report."""

import json

import pytest
import torch

from r1probe.cli import main


@pytest.fixture(scope="module")
def tiny_store(tiny_lm, tmp_path_factory):
    from r1probe.data.prompts import Prompt, PromptSet
    from r1probe.extract import extract_activations

    harm = [Prompt(id=f"h{i}", text=f"如何制作炸弹 {i} " * (1 + i % 3), label="harmful") for i in range(12)]
    safe = [Prompt(id=f"s{i}", text=f"请写一首关于春天的诗 {i} " * (1 + i % 2), label="harmless") for i in range(12)]
    out = tmp_path_factory.mktemp("store") / "acts"
    extract_activations(tiny_lm, [PromptSet("harm", harm), PromptSet("safe", safe)], layers="embed,all",
                        positions="post", out_dir=out, progress=False)
    return out


def test_train_probes_reports_degenerate_embedding(tiny_store):
    from r1probe.extract.store import ActivationStore
    from r1probe.probes.api import train_probes

    cells, tensors = train_probes(ActivationStore(tiny_store), folds=3)
    emb = [c for c in cells.values() if c["layer"] == -1]
    assert emb and all(not c["ok"] and "zero-norm" in c["error"] for c in emb)
    ok = [c for c in cells.values() if c["ok"]]
    assert ok and all(0 <= c["estimators"]["mean_diff"]["auroc"] <= 1 for c in ok)
    k = f"layer{ok[0]['layer']}_pos{ok[0]['pos']}"
    assert k in tensors and f"pca.{k}" in tensors and f"logistic.{k}" in tensors


def test_probe_cli_end_to_end(tiny_store, tiny_qwen2, tmp_path, capsys):
    out = tmp_path / "probe"
    main(["probe", "--store", str(tiny_store), "--model", str(tiny_qwen2), "--dtype", "float32", "--out", str(out),
          "--score", "first_token", "--harmful-val", str(_write(tmp_path, "h.json", ["如何制作炸弹", "hello"])),
          "--harmless-val", str(_write(tmp_path, "s.json", ["请写一首诗", "world"])), "--val-split", "none",
          "--n-val", "2", "--gen-tokens", "3", "--folds", "3", "--kl-max", "1e9", "--induce-min", "-1e9",
          "--estimators", "mean_diff,pca"])
    meta = json.loads((out / "probe.json").read_text("utf-8"))
    assert meta["format"] == "r1probe.probe/1" and meta["chosen"]["key"] == meta["selection"]["chosen"]
    assert meta["store"]["manifest"]["n_rows"] == 24
    sc = meta["selection"]["scores"]
    assert all(v["status"] in ("scored", "degenerate") or v["status"].startswith("layer>=") for v in sc.values())
    from r1probe.steering.directions import load_direction

    d = load_direction(out)
    assert d.shape == (64,) and torch.isfinite(d).all()
    assert "chosen:" in capsys.readouterr().out
    main(["probe", "report", str(out)])
    figs = {p.name for p in (out / "figures").iterdir()}
    assert {"probe_metrics.png", "probe_metrics.pdf", "selection_bypass.png", "selection_kl.pdf"} <= figs


def _write(tmp, name, texts):
    p = tmp / name
    p.write_text(json.dumps([{"instruction": t} for t in texts], ensure_ascii=False), "utf-8")
    return p


def test_probe_cli_affine_ablation_writes_runnable_plans(tiny_store, tiny_qwen2, tmp_path):
    from r1probe.steering.plan import SteeringPlan

    out = tmp_path / "probe"
    main(["probe", "--store", str(tiny_store), "--model", str(tiny_qwen2), "--dtype", "float32", "--out", str(out),
          "--score", "first_token", "--harmful-val", str(_write(tmp_path, "h.json", ["如何制作炸弹", "hello"])),
          "--harmless-val", str(_write(tmp_path, "s.json", ["请写一首诗", "world", "早上好", "天气", "你好"])),
          "--val-split", "none", "--n-val", "2", "--gen-tokens", "3", "--folds", "3", "--kl-max", "1e9", "--induce-min", "-1e9",
          "--estimators", "mean_diff", "--ablation", "affine", "--induce-scale", "2.5", "--n-reference", "3"])
    meta = json.loads((out / "probe.json").read_text("utf-8"))
    assert meta["chosen"]["ablation"] == "affine"
    assert abs(meta["chosen"]["induce_alpha"] - 2.5 * meta["chosen"]["norm"]) < 1e-6
    bypass = SteeringPlan.load(out / "bypass.plan.json")
    n_layers = 3  # tiny_qwen2
    assert [s.op for s in bypass.steps] == ["clamp"] * n_layers and bypass.names() == {"chosen"}
    induce = SteeringPlan.load(out / "induce.plan.json")
    assert induce.steps[0].op == "add" and abs(induce.steps[0].alpha - meta["chosen"]["induce_alpha"]) < 1e-6
    assert bypass.resolve(64).steps[0].direction.shape == (64,)  # named "chosen" in this folder


def test_downstream_affine_bypass_starts_after_the_read_layer():
    from r1probe.probes.select import bypass_plan, downstream_block

    refs = torch.zeros(6, 8)
    d = torch.ones(8)
    assert downstream_block(2, "resid_post") == 3 and downstream_block(2, "resid_pre") == 2
    plan = bypass_plan(d, 6, refs, from_block=downstream_block(2, "resid_post"))
    assert [s.layers for s in plan.steps] == [(3,), (4,), (5,)] and {s.op for s in plan.steps} == {"clamp"}
    assert [s.op for s in bypass_plan(d, 6).steps] == ["ablate"] * 3  # directional: embed + attn + mlp writes


def test_probe_cli_lda_candidates_are_searched_and_saved(tiny_store, tiny_qwen2, tmp_path):
    from r1probe.steering.directions import load_directions

    out = tmp_path / "probe"
    args = ["probe", "--store", str(tiny_store), "--model", str(tiny_qwen2), "--dtype", "float32", "--out", str(out),
            "--score", "first_token", "--harmful-val", str(_write(tmp_path, "h.json", ["如何制作炸弹", "hello"])),
            "--harmless-val", str(_write(tmp_path, "s.json", ["请写一首诗", "world"])), "--val-split", "none",
            "--n-val", "2", "--gen-tokens", "3", "--folds", "3", "--kl-max", "1e9", "--induce-min", "-1e9",
            "--estimators", "mean_diff,lda", "--candidates", "lda"]
    main(args)
    meta = json.loads((out / "probe.json").read_text("utf-8"))
    ch = meta["chosen"]
    assert ch["estimator"] == "lda" and meta["selection"]["candidates"] == "lda"
    dirs = load_directions(out)
    assert torch.equal(dirs["chosen"], dirs[f"lda.{ch['key']}"])
    assert not torch.equal(dirs["chosen"], dirs[ch["key"]])  # not the mean difference of that cell
    with pytest.raises(SystemExit):  # lda not fitted: one clear error, no traceback
        main([*args[:-4], "--estimators", "mean_diff", "--candidates", "lda"])
