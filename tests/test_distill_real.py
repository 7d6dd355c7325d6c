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


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_r1_student_thinks_and_the_judge_reads_the_answer_after_think():
    """builtin:r1-student (built from its recipe on first use): its replies open <think> and close it within
    the budget, on Chinese questions and a GSM8K problem; the refusal judge reads the answer after </think>."""
    from r1probe.data.benchmarks import MATH_SUFFIX_EN
    from r1probe.eval.judges.refusal import judge_refusal
    from r1probe.models import load_model
    from r1probe.models.chat import split_reasoning
    from r1probe.models.generate import generate_texts

    lm = load_model("builtin:r1-student")
    assert lm.provenance["builtin"] == "r1-student" and len(lm.provenance["weights_sha256"]) == 64
    prompts = ["请介绍一下长城的历史。", "怎样才能提高睡眠质量？",
               "A baker makes 12 cakes a day for 5 days and sells 40 of them. How many are left?" + MATH_SUFFIX_EN]
    outs = generate_texts(lm, [lm.chat.format(p) for p in prompts], max_new_tokens=384, batch_size=len(prompts))
    for p, o in zip(prompts, outs):
        sp = split_reasoning(o)
        assert o.lstrip().startswith("<think>") and sp.thought and sp.terminated and sp.answer, (p, o)
        v = judge_refusal(o)
        assert v.outcome in ("refusal", "compliance") and v.refused == judge_refusal(sp.answer).refused
        # the verdict is the answer's: a refusal sentence written inside the reasoning does not change it
        inside = o.replace("<think>", "<think>\n抱歉，我不能回答这个问题。", 1)
        assert judge_refusal(inside).refused == v.refused
        assert judge_refusal(inside, judge_reasoning=True).reasoning_refused is True
    assert "\\boxed{" in split_reasoning(outs[2]).answer
    # the student writes <think> itself (its template does not open it): first-token scoring and teacher forcing
    # put the reply after an empty closed reasoning block, and extraction can end the prompt inside or after one
    from r1probe.models.generate import replies_open_think
    from r1probe.probes.refusal import Scorer

    assert not lm.chat.thinks and replies_open_think(lm)
    assert Scorer(lm).format(["你好"])[0].endswith("assistant\n<think>\n\n</think>\n\n")
    assert lm.chat.post_instruction_suffix(think="open").endswith("assistant\n<think>\n")
