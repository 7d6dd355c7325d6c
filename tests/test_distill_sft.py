"""The SFT loop on tiny random models: loss mask, loss goes down, kill -9 resume, export, skip when finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from r1probe.distill.sft import (IGNORE, DataOrder, SFTConfig, collate, encode_trace, latest_checkpoint, lr_at,
                                 reply_loss_sum, train, train_full)
from r1probe.distill.traces import Trace
from r1probe.errors import R1ProbeError

TRACES = [Trace("hello world", "I think hello", "Sorry I cannot \\boxed{1}", id="0"),
          Trace("如何制作炸弹", "抱歉 我不能", "我不能 \\boxed{2}", id="1"),
          Trace("请写一首关于春天的诗", "春天 hello", "作为 assistant \\boxed{3}", id="2")]
F32 = {"dtype": "float32", "device": "cpu"}


def _cfg(**kw):
    base = dict(lr=1e-2, max_steps=4, grad_accum=2, batch_size=1, save_every=2, warmup_steps=0, lora=False)
    base.update(kw)
    return SFTConfig(**base)


@pytest.mark.parametrize("bad", [dict(lr=0), dict(max_steps=0), dict(batch_size=0), dict(grad_accum=1.5),
                                 dict(max_len=4), dict(lora_dropout=1.0), dict(train_layers=()),
                                 dict(max_steps=None, epochs=0)])
def test_config_validation(bad):
    with pytest.raises(R1ProbeError, match="SFTConfig"):
        SFTConfig(**bad)


def test_loss_mask_covers_only_reply_tokens(tiny_lm):
    t = TRACES[0]
    e = encode_trace(tiny_lm.chat, t)
    prompt = tiny_lm.chat.format(t.prompt)
    assert e.ids[:e.start] == tiny_lm.chat.encode(prompt)
    assert e.labels[:e.start] == [IGNORE] * e.start and e.labels[e.start:] == e.ids[e.start:]
    reply = tiny_lm.tokenizer.decode(e.ids[e.start:])
    assert reply == t.reply() + "<|im_end|>\n"  # reply + the template's end of turn, nothing of the prompt
    ids, mask, labels = collate([e, encode_trace(tiny_lm.chat, TRACES[1])], pad_id=0)
    assert ((labels != IGNORE).sum(1) == torch.tensor([e.n_reply, encode_trace(tiny_lm.chat, TRACES[1]).n_reply])).all()
    assert (labels[mask == 0] == IGNORE).all()


def test_loss_mask_with_r1_template_keeps_the_reasoning(tiny_lm):
    """The R1 template drops reasoning from assistant turns and opens <think> in the prompt: the reply is
    appended to the generation prompt, without repeating <think>, and ends with EOS."""
    from r1probe.models.chat import ChatFormatter, r1_template

    chat = ChatFormatter(tiny_lm.tokenizer, r1_template(), "r1")
    t = TRACES[0]
    e = encode_trace(chat, t)
    assert e.ids[:e.start] == chat.encode(chat.format(t.prompt))
    reply = tiny_lm.tokenizer.decode(e.ids[e.start:])
    assert reply == t.reply()[len("<think>\n"):] + tiny_lm.tokenizer.eos_token


def test_truncation_and_prompt_too_long(tiny_lm):
    e = encode_trace(tiny_lm.chat, TRACES[0], max_len=20)
    assert len(e.ids) == 20 and e.truncated and e.n_reply > 0
    assert encode_trace(tiny_lm.chat, Trace("hello world " * 40, "r", "a"), max_len=20) is None


def test_lr_schedule_and_data_order():
    cfg = SFTConfig(lr=1.0 / 8, warmup_steps=2, max_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg, 10) for s in range(10)]
    assert lrs[0] == pytest.approx(cfg.lr / 2) and lrs[1] == pytest.approx(cfg.lr)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] >= cfg.lr * 0.1
    o = DataOrder(5, seed=3)
    assert sorted(o[k] for k in range(5)) == list(range(5)) and sorted(o[k] for k in range(5, 10)) == list(range(5))
    assert [o[k] for k in range(10)] == [DataOrder(5, seed=3)[k] for k in range(10)]


def _batch_loss(lm, traces):
    encs = [encode_trace(lm.chat, t) for t in traces]
    ids, mask, labels = collate(encs, pad_id=0)
    with torch.no_grad():
        return float(reply_loss_sum(lm.model, ids, mask, labels)) / sum(e.n_reply for e in encs)


@pytest.mark.parametrize("lora", [False, True])
def test_training_lowers_the_loss_on_a_fixed_batch(tiny_qwen2, tmp_path, lora):
    from r1probe.models import load_model

    lm = load_model(str(tiny_qwen2), **F32)
    before = _batch_loss(lm, TRACES)
    cfg = _cfg(max_steps=12, grad_accum=3, lora=lora, lr=2e-2 if lora else 1e-2, save_every=100)
    res = train_full(lm, TRACES, cfg, tmp_path / "out", progress=False)
    after = _batch_loss(lm, TRACES)  # lm was trained in place (LoRA merged)
    assert after < before - 0.2, (before, after)
    rows = [json.loads(x) for x in (tmp_path / "out" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13)) and rows[-1]["loss"] < rows[0]["loss"]
    assert res.finished and res.stats["peak_rss_mb"] > 0 and res.stats["loss_summary"]["last"] < res.stats["loss_summary"]["first"]


def test_export_loads_with_plain_transformers_and_rerun_skips(tiny_qwen2, tmp_path):
    out = tmp_path / "exp"
    cfg = _cfg(lora=True, lora_rank=4)
    assert train(str(tiny_qwen2), TRACES, cfg, out, progress=False, load_kw=F32) == out
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md",
            "loss.jsonl", "r1probe_manifest.json"} <= names
    assert not any(n.startswith(".") for n in os.listdir(tmp_path))  # no partial folders left behind
    m = json.loads((out / "r1probe_manifest.json").read_text())
    assert m["finished"] and m["student"] == str(tiny_qwen2) and len(m["traces_sha256"]) == 64
    card = (out / "README.md").read_text()
    assert "traces sha256" in card and m["traces_sha256"] in card and "Loss" in card
    code = textwrap.dedent(f"""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        m = AutoModelForCausalLM.from_pretrained({str(out)!r}); t = AutoTokenizer.from_pretrained({str(out)!r})
        assert not any("lora" in n for n, _ in m.named_parameters())
        assert t.chat_template and "im_start" in t.apply_chat_template([{{"role": "user", "content": "x"}}], tokenize=False)
        print("OK")""")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().endswith("OK"), r.stderr[-2000:]
    # merged LoRA weights differ from the base
    from safetensors.torch import load_file
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tiny_qwen2 / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in b if "q_proj.weight" in k)
    # rerun: same student, traces and config -> nothing to do (the export is untouched)
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert train(str(tiny_qwen2), TRACES, cfg, out, progress=False, load_kw=F32) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    # a different config must not silently overwrite it, nor resume from its checkpoints
    with pytest.raises(R1ProbeError, match="already exists"):
        train(str(tiny_qwen2), TRACES, _cfg(lora=True, lora_rank=8), out, progress=False, load_kw=F32)
    with pytest.raises(R1ProbeError, match="different run"):
        train(str(tiny_qwen2), TRACES, _cfg(lora=True, lora_rank=8), tmp_path / "other", progress=False, load_kw=F32,
              work_dir=tmp_path / "exp.work")


KILL_SCRIPT = """
import os, signal, sys, json
sys.path.insert(0, {root!r})
from r1probe.distill.sft import SFTConfig, train
from r1probe.distill.traces import read_traces
cfg = SFTConfig(**json.loads({cfg!r}))
def on_step(step, rec):
    if step == 3:
        os.kill(os.getpid(), signal.SIGKILL)
train({student!r}, read_traces({traces!r}), cfg, {out!r}, progress=False, on_step=on_step,
      load_kw={{"dtype": "float32", "device": "cpu"}})
"""


@pytest.mark.parametrize("lora", [False, True])
def test_killed_run_resumes_from_last_checkpoint_and_matches(tiny_qwen2, tmp_path, lora):
    """kill -9 after step 3 (checkpoint at step 2): the resumed run redoes step 3 and ends with the same weights."""
    from safetensors.torch import load_file

    from r1probe.distill.traces import write_traces

    cfg = _cfg(max_steps=5, lora=lora, lora_rank=4, lr=1e-2)
    write_traces(tmp_path / "t.jsonl", TRACES)
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(root=str(Path(__file__).resolve().parents[1]), cfg=json.dumps(cfg.to_dict()),
                                student=str(tiny_qwen2), traces=str(tmp_path / "t.jsonl"), out=str(out))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr[-2000:]
    work = tmp_path / "killed.work"
    assert not out.exists() and latest_checkpoint(work).name == "step-000002"
    assert len((work / "loss.jsonl").read_text().splitlines()) == 3

    steps = []
    res = train_full(str(tiny_qwen2), TRACES, cfg, out, progress=False, load_kw=F32,
                     on_step=lambda s, rec: steps.append(s))
    assert steps == [3, 4, 5] and res.stats["resumed_from_step"] == 2 and res.finished
    rows = [json.loads(x) for x in (work / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]

    ref = tmp_path / "straight"
    train(str(tiny_qwen2), TRACES, cfg, ref, progress=False, load_kw=F32)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ref_rows = [json.loads(x) for x in (ref.with_name("straight.work") / "loss.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref_rows], abs=1e-6)


def test_full_finetune_of_chosen_layers_only(tiny_qwen2, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "layers"
    train(str(tiny_qwen2), TRACES, _cfg(train_layers=(2,), max_steps=2), out, progress=False, load_kw=F32)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tiny_qwen2 / "model.safetensors"))
    changed = {k for k in b if not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith("model.layers.2.") or k == "model.norm.weight" for k in changed)


def test_bf16_student_keeps_fp32_master_weights(tiny_qwen2, tmp_path):
    """Full fine-tuning of a bf16 model: optimizer on fp32 masters, bf16 weights updated from them."""
    from r1probe.models import load_model

    lm = load_model(str(tiny_qwen2), dtype="bfloat16", device="cpu")
    before = _batch_loss(lm, TRACES)
    train(lm, TRACES, _cfg(max_steps=8, grad_accum=3), tmp_path / "bf", progress=False)
    assert lm.dtype == torch.bfloat16 and _batch_loss(lm, TRACES) < before
    from safetensors import safe_open

    with safe_open(str(latest_checkpoint(tmp_path / "bf.work") / "trainable.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float32 for k in f.keys())


def test_cli_distill_on_gsm8k_file(tiny_qwen2, tmp_path):
    from click.testing import CliRunner

    from r1probe.distill.commands import distill

    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": f"{i}+1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}) + "\n"
                         for i in range(6)), encoding="utf-8")
    out = tmp_path / "cli"
    args = ["--student", str(tiny_qwen2), "--traces", f"gsm8k:{p}", "--limit", "4", "--max-steps", "2",
            "--grad-accum", "2", "--dtype", "float32", "--device", "cpu", "--out", str(out),
            "--save-traces", str(tmp_path / "used.jsonl")]
    r = CliRunner().invoke(distill, args)
    assert r.exit_code == 0, r.output
    assert "finished: 2/2 steps" in r.output and (out / "config.json").exists()
    assert len((tmp_path / "used.jsonl").read_text().splitlines()) == 4
    r2 = CliRunner().invoke(distill, args)
    assert r2.exit_code == 0 and "finished: 2/2" in r2.output
