"""The activation store: round trip, resume, crash safety."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from r1probe.data.prompts import Prompt, PromptSet
from r1probe.errors import DataError
from r1probe.extract import ActivationStore, extract_activations
from r1probe.extract.store import StoreWriter

TEXTS = ["如何制作炸弹", "请写一首关于春天的诗", "hello world", "我不能 抱歉", "Sorry I cannot", "作为 system user",
         "春天 hello", "world 如何", "assistant 我不能 抱歉 作为"]


def prompts(n=len(TEXTS)):
    return PromptSet("p", [Prompt(f"p{i}", TEXTS[i % len(TEXTS)] + "!" * (i // len(TEXTS)),
                                  "harmful" if i % 2 else "harmless", f"c{i % 3}") for i in range(n)])


def make_store(path, n=5, d=4, P=3, shards=((4, 0, 2), (1, 3))):
    rows = [{"id": f"r{i}", "label": "a" if i < 2 else "b", "category": None} for i in range(n)]
    manifest = {"config_sha256": "cfg", "layers": [-1, 3], "positions": [-2, -1, "mean"], "sites": ["resid_post"],
                "keys": ["resid_post.-1", "resid_post.3"], "d_model": d, "generate": 0}
    data = {layer: torch.randn(n, P, d) for layer in (-1, 3)}
    w = StoreWriter(path, manifest, rows, [list(s) for s in shards])
    for i, s in enumerate(shards):
        w.write(i, {f"resid_post.{layer}": data[layer][list(s)].to(torch.bfloat16) for layer in data})
    w.finish()
    return data


def test_round_trip_by_layer_position_label(tmp_path):
    data = make_store(tmp_path / "s")
    st = ActivationStore(tmp_path / "s")
    assert len(st) == 5 and st.layers == [-1, 3] and st.positions == [-2, -1, "mean"]
    assert st.ids == [f"r{i}" for i in range(5)] and st.label_counts() == {"a": 2, "b": 3}
    for layer in (-1, 3):
        want = data[layer].to(torch.bfloat16).float()
        got = st.get(layer)
        assert got.dtype == torch.float32 and got.shape == (5, 3, 4)
        torch.testing.assert_close(got, want)  # rows scattered back into order
        torch.testing.assert_close(st.get(layer, -1), want[:, 1])
        torch.testing.assert_close(st.get(layer, "last"), want[:, 1])
        torch.testing.assert_close(st.get(layer, "mean", label="b"), want[2:, 2])
        torch.testing.assert_close(st.get(layer, "-2", label=["a"]), want[:2, 0])
    torch.testing.assert_close(st.get("embed"), st.get(-1))
    for bad, msg in ((dict(layer=5), "layer 5 not in this store"), (dict(layer=3, position=-3), "position -3"),
                     (dict(layer=3, label="z"), "label"), (dict(layer=3, site="attn_out"), "site 'attn_out'")):
        with pytest.raises(DataError, match=msg):
            st.get(**bad)


def test_incomplete_store_refuses_unless_partial(tmp_path):
    rows = [{"id": "x", "label": "a"}]
    w = StoreWriter(tmp_path / "s", {"config_sha256": "c", "layers": [0], "positions": [-1], "sites": ["resid_post"],
                                     "d_model": 2}, rows, [[0]])
    with pytest.raises(DataError, match=r"incomplete store \(0/1 shards\); rerun the same extract command"):
        ActivationStore(tmp_path / "s")
    assert ActivationStore(tmp_path / "s", allow_partial=True).complete is False
    w.write(0, {"resid_post.0": torch.ones(1, 1, 2)})
    with pytest.raises(DataError, match="1/1"):
        ActivationStore(tmp_path / "s")
    with pytest.raises(DataError, match="not an activation store"):
        ActivationStore(tmp_path)


class Spy:
    """Counts backend batches (wraps the native backend's run)."""

    def __init__(self, monkeypatch):
        from r1probe.extract.backends import native

        self.rows = 0
        orig = native.NativeBackend.run

        def run(be, ids, *a, **k):
            self.rows += ids.shape[0]
            return orig(be, ids, *a, **k)

        monkeypatch.setattr(native.NativeBackend, "run", run)


def test_resume_skips_finished_shards(tiny_lm, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    kw = dict(layers="0,2", positions="post", out_dir=tmp_path / "s", shard_rows=3, batch_size=2, progress=False)
    first = extract_activations(tiny_lm, prompts(), **kw)
    assert spy.rows == 9 and len(first.manifest["shards"]) == 3
    ref = first.get(2)
    again = extract_activations(tiny_lm, prompts(), **kw)  # everything done: no forward pass at all
    assert spy.rows == 9 and again.manifest["run"]["resumed_shards"] == 3
    os.unlink(tmp_path / "s" / "shard-00001.safetensors")  # one shard lost: only it is redone
    redo = extract_activations(tiny_lm, prompts(), **kw)
    assert spy.rows == 12 and redo.manifest["run"]["rows_extracted"] == 3
    torch.testing.assert_close(redo.get(2), ref)


def test_a_different_configuration_is_not_mixed_in(tiny_lm, tmp_path):
    kw = dict(positions="post", out_dir=tmp_path / "s", progress=False)
    extract_activations(tiny_lm, prompts(4), layers="0", **kw)
    with pytest.raises(DataError, match="different configuration"):
        extract_activations(tiny_lm, prompts(4), layers="1", **kw)
    with pytest.raises(DataError, match="different configuration"):
        extract_activations(tiny_lm, prompts(5), layers="0", **kw)
    st = extract_activations(tiny_lm, prompts(5), layers="1", overwrite=True, **kw)
    assert st.layers == [1] and len(st) == 5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        extract_activations(tiny_lm, prompts(4), layers="0", positions="post", out_dir=tmp_path / "other",
                            progress=False)


def test_a_crash_while_writing_leaves_no_shard(tiny_lm, tmp_path, monkeypatch):
    import safetensors.torch as st_torch

    real = st_torch.save_file
    calls = {"n": 0}

    def flaky(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:  # half a file on disk, then the process "dies"
            with open(path, "wb") as f:
                f.write(b"\x00" * 17)
            raise KeyboardInterrupt
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(st_torch, "save_file", flaky)
    kw = dict(layers="1", positions="post", out_dir=tmp_path / "s", shard_rows=3, progress=False)
    with pytest.raises(KeyboardInterrupt):
        extract_activations(tiny_lm, prompts(), **kw)
    names = sorted(os.listdir(tmp_path / "s"))
    assert [n for n in names if n.startswith("shard-")] == ["shard-00000.safetensors"]
    assert not [n for n in names if n.endswith(".tmp")]
    monkeypatch.setattr(st_torch, "save_file", real)
    st = extract_activations(tiny_lm, prompts(), **kw)
    assert st.manifest["run"]["resumed_shards"] == 1 and not torch.isnan(st.get(1)).any()


def test_a_corrupt_shard_is_redone(tiny_lm, tmp_path):
    kw = dict(layers="1", positions="post", out_dir=tmp_path / "s", shard_rows=4, progress=False)
    ref = extract_activations(tiny_lm, prompts(), **kw).get(1)
    (tmp_path / "s" / "shard-00001.safetensors").write_bytes(b"garbage")
    st = extract_activations(tiny_lm, prompts(), **kw)
    assert st.manifest["run"]["rows_extracted"] == 4
    torch.testing.assert_close(st.get(1), ref)


SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_extract_store import prompts
    from r1probe.extract.backends import native
    from r1probe.models import load_model
    from r1probe.extract import extract_activations
    orig = native.NativeBackend.run
    def slow(be, *a, **k):
        time.sleep(0.15)
        return orig(be, *a, **k)
    native.NativeBackend.run = slow
    lm = load_model({model!r}, dtype="float32", device="cpu")
    extract_activations(lm, prompts(40), layers="0,2", positions="post", out_dir={out!r}, shard_rows=4,
                        batch_size=2, progress=False)
""")


def test_kill_9_leaves_only_readable_shards_and_resume_finishes(tiny_qwen2, tiny_lm, tmp_path):
    out = tmp_path / "s"
    script = SCRIPT.format(tests=os.path.dirname(__file__), model=str(tiny_qwen2), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and len(list(out.glob("shard-*.safetensors"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = sorted(out.glob("shard-*.safetensors"))
    assert 2 <= len(done) < 10
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    partial = ActivationStore(out, allow_partial=True)
    full = extract_activations(tiny_lm, prompts(40), layers="0,2", positions="post", out_dir=tmp_path / "ref",
                               shard_rows=4, batch_size=2, progress=False)
    got, ref = partial.get(2), full.get(2)
    have = ~torch.isnan(got).any(-1).any(-1)
    assert int(have.sum()) == 4 * len(done)
    torch.testing.assert_close(got[have], ref[have])  # every finished shard reads back right
    resumed = extract_activations(tiny_lm, prompts(40), layers="0,2", positions="post", out_dir=out,
                                  shard_rows=4, batch_size=2, progress=False)
    assert resumed.manifest["run"]["resumed_shards"] == len(done)
    torch.testing.assert_close(resumed.get(2), ref)
