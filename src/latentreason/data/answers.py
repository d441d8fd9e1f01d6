"""Answer extraction and comparison (SPEC §2.8).

``locate_answer`` finds where the answer is written — the text after the *last* answer marker,
else the content of the last ``\\boxed{}``, else the whole output — and ``parse_number`` reads a
number from it. Which number (the one documented choice beyond SPEC §2.8):

* after a marker or inside ``\\boxed{}``: the **first** number, GSM8K's convention (the number
  right after ``####``): ``#### 18 dollars for 2 hours`` reads 18, ``#### 5-3`` reads 5;
* in the whole-output fallback (no marker, no box): the **last** number (SPEC §2.8 rule 3, which
  was written for this case: an unmarked output usually ends with its result).

A number is ``-?\\d*\\.?\\d+`` with an optional exponent and an optional ``/denominator``
(``3/4`` reads 0.75), after cleaning (unicode minus, ``$``, ``%``, thousands separators).
``judge`` compares a model's output with the gold answer according to the answer's type and a
comparison mode:

* ``tolerant`` (default): numbers equal under ``math.isclose(rel_tol=1e-9, abs_tol=1e-6)``;
* ``round:K``: both rounded to K decimals first (GSM-Hard's non-terminating targets);
* ``icot`` / ``coconut``: exact string after the marker, commas removed (parity with those repos);
* ``codi``: last match of ``-?\\d+\\.?\\d*`` after removing commas, exact float equality;
* ``math_verify``: free-form LaTeX through ``math_verify.verify(parse(gold), parse(pred))``.

A gold answer that is a math expression rather than a number (``\\frac{1}{3}``, ``2\\sqrt{3}``)
is compared with math-verify; for ``answer_type`` ``math`` a prediction the numeric rule does not
match is also given to math-verify (``\\boxed{\\frac{1}{2}}`` = 0.5).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass

DEFAULT_MARKERS = ("####", "###", "The answer is:", "The answer is")

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_UNSIGNED = r"(?:\d+\.?\d*|\.\d+)"
#: one number: optional minus, digits with an optional decimal part or exponent, optional "/denominator"
_NUMBER = re.compile(rf"-?{_UNSIGNED}(?:[eE][-+]?\d+)?(?:/{_UNSIGNED}(?![\d.]))?")
_CODI_NUMBER = re.compile(r"-?\d+\.?\d*")
_BOXED = re.compile(r"\\boxed\{")
_MINUS = {"\u2212": "-", "\u2013": "-", "\u2014": "-", "\ufe63": "-", "\uff0d": "-"}


def _boxed_content(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, with nested braces balanced."""
    last = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            last = text[m.end() : i - 1]
    return last


def locate_answer(text: str, markers: tuple[str, ...] | list[str] = DEFAULT_MARKERS) -> tuple[str, str]:
    """``(span, where)``: the text after the *last* answer marker (``where`` = ``"marker"``), else the
    content of ``\\boxed{}`` (``"boxed"``), else the whole output (``"output"``), stripped."""
    best_pos, best_marker = -1, ""
    for marker in markers:
        pos = text.rfind(marker)
        # prefer the marker that ends last; on a tie the longer one ("####" over "###")
        if pos >= 0 and (pos + len(marker) > best_pos + len(best_marker)):
            best_pos, best_marker = pos, marker
    if best_pos >= 0:
        return text[best_pos + len(best_marker) :].strip(), "marker"
    boxed = _boxed_content(text)
    if boxed is not None:
        return boxed.strip(), "boxed"
    return text.strip(), "output"


def extract_span(text: str, markers: tuple[str, ...] | list[str] = DEFAULT_MARKERS) -> str:
    """Text after the *last* answer marker, else the content of ``\\boxed{}``, else all of it."""
    return locate_answer(text, markers)[0]


def clean_number_text(span: str) -> str:
    for k, v in _MINUS.items():
        span = span.replace(k, v)
    span = span.replace("$", "").replace("%", "")
    return _THOUSANDS.sub("", span).strip()


def _to_float(token: str) -> float | None:
    num, _, den = token.partition("/")
    try:
        value = float(num)
        if den:
            d = float(den)
            return None if d == 0 else value / d
        return value
    except ValueError:
        return None


def parse_number(span: str | float | int | None, which: str = "first") -> float | None:
    """The ``first`` (default: the number after a marker) or ``last`` (whole-output fallback) number
    in ``span`` as a float (``18`` = ``18.0`` = ``18.``; ``3/4`` = 0.75), or ``None``."""
    if span is None:
        return None
    if isinstance(span, (int, float)):
        return float(span)
    if which not in ("first", "last"):
        raise ValueError(f"which must be 'first' or 'last', got {which!r}")
    matches = _NUMBER.findall(clean_number_text(span))
    if not matches:
        return None
    return _to_float(matches[0] if which == "first" else matches[-1])


def plain_number(text: str) -> float | None:
    """``text`` as a number when it is exactly one (``18``, ``-3.5``, ``1,234``, ``$5``, ``3/4``), else None."""
    m = _NUMBER.fullmatch(clean_number_text(text))
    return _to_float(m.group(0)) if m else None


def numbers_equal(pred: float, gold: float, mode: str = "tolerant") -> bool:
    if mode.startswith("round:"):
        k = int(mode.split(":", 1)[1])
        return round(pred, k) == round(gold, k)
    return math.isclose(pred, gold, rel_tol=1e-9, abs_tol=1e-6)


@dataclass
class Judgement:
    correct: bool
    parsed: bool
    prediction: str


def judge(
    output: str,
    gold: str,
    answer_type: str = "number",
    mode: str = "tolerant",
    markers: tuple[str, ...] | list[str] = DEFAULT_MARKERS,
) -> Judgement:
    """Compare a model's full output text with the gold answer (see the module docstring)."""
    span, where = locate_answer(output, markers)
    if mode in ("icot", "coconut"):
        pred = span.replace(",", "").strip()
        return Judgement(pred == gold.replace(",", "").strip(), bool(pred), pred)
    if mode == "codi":
        found = _CODI_NUMBER.findall(output.replace(",", ""))
        if not found:
            return Judgement(False, False, "")
        g = parse_number(gold)
        return Judgement(g is not None and float(found[-1]) == g, True, found[-1])
    if mode == "math_verify":
        return _judge_math_verify(span, gold)
    if answer_type in ("number", "math"):
        g = plain_number(gold)
        if g is None:  # the gold is a math expression, not a number
            return _judge_math_verify(span, gold)
        pred = parse_number(span, "last" if where == "output" else "first")
        numeric = Judgement(pred is not None and numbers_equal(pred, g, mode), pred is not None,
                            _format_number(pred) if pred is not None else span)
        if answer_type == "math" and not numeric.correct:
            mv = _judge_math_verify(span, gold)
            if mv.correct or not numeric.parsed:
                return mv
        return numeric
    if answer_type == "bool":
        pred = span.strip().rstrip(".").strip()
        ok = pred.lower() in ("true", "false")
        return Judgement(ok and pred.lower() == gold.strip().lower(), ok, pred)
    if answer_type == "choice":
        pred = span.strip().rstrip(".").strip()
        gold_label, _, gold_text = gold.partition(":")
        ok = pred.upper() == gold_label.strip().upper() or (
            bool(gold_text) and pred.lower() == gold_text.strip().lower()
        )
        return Judgement(ok, bool(pred), pred)
    # free text (ProsQA): the stripped answer sentence
    pred = " ".join(span.split())
    return Judgement(pred == " ".join(gold.split()), bool(pred), pred)


def is_correct(output: str, gold: str, answer_type: str = "number", mode: str = "tolerant") -> bool:
    return judge(output, gold, answer_type, mode).correct


def _format_number(x: float) -> str:
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _as_latex(text: str) -> str:
    """``text`` inside ``$...$`` unless it already is delimited LaTeX (``$``, ``\\(``, ``\\[``, ``\\boxed``)."""
    return text if any(d in text for d in ("$", "\\(", "\\[", "\\boxed")) else f"${text}$"


def _judge_math_verify(span: str, gold: str) -> Judgement:
    """Free-form answers through math-verify (gold first; it uses signal.alarm: main thread only)."""
    from math_verify import parse, verify  # heavy to import; only answer_mode math_verify needs it

    kwargs = {}
    if threading.current_thread() is not threading.main_thread():
        kwargs = {"parsing_timeout": None}
    try:
        gold_parsed = parse(_as_latex(gold), **kwargs)
        pred_parsed = parse(_as_latex(span), **kwargs)
    except Exception:  # noqa: BLE001 - math-verify raises many types on odd input
        return Judgement(False, False, span)
    if not pred_parsed:
        return Judgement(False, False, span)
    try:
        vkw = {"timeout_seconds": None} if kwargs else {}
        ok = bool(verify(gold_parsed, pred_parsed, **vkw))
    except Exception:  # noqa: BLE001
        ok = False
    return Judgement(ok, True, span)
