"""One loader per data format (SPEC §2), all yielding :class:`Example`.

Formats (``FORMATS``):

==================  =====================================================================
``gsm8k_aug``       ``question||<<a=b>> <<c=d>> #### answer`` (iCoT / Coconut / CODI equation CoT)
``gsm8k_aug_nl``    same layout, natural-language CoT split into sentences on ``". "``
``icot_mult``       ``5 6 3 2 * 7 4 3 4||... #### 5 5 6 0 8 2 0 1`` (digits LSD first)
``gsm8k``           GSM8K jsonl ``{"question", "answer": "...\\n#### 18"}``
``svamp``           SVAMP json array ``{"Body", "Question", "Answer", ...}``
``gsm_hard``        PAL jsonl ``{"input", "code", "target"}``
``pal``             PAL jsonl ``{"input", "target"}`` (MultiArith, ASDiv)
``prosqa``          Coconut json array ``{"question", "steps", "answer": sentence, ...}``
``prontoqa``        Coconut json array ``{"question", "steps", "answer": "True"|"False", ...}``
``commonsenseqa``   CommonsenseQA jsonl ``{"answerKey", "id", "question": {"stem", "choices"}}``
``jsonl``           this package's own records ``{"question", "steps", "answer", "meta"?}``
==================  =====================================================================

Malformed input raises :class:`~latentreason.errors.DataError` naming the file, the line and
what was expected. Gold answers are checked per format, so that an answer the evaluation could
never match is an error rather than a silent zero: a number for ``gsm8k_aug``, ``gsm8k_aug_nl``,
``gsm8k`` and ``jsonl`` records of answer type ``number`` (``18``, ``-3.5``, ``1,234``, ``$5``);
space-separated digits for ``icot_mult``; ``True``/``False`` for ``prontoqa``; one of the choice
labels for ``commonsenseqa`` (absent in its unlabelled test split); JSON numbers for ``svamp``,
``gsm_hard`` and ``pal``; any non-empty sentence for ``prosqa``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from latentreason.data.answers import clean_number_text
from latentreason.data.example import ANSWER_TYPES, Example
from latentreason.errors import DataError

_EQ_STEP = re.compile(r"^<<[^<>]*>>$")
_MULT_Q = re.compile(r"^\d( \d)* \* \d( \d)*$")
_MULT_A = re.compile(r"^\d( \d)*$")
#: a gold numeric answer: optional sign, digits with optional thousands separators and decimals
#: ("18", "-3.5", "1,234", "18.", ".5"); "$" and unicode minus signs are accepted as in SPEC §2.8
_GOLD_NUMBER = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d*)?([eE][-+]?\d+)?$")


# --------------------------------------------------------------------------- reading helpers
def read_text(path: Path) -> str:
    """Whole file as UTF-8 text; a decoding error names the line and byte."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a data file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "expected a UTF-8 text file"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise DataError(f"{path}: file is empty, expected at least one example")
    return text


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    # split on "\n" only: str.splitlines() would also split on U+2028, U+0085, ... inside questions
    for i, line in enumerate(read_text(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield i, line


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: invalid JSON ({e.msg} at column {e.colno}); expected one JSON object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        yield i, obj


def _json_array(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Items of a top-level JSON array, each with a location string for errors."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno}); expected a JSON array of objects") from None
    if not isinstance(data, list):
        raise DataError(f"{path}:1: expected a JSON array of objects, got a {type(data).__name__}")
    out = []
    for k, obj in enumerate(data):
        loc = f"{path}: item {k}"
        if not isinstance(obj, dict):
            raise DataError(f"{loc}: expected a JSON object, got {type(obj).__name__}")
        out.append((loc, obj))
    return out


def _require(obj: dict[str, Any], key: str, types: type | tuple[type, ...], loc: str) -> Any:
    if key not in obj:
        raise DataError(f"{loc}: missing key {key!r} (keys present: {', '.join(sorted(obj)) or 'none'})")
    val = obj[key]
    tt = types if isinstance(types, tuple) else (types,)
    if not isinstance(val, tt) or (isinstance(val, bool) and bool not in tt):
        want = " or ".join(t.__name__ for t in tt)
        raise DataError(f"{loc}: key {key!r} should be {want}, got {type(val).__name__}")
    return val


def check_number_answer(answer: str, loc: str, what: str = "answer") -> str:
    """A gold answer of a numeric data set must be a number; anything else is an error naming ``loc``.

    Without this check a non-numeric gold answer would be silently unmatchable (accuracy 0).
    Accepted: ``18``, ``-3.5``, ``1,234``, ``18.``, ``$5``, ``−2`` (unicode minus), ``1e3``.
    """
    txt = clean_number_text(answer)
    if not txt or not any(c.isdigit() for c in txt) or not _GOLD_NUMBER.match(txt):
        raise DataError(f"{loc}: {what} {answer[:40]!r} is not a number (expected e.g. 18, -3.5 or 1,234)")
    return answer


def _number_text(x: float | int) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x) if isinstance(x, float) else str(x)


# --------------------------------------------------------------------------- line formats
def _split_cot_line(path: Path, i: int, line: str) -> tuple[str, str, str]:
    if "||" not in line:
        raise DataError(f"{path}:{i}: expected 'question||cot #### answer', found no '||'")
    question, rest = line.split("||", 1)
    if "####" not in rest:
        raise DataError(f"{path}:{i}: expected 'question||cot #### answer', found no '####' answer marker")
    cot, answer = rest.rsplit("####", 1)
    question, cot, answer = question.strip(), cot.strip(), answer.strip()
    if not question:
        raise DataError(f"{path}:{i}: empty question before '||'")
    if not answer:
        raise DataError(f"{path}:{i}: empty answer after '####'")
    return question, cot, answer


def load_gsm8k_aug(path: Path) -> list[Example]:
    out = []
    for i, line in _lines(path):
        q, cot, a = _split_cot_line(path, i, line)
        check_number_answer(a, f"{path}:{i}", "answer after '####'")
        steps = cot.split()
        out.append(Example(q, steps, a, {"source_line": i}))
    return out


def split_nl_steps(cot: str) -> list[str]:
    """CODI's NL step split: on '. ' (the period stays with its sentence)."""
    if not cot:
        return []
    parts = cot.split(". ")
    return [p + "." if k < len(parts) - 1 else p for k, p in enumerate(parts) if p]


def load_gsm8k_aug_nl(path: Path) -> list[Example]:
    out = []
    for i, line in _lines(path):
        q, cot, a = _split_cot_line(path, i, line)
        check_number_answer(a, f"{path}:{i}", "answer after '####'")
        out.append(Example(q, split_nl_steps(cot), a, {"source_line": i}))
    return out


def load_icot_mult(path: Path) -> list[Example]:
    out = []
    for i, line in _lines(path):
        q, cot, a = _split_cot_line(path, i, line)
        if not _MULT_Q.match(q):
            raise DataError(f"{path}:{i}: expected digits 'a * b' (space-separated, LSD first), got {q[:40]!r}")
        if not _MULT_A.match(a):
            raise DataError(f"{path}:{i}: answer {a[:40]!r} after '####' is not space-separated digits (e.g. '5 5 6 0')")
        steps = [s.strip() for s in cot.split(" + ")] if cot else []
        # the partial products are joined by " + " in the CoT (kept by the serialisations: iCoT trains on it)
        out.append(Example(q, steps, a, {"source_line": i, "answer_type": "text", "step_sep": " + "}))
    return out


# --------------------------------------------------------------------------- json formats
def load_gsm8k(path: Path) -> list[Example]:
    out = []
    for i, obj in _json_lines(path):
        loc = f"{path}:{i}"
        q = _require(obj, "question", str, loc)
        sol = _require(obj, "answer", str, loc)
        if "####" not in sol:
            raise DataError(f"{loc}: answer has no '####' marker; expected a GSM8K solution ending in '#### <number>'")
        body, gold = sol.rsplit("####", 1)
        gold = gold.strip().replace(",", "")
        if not gold:
            raise DataError(f"{loc}: empty answer after '####'")
        check_number_answer(gold, loc, "answer after '####'")
        steps = [s.strip() for s in body.strip().split("\n") if s.strip()]
        out.append(Example(q.strip(), steps, gold, {"source_line": i}))
    return out


def load_svamp(path: Path) -> list[Example]:
    out = []
    for loc, obj in _json_array(path):
        body = _require(obj, "Body", str, loc).strip()
        question = _require(obj, "Question", str, loc).strip()
        ans = _require(obj, "Answer", (int, float), loc)
        meta = {k: v for k, v in obj.items() if k not in ("Body", "Question", "Answer")}
        meta["gold"] = ans
        out.append(Example(f"{body} {question}".strip(), [], _number_text(ans), meta))
    return out


def load_gsm_hard(path: Path) -> list[Example]:
    out = []
    for i, obj in _json_lines(path):
        loc = f"{path}:{i}"
        q = _require(obj, "input", str, loc)
        target = _require(obj, "target", (int, float), loc)
        out.append(Example(q.strip(), [], _number_text(target), {"source_line": i, "gold": target}))
    return out


def load_pal(path: Path) -> list[Example]:
    """MultiArith / ASDiv in PAL's layout (``{"input", "target"}``)."""
    return load_gsm_hard(path)


def _load_coconut_json(path: Path, kind: str) -> list[Example]:
    out = []
    for loc, obj in _json_array(path):
        q = _require(obj, "question", str, loc)
        steps = _require(obj, "steps", list, loc)
        if not all(isinstance(s, str) for s in steps):
            raise DataError(f"{loc}: key 'steps' should be a list of strings")
        a = _require(obj, "answer", str, loc)
        meta = {k: v for k, v in obj.items() if k not in ("question", "steps", "answer")}
        if kind == "prontoqa":
            if a.strip() not in ("True", "False"):
                raise DataError(f"{loc}: ProntoQA answer should be 'True' or 'False', got {a!r}")
            meta["answer_type"] = "bool"
        else:
            meta["answer_type"] = "text"
        out.append(Example(q, list(steps), a, meta))
    return out


def load_prosqa(path: Path) -> list[Example]:
    return _load_coconut_json(path, "prosqa")


def load_prontoqa(path: Path) -> list[Example]:
    return _load_coconut_json(path, "prontoqa")


def load_commonsenseqa(path: Path) -> list[Example]:
    """CommonsenseQA jsonl; CoS-E explanations are joined on ``id`` when a sibling cose file exists."""
    expl = _cose_explanations(path)
    out = []
    for i, obj in _json_lines(path):
        loc = f"{path}:{i}"
        qobj = _require(obj, "question", dict, loc)
        stem = _require(qobj, "stem", str, loc + " question")
        choices = _require(qobj, "choices", list, loc + " question")
        labels = []
        for c in choices:
            if not isinstance(c, dict) or "label" not in c or "text" not in c:
                raise DataError(f"{loc}: each choice should be an object with 'label' and 'text'")
            labels.append((c["label"], c["text"]))
        key = obj.get("answerKey")
        if key is not None and (not isinstance(key, str) or key not in dict(labels)):
            raise DataError(
                f"{loc}: answerKey {key!r} is not one of the choice labels ({', '.join(str(lab) for lab, _ in labels)})"
            )
        text = dict(labels).get(key, "") if key else ""
        q = stem + " " + " ".join(f"({lab}) {t}" for lab, t in labels)
        steps = [expl[obj["id"]]] if obj.get("id") in expl else []
        out.append(
            Example(q, steps, f"{key}:{text}" if key else "", {"answer_type": "choice", "id": obj.get("id"), "choices": labels})
        )
    return out


def _cose_explanations(path: Path) -> dict[str, str]:
    m = re.match(r"(train|dev)_rand_split\.jsonl$", path.name)
    if not m:
        return {}
    out: dict[str, str] = {}
    for cand in sorted(path.parent.glob(f"cose_{m.group(1)}_*.jsonl")):
        for _, obj in _json_lines(cand):
            e = obj.get("explanation", {})
            if isinstance(e, dict) and "open-ended" in e:
                out[obj.get("id")] = e["open-ended"]
    return out


def load_records_jsonl(path: Path) -> list[Example]:
    out = []
    for i, obj in _json_lines(path):
        loc = f"{path}:{i}"
        q = _require(obj, "question", str, loc)
        steps = _require(obj, "steps", list, loc)
        a = obj.get("answer")
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            a = _number_text(a)
        if not isinstance(a, str):
            raise DataError(f"{loc}: key 'answer' should be a string or number")
        meta = obj.get("meta", {})
        if not isinstance(meta, dict):
            raise DataError(f"{loc}: key 'meta' should be an object")
        kind = meta.get("answer_type", "number")
        if kind not in ANSWER_TYPES:
            raise DataError(f"{loc}: meta.answer_type {kind!r} is not one of {', '.join(ANSWER_TYPES)}")
        if kind == "number":
            check_number_answer(a, loc, "answer (meta.answer_type number, the default)")
        elif kind == "bool" and a.strip() not in ("True", "False"):
            raise DataError(f"{loc}: answer {a!r} of answer_type bool should be 'True' or 'False'")
        out.append(Example(q, [str(s) for s in steps], a, meta))
    return out


FORMATS: dict[str, Callable[[Path], list[Example]]] = {
    "gsm8k_aug": load_gsm8k_aug,
    "gsm8k_aug_nl": load_gsm8k_aug_nl,
    "icot_mult": load_icot_mult,
    "gsm8k": load_gsm8k,
    "svamp": load_svamp,
    "gsm_hard": load_gsm_hard,
    "pal": load_pal,
    "multiarith": load_pal,
    "asdiv": load_pal,
    "prosqa": load_prosqa,
    "prontoqa": load_prontoqa,
    "commonsenseqa": load_commonsenseqa,
    "jsonl": load_records_jsonl,
}


# --------------------------------------------------------------------------- detection
def detect_format(path: Path) -> str:
    """Guess a file's format from its content (the first record)."""
    text = read_text(path)
    head = text.lstrip()
    if head.startswith("["):
        items = _json_array(path)
        if not items:
            raise DataError(f"{path}: JSON array is empty, expected at least one example")
        loc, first = items[0]
        if "Body" in first and "Question" in first:
            return "svamp"
        if "question" in first and "answer" in first:
            return "prontoqa" if str(first["answer"]).strip() in ("True", "False") else "prosqa"
        raise DataError(f"{loc}: unknown JSON record layout (keys: {', '.join(sorted(first))}); pass --format")
    if head.startswith("{"):
        i, first = next(_json_lines(path))
        if "question" in first and isinstance(first.get("question"), dict):
            return "commonsenseqa"
        if "steps" in first and "question" in first:
            return "jsonl"
        if "question" in first and "answer" in first:
            return "gsm8k"
        if "input" in first and "target" in first:
            return "gsm_hard" if "code" in first else "pal"
        raise DataError(f"{path}:{i}: unknown JSON-lines record layout (keys: {', '.join(sorted(first))}); pass --format")
    i, line = next(_lines(path))
    if "||" in line:
        q, cot, _ = _split_cot_line(path, i, line)
        if _MULT_Q.match(q):
            return "icot_mult"
        steps = cot.split()
        if all(_EQ_STEP.match(s) for s in steps):
            return "gsm8k_aug"
        return "gsm8k_aug_nl"
    raise DataError(
        f"{path}:{i}: cannot tell the format of this file (expected 'question||cot #### answer' lines, "
        "JSON lines or a JSON array); pass --format with one of: " + ", ".join(FORMATS)
    )


def load_file(path: str | Path, fmt: str | None = None) -> list[Example]:
    """Load a data file, detecting its format unless ``fmt`` is given."""
    path = Path(path)
    if fmt not in (None, "auto") and fmt not in FORMATS:
        raise DataError(f"{path}: unknown data format {fmt!r} (--format / data.format); valid formats: {', '.join(FORMATS)}")
    if fmt in (None, "auto"):
        fmt = detect_format(path)
    examples = FORMATS[fmt](path)
    if not examples:
        raise DataError(f"{path}: no examples found")
    return examples
