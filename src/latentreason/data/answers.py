"""Answer extraction and comparison (SPEC §2.8).

``extract_span`` finds the text after the last answer marker, ``parse_number`` turns it into a
float, and ``is_correct`` compares a model's output with the gold answer according to the
answer's type and a comparison mode:

* ``tolerant`` (default): numbers equal under ``math.isclose(rel_tol=1e-9, abs_tol=1e-6)``;
* ``round:K``: both rounded to K decimals first (GSM-Hard's non-terminating targets);
* ``icot`` / ``coconut``: exact string after the marker, commas removed (parity with those repos);
* ``codi``: last match of ``-?\\d+\\.?\\d*`` after removing commas, exact float equality;
* ``math_verify``: free-form LaTeX through ``math_verify.verify(parse(gold), parse(pred))``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

DEFAULT_MARKERS = ("####", "###", "The answer is:", "The answer is")

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"-?\d*\.?\d+(?:[eE][-+]?\d+)?")
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


def extract_span(text: str, markers: tuple[str, ...] | list[str] = DEFAULT_MARKERS) -> str:
    """Text after the *last* answer marker, else the content of ``\\boxed{}``, else all of it."""
    best_pos, best_marker = -1, ""
    for marker in markers:
        pos = text.rfind(marker)
        # prefer the marker that ends last; on a tie the longer one ("####" over "###")
        if pos >= 0 and (pos + len(marker) > best_pos + len(best_marker)):
            best_pos, best_marker = pos, marker
    if best_pos >= 0:
        return text[best_pos + len(best_marker) :].strip()
    boxed = _boxed_content(text)
    if boxed is not None:
        return boxed.strip()
    return text.strip()


def clean_number_text(span: str) -> str:
    for k, v in _MINUS.items():
        span = span.replace(k, v)
    span = span.replace("$", "").replace("%", "")
    return _THOUSANDS.sub("", span).strip()


def parse_number(span: str | float | int | None) -> float | None:
    """Last number in ``span`` as a float (``18`` = ``18.0`` = ``18.``), or ``None``."""
    if span is None:
        return None
    if isinstance(span, (int, float)):
        return float(span)
    matches = _NUMBER.findall(clean_number_text(span))
    if not matches:
        return None
    try:
        return float(matches[-1])
    except ValueError:
        return None


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
    """Compare a model's full output text with the gold answer."""
    span = extract_span(output, markers)
    if mode in ("icot", "coconut"):
        pred = span.replace(",", "").strip()
        return Judgement(pred == gold.replace(",", "").strip(), bool(pred), pred)
    if mode == "codi":
        found = _CODI_NUMBER.findall(output.replace(",", ""))
        if not found:
            return Judgement(False, False, "")
        g = parse_number(gold)
        return Judgement(g is not None and float(found[-1]) == g, True, found[-1])
    if mode == "math_verify" or answer_type == "math":
        return _judge_math_verify(span, gold)
    if answer_type == "number":
        pred = parse_number(span)
        g = parse_number(gold)
        if pred is None:
            return Judgement(False, False, span)
        if g is None:
            return Judgement(False, True, span)
        return Judgement(numbers_equal(pred, g, mode), True, _format_number(pred))
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


def _judge_math_verify(span: str, gold: str) -> Judgement:
    """Free-form answers through math-verify (gold first; it uses signal.alarm: main thread only)."""
    import threading

    from math_verify import parse, verify

    kwargs = {}
    if threading.current_thread() is not threading.main_thread():
        kwargs = {"parsing_timeout": None}
    try:
        gold_parsed = parse(gold if "$" in gold or "\\" in gold else f"${gold}$", **kwargs)
        pred_parsed = parse(span if "$" in span or "\\" in span else f"${span}$", **kwargs)
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
