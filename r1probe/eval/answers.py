"""Answer extraction and equivalence for maths and multiple-choice replies.

Extraction order (:func:`extract_answer`): the last ``\\boxed{...}`` (balanced braces), then
``#### X``, then "answer is X" / "答案是 X" / "答案：X", then the last number in the text.
Numbers are normalised (thousands separators, full-width digits, trailing units such as 元/个,
``%``, Chinese numerals such as 十二 or 三分之一). Equivalence (:func:`is_equivalent`) uses
math-verify (numeric and symbolic, LaTeX aware) when installed, else numeric comparison with a
relative tolerance of 1e-6, else normalised string equality.
"""

from __future__ import annotations

import re
from fractions import Fraction

_FULLWIDTH = str.maketrans("０１２３４５６７８９．，－＋／", "0123456789.,-+/")
_NUM_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+(?:\.\d+)?)?")
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000, "亿": 100000000}


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = text.find("{", idx)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j].strip()
    return None


def zh_number(s: str) -> float | None:
    """Parse a Chinese numeral (十二, 一百零五, 三万四千, 三分之一, 百分之二十) or None."""
    s = s.strip()
    if "分之" in s:
        den, _, num = s.partition("分之")
        if den == "百":
            n = zh_number(num)
            return None if n is None else n / 100
        d, n = zh_number(den), zh_number(num)
        return None if d in (None, 0) or n is None else n / d
    if not s or any(c not in _ZH_DIGITS and c not in _ZH_UNITS for c in s):
        return None
    total, section, digit = 0, 0, None
    for c in s:
        if c in _ZH_DIGITS:
            digit = _ZH_DIGITS[c]
        else:
            unit = _ZH_UNITS[c]
            if unit >= 10000:
                section = (section + (digit or 0)) * unit
                total += section
                section = 0
            else:
                section += (1 if digit is None else digit) * unit
            digit = None
    return float(total + section + (digit or 0))


def normalize_number(s: str) -> str:
    """Strip units, separators, ``$``, LaTeX wrappers; keep a plain number string when possible."""
    t = s.translate(_FULLWIDTH).strip()
    t = re.sub(r"\\text\{([^}]*)\}", r"\1", t)
    t = t.replace("\\$", "").replace("$", "").replace("\\%", "%").replace("\\!", "").replace("，", ",")
    t = re.sub(r"^\\?\(|\\?\)$", "", t) if t.startswith("\\(") else t
    frac = re.fullmatch(r"\\d?frac\{(-?\d+)\}\{(-?\d+)\}", t)
    if frac:
        return _fmt(Fraction(int(frac.group(1)), int(frac.group(2))))
    m = _NUM_RE.search(t)
    if m and re.fullmatch(r"[\s\-+]*" + re.escape(m.group(0)) + r"\s*(%|[\u4e00-\u9fff]{0,3}|[a-zA-Z]{0,8})\.?\s*", t):
        v = m.group(0).replace(",", "")
        try:
            return _fmt(Fraction(v)) if "/" not in v else _fmt(Fraction(*map(Fraction, v.split("/"))))
        except (ValueError, ZeroDivisionError):
            return v
    z = zh_number(re.sub(r"[个元只人本件名天米克岁条块张次页]$", "", t))
    if z is not None:
        return _fmt(Fraction(z).limit_denominator(10000))
    return t


def _fmt(f: Fraction) -> str:
    if f.denominator == 1:
        return str(f.numerator)
    x = float(f)
    return repr(round(x, 10)) if len(repr(x)) < 14 else f"{f.numerator}/{f.denominator}"


_ANSWER_IS = re.compile(
    r"(?:final answer|answer)\s*(?:is|:)\s*[:：]?\s*\$?([^\n$。]+)|(?:最终答案|答案|结果)\s*(?:是|为|：|:)\s*[:：]?\s*\$?([^\n$。，,]+)", re.I)


def extract_answer(text: str) -> str | None:
    """The final answer string of a maths reply, or None when there is none."""
    if not text:
        return None
    b = last_boxed(text)
    if b is not None:
        return b
    m = re.findall(r"####\s*([^\n]+)", text)
    if m:
        return m[-1].strip()
    hits = _ANSWER_IS.findall(text)
    if hits:
        a = next(x for x in hits[-1] if x).strip()
        num = _NUM_RE.findall(a.translate(_FULLWIDTH))
        return num[0] if num else a
    nums = _NUM_RE.findall(text.translate(_FULLWIDTH))
    return nums[-1] if nums else None


def _as_float(s: str) -> float | None:
    n = normalize_number(s)
    try:
        return float(Fraction(n))
    except (ValueError, ZeroDivisionError):
        return None


def is_equivalent(pred: str | None, gold: str, use_math_verify: bool = True) -> bool:
    """True when ``pred`` equals ``gold`` numerically or symbolically."""
    if pred is None:
        return False
    a, b = _as_float(pred), _as_float(gold)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    if use_math_verify:
        try:
            from math_verify import parse, verify

            g = parse("$" + gold + "$") or parse(gold)
            p = parse("$" + pred + "$") or parse(pred)
            if g and p and verify(g, p):
                return True
        except Exception:  # noqa: BLE001 - math-verify missing or failed: fall back
            pass
    norm = lambda s: re.sub(r"\s+|\\left|\\right|\\!|\\,|\$", "", s).replace("dfrac", "frac")  # noqa: E731
    return norm(pred) == norm(gold)


def score_math(reply_answer: str, gold: str) -> tuple[str | None, bool]:
    pred = extract_answer(reply_answer)
    return pred, is_equivalent(pred, gold)


_LETTER_PATTERNS = [
    r"(?:答案|选项|正确选项|正确答案|答)\s*(?:是|为|应该是|应为)?\s*[:：]?\s*[（(]?\s*([A-H])\b",
    r"(?:answer|option)\s*(?:is|:)?\s*[:：]?\s*\(?([A-H])\b",
    r"\\boxed\{\s*\(?([A-H])\)?\s*\}",
    r"^\s*[（(]?([A-H])[)）]?(?:[\.．、:：\s]|$)",
    r"[（(]([A-H])[)）]",
    r"(?<![A-Za-z])([A-H])(?![A-Za-z])",
]


def extract_choice(text: str, letters: str = "ABCDEFGH") -> str | None:
    """The option letter a reply chooses (答案是B, (B), B. ..., \\boxed{B}, a lone letter)."""
    if not text:
        return None
    t = text.translate(_FULLWIDTH).replace("Ａ", "A").replace("Ｂ", "B").replace("Ｃ", "C").replace("Ｄ", "D")
    for p in _LETTER_PATTERNS:
        m = re.search(p, t, re.I | re.M) if "answer" in p else re.search(p, t, re.M)
        if m and m.group(1).upper() in letters:
            return m.group(1).upper()
    return None
