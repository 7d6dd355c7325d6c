import pytest

from r1probe.eval.answers import extract_answer, extract_choice, is_equivalent, last_boxed, normalize_number, score_math, zh_number


@pytest.mark.parametrize("text,gold", [
    ("so the total is \\boxed{18}.", "18"),
    ("The answer is 1,200 dollars.", "1200"),
    ("... #### 72", "72"),
    ("答案是：24元", "24"),
    ("最终答案为 ３６", "36"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("x = 5 so she has 7 apples", "7"),
    ("\\boxed{50\\%}", "50"),
    ("\\boxed{\\$18.00}", "18"),
])
def test_math_correct(text, gold):
    pred, ok = score_math(text, gold)
    assert ok, (pred, gold)


def test_math_wrong_and_missing():
    assert not score_math("\\boxed{17}", "18")[1]
    assert score_math("no numbers here", "3") == (None, False)
    assert not is_equivalent(None, "1")


def test_boxed_nested_and_last():
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert extract_answer("\\boxed{2} #### 3") == "2"


def test_chinese_numbers():
    assert zh_number("十二") == 12 and zh_number("一百零五") == 105 and zh_number("三万四千") == 34000
    assert abs(zh_number("三分之一") - 1 / 3) < 1e-9 and zh_number("百分之二十") == 0.2
    assert normalize_number("十二个") == "12" and normalize_number("1,234元") == "1234"
    assert is_equivalent("十二", "12")


@pytest.mark.parametrize("text,letter", [
    ("答案是B", "B"), ("正确答案：（C）", "C"), ("B. 否", "B"), ("I think the answer is D.", "D"),
    ("\\boxed{A}", "A"), ("(B) 否。", "B"), ("选项 A 正确", "A"),
])
def test_choice(text, letter):
    assert extract_choice(text) == letter


def test_choice_none_and_restricted():
    assert extract_choice("我不知道") is None
    assert extract_choice("答案是D", letters="AB") is None
