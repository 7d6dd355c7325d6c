"""A few LoRA steps on the embedded model: the loss goes down and the export loads in plain transformers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from r1probe.distill.sft import SFTConfig, train_full
from r1probe.distill.traces import Trace

REAL_MODEL = "builtin:qwen2.5-coder-0.5b-instruct"
SHORT = [Trace("What is 2+3?", "2 plus 3 is 5.", "The answer is \\boxed{5}."),
         Trace("What is 4*6?", "4 times 6 is 24.", "The answer is \\boxed{24}."),
         Trace("计算 10-7。", "10 减 7 等于 3。", "答案是 \\boxed{3}。"),
         Trace("What is 9/3?", "9 divided by 3 is 3.", "The answer is \\boxed{3}.")]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lora_steps_on_embedded_model(tmp_path):
    out = tmp_path / "mini"
    # one step = the same 4 traces (grad_accum 4): the logged loss of step 3 follows two updates on them
    cfg = SFTConfig(lr=1e-3, max_steps=3, grad_accum=4, warmup_steps=0, max_len=128, lora_rank=8,
                    train_layers=tuple(range(12, 24)), save_every=3)
    res = train_full(REAL_MODEL, SHORT, cfg, out, progress=False)
    rows = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    assert res.finished and [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["loss"] < rows[0]["loss"], rows
    code = textwrap.dedent(f"""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        m = AutoModelForCausalLM.from_pretrained({str(out)!r}, dtype=torch.bfloat16)
        t = AutoTokenizer.from_pretrained({str(out)!r})
        ids = t.apply_chat_template([{{"role": "user", "content": "What is 2+3?"}}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            assert torch.isfinite(m(ids).logits).all()
        print("OK", m.config.model_type)""")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert "OK qwen2" in r.stdout, r.stderr[-2000:]
