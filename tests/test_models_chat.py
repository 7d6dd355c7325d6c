import pytest

from r1probe.errors import R1ProbeError
from r1probe.models.chat import ChatFormatter, r1_template, resolve_template, split_reasoning, to_messages


def test_split_reasoning_closed_block():
    s = split_reasoning("<think>\n先想一想\n</think>\n\n答案是 42")
    assert (s.reasoning, s.answer, s.thought, s.terminated) == ("先想一想", "答案是 42", True, True)


def test_split_reasoning_missing_opening_tag():
    # the R1 template puts "<think>\n" in the prompt, so the completion starts inside the block
    s = split_reasoning("推理……\n</think>\n\n我不能帮助。", prompt_opened_think=True)
    assert s.reasoning == "推理……" and s.answer == "我不能帮助。" and s.terminated
    # a lone closing tag is enough even without the flag
    assert split_reasoning("x</think>y").answer == "y"


def test_split_reasoning_unterminated_is_flagged():
    s = split_reasoning("还在想", prompt_opened_think=True)
    assert s.thought and not s.terminated and s.answer == "" and s.reasoning == "还在想"


def test_split_reasoning_non_thinking_model():
    s = split_reasoning("春风吹绿柳。")
    assert not s.thought and s.terminated and s.answer == "春风吹绿柳。"


def test_to_messages_system_and_history():
    hist = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    msgs = to_messages("c", system="S", history=hist)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    # a history that already opens with a system message keeps it (CHiSafetyBench multi-turn)
    msgs = to_messages("c", system="X", history=[{"role": "system", "content": "S"}] + hist)
    assert msgs[0]["content"] == "S" and sum(m["role"] == "system" for m in msgs) == 1


def test_native_template_post_instruction_positions(tiny_lm):
    chat = tiny_lm.chat
    text = chat.format("如何制作炸弹")
    pos = chat.post_instruction_positions(text)
    ids = chat.encode(text)
    decoded = tiny_lm.tokenizer.decode([ids[i] for i in pos])
    assert decoded == "<|im_end|>\n<|im_start|>assistant\n"
    assert pos == chat.post_instruction_positions(text, instruction="如何制作炸弹")


def test_r1_template_renders_like_upstream(tiny_lm):
    chat = ChatFormatter(tiny_lm.tokenizer, r1_template(), "r1")
    msgs = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "<think>\nx\n</think>\n\n答"}, {"role": "user", "content": "再见"}]
    text = chat.render(msgs)
    bos = tiny_lm.tokenizer.bos_token or "<｜begin▁of▁sentence｜>"
    assert text == f"{bos}SYS<｜User｜>你好<｜Assistant｜>\n\n答<｜end▁of▁sentence｜><｜User｜>再见<｜Assistant｜><think>\n"
    assert chat.thinks and not tiny_lm.chat.thinks
    assert chat.render(msgs, close_think=True).endswith("<｜Assistant｜><think>\n\n</think>\n\n")
    pos = chat.post_instruction_positions(text)
    ids = chat.encode(text)
    assert tiny_lm.tokenizer.decode([ids[i] for i in pos]) == "<｜Assistant｜><think>\n"


def test_think_prefix_places_the_reply_start_inside_or_after_a_reasoning_block(tiny_lm):
    qwen, r1 = tiny_lm.chat, ChatFormatter(tiny_lm.tokenizer, r1_template(), "r1")
    plain = qwen.format("你好")
    assert qwen.format("你好", think="open") == plain + "<think>\n"
    assert qwen.format("你好", think="closed") == plain + "<think>\n\n</think>\n\n"
    assert qwen.post_instruction_suffix(think="open") == "<|im_end|>\n<|im_start|>assistant\n<think>\n"
    # an R1 prompt opens the block already: 'open' leaves it, 'closed' closes it as close_think does
    assert r1.format("你好", think="open") == r1.format("你好")
    assert r1.format("你好", think="closed") == r1.format("你好", close_think=True)
    assert r1.format("你好", think="closed").count("<think>") == 1
    text = qwen.format("你好", think="open")
    ids = qwen.encode(text)
    pos = qwen.post_instruction_positions(text, instruction="你好")
    assert tiny_lm.tokenizer.decode([ids[i] for i in pos]) == "<|im_end|>\n<|im_start|>assistant\n<think>\n"
    with pytest.raises(ValueError, match="think"):
        qwen.format("你好", think="half")


def test_template_choice(tiny_lm, tmp_path):
    assert resolve_template("r1", tiny_lm.tokenizer)[1] == "r1"
    assert resolve_template(None, tiny_lm.tokenizer)[1] == "native"
    f = tmp_path / "t.jinja"
    f.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert resolve_template(str(f), tiny_lm.tokenizer) == (f.read_text(), "custom")
    with pytest.raises(R1ProbeError):
        resolve_template("no-such-template", tiny_lm.tokenizer)
