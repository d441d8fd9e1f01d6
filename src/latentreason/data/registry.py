"""Named data sets, resolved against a data directory, and the one entry point ``load_dataset``.

``load_dataset(name_or_path, split)`` accepts

* a file path (format detected from content unless ``fmt`` is given);
* a named set below, found in a data directory: ``--data-dir`` when given, else
  ``$LATENTREASON_DATA_DIR`` when set, else the first of ``./data``, ``../shared/data`` (this
  repository's neighbourhood) and the user data directory (``~/.cache/latentreason/data``,
  where ``latentreason data download NAME`` puts it) that holds the file;
* ``modchain`` (alias ``default``) and ``modchain_mixed``: the procedural task, generated.

A named set that is found nowhere is an error naming ``latentreason data download NAME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from latentreason.data.example import Example
from latentreason.data.loaders import FORMATS, load_file
from latentreason.data.multiplication import generate_multiplication
from latentreason.data.procedural import TaskConfig, generate_splits
from latentreason.errors import DataError

ENV_DATA_DIR = "LATENTREASON_DATA_DIR"


@dataclass(frozen=True)
class NamedSet:
    files: dict[str, str]  # split -> path relative to the data directory
    fmt: str
    note: str = ""


NAMED: dict[str, NamedSet] = {
    "gsm8k_aug": NamedSet(
        {"train": "gsm8k_aug/train_orig7k_equation.txt", "valid": "gsm8k_aug/valid.txt", "test": "gsm8k_aug/test.txt"},
        "gsm8k_aug",
        "GSM8k-Aug equation CoT (train = the 7k non-augmented core; the ~385k train set is gsm8k_aug_full)",
    ),
    "gsm8k_aug_nl": NamedSet(
        {"train": "gsm8k_aug/train_orig7k_nl.txt", "valid": "gsm8k_aug/valid.txt", "test": "gsm8k_aug/test.txt"},
        "gsm8k_aug_nl",
        "GSM8K train questions with natural-language CoT (valid/test as gsm8k_aug)",
    ),
    "gsm8k_aug_full": NamedSet(
        {"train": "gsm8k_aug/train_full.txt", "valid": "gsm8k_aug/valid.txt", "test": "gsm8k_aug/test.txt"},
        "gsm8k_aug",
        "GSM8k-Aug with the papers' augmented train set (~385k, zen-E/GSM8k-Aug on the Hugging Face Hub); valid/test as gsm8k_aug",
    ),
    "gsm8k_aug_nl_full": NamedSet(
        {"train": "gsm8k_aug/train_full_nl.txt", "valid": "gsm8k_aug/valid.txt", "test": "gsm8k_aug/test.txt"},
        "gsm8k_aug_nl",
        "GSM8k-Aug-NL, CODI's natural-language augmented train set (zen-E/GSM8k-Aug-NL on the Hub); valid/test as gsm8k_aug",
    ),
    "gsm8k": NamedSet({"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}, "gsm8k", "GSM8K original jsonl"),
    "prosqa": NamedSet({"valid": "prosqa/prosqa_valid.json", "test": "prosqa/prosqa_test.json"}, "prosqa", "ProsQA (Coconut)"),
    "prontoqa": NamedSet(
        {"valid": "prontoqa/prontoqa_valid.json", "test": "prontoqa/prontoqa_test.json"}, "prontoqa", "ProntoQA 5-hop"
    ),
    "svamp": NamedSet({"test": "svamp/SVAMP.json"}, "svamp", "SVAMP (evaluation only)"),
    "gsm_hard": NamedSet({"test": "gsm_hard/gsmhardv2.jsonl"}, "gsm_hard", "GSM-Hard (evaluation only)"),
    "multiarith": NamedSet({"test": "multiarith/mawpsmultiarith.jsonl"}, "pal", "MultiArith (evaluation only)"),
    "asdiv": NamedSet({"test": "asdiv/asdiv.jsonl"}, "pal", "ASDiv (evaluation only)"),
    "commonsenseqa": NamedSet(
        {"train": "commonsenseqa_cose/v1.0/train_rand_split.jsonl", "valid": "commonsenseqa_cose/v1.0/dev_rand_split.jsonl"},
        "commonsenseqa",
        "CommonsenseQA v1.0 with CoS-E explanations as a one-step CoT",
    ),
}
for _n in (4, 5, 7, 9, 11):
    NAMED[f"mult_{_n}x{_n}"] = NamedSet(
        {
            "valid": f"icot_multiplication/icot_si_2024/{_n}_by_{_n}_mult/valid.txt",
            "test": f"icot_multiplication/icot_si_2024/{_n}_by_{_n}_mult/test_bigbench.txt",
        },
        "icot_mult",
        f"{_n}x{_n} multiplication (iCoT-SI 2024); train split generated (see data.multiplication)",
    )
for _n in (4, 5):
    NAMED[f"mult_kd_{_n}x{_n}"] = NamedSet(
        {
            "valid": f"icot_multiplication/icot_kd_2023/{_n}_by_{_n}_mult/valid.txt",
            "test": f"icot_multiplication/icot_kd_2023/{_n}_by_{_n}_mult/test_bigbench.txt",
        },
        "icot_mult",
        f"{_n}x{_n} multiplication (iCoT-KD 2023 test set)",
    )

PROCEDURAL = {
    "modchain": TaskConfig(),
    "default": TaskConfig(),
    "modchain_mixed": TaskConfig(n_steps=6, min_steps=1),
}

SPLITS = ("train", "valid", "test")


def user_data_dir() -> Path:
    """Where ``latentreason data download`` puts named sets: ``$LATENTREASON_DATA_DIR``, else
    ``$XDG_CACHE_HOME/latentreason/data``, else ``~/.cache/latentreason/data``."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "latentreason" / "data"


def data_dirs(explicit: str | os.PathLike | None = None) -> list[Path]:
    """The data directories searched for named sets, in order (see the module docstring)."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_dir():
            what = "is a file, not a directory" if p.exists() else "does not exist"
            raise DataError(f"data directory {str(p)!r} (--data-dir / data.data_dir) {what}")
        return [p]
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        p = Path(env).expanduser()
        if p.exists() and not p.is_dir():
            raise DataError(f"${ENV_DATA_DIR}={env!r} is not a directory")
        return [p]
    return [p for p in (Path("data"), Path("..") / "shared" / "data", user_data_dir()) if p.is_dir()] or [user_data_dir()]


def find_data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The first data directory that holds any named set (``explicit`` / ``$LATENTREASON_DATA_DIR``
    as given), or None."""
    dirs = data_dirs(explicit)
    if explicit or os.environ.get(ENV_DATA_DIR):
        return dirs[0]
    for cand in dirs:
        if any((cand / f).exists() for s in NAMED.values() for f in s.files.values()):
            return cand
    return None


def named_file(name: str, split: str, explicit: str | os.PathLike | None = None) -> Path:
    """The file of named set ``name``'s ``split``: the first data directory that holds it, else an
    error naming the download command."""
    rel = NAMED[name].files[split]
    dirs = data_dirs(explicit)
    for root in dirs:
        if (root / rel).is_file():
            return root / rel
    where = ", ".join(str(d) for d in dirs)
    to = f" --to {dirs[0]}" if explicit else ""
    raise DataError(
        f"data set {name!r} ({split} split: {rel}) was not found (searched: {where}); "
        f"get it with `latentreason data download {name}{to}`"
    )


def dataset_names() -> list[str]:
    return sorted(set(NAMED) | set(PROCEDURAL))


def load_dataset(
    name_or_path: str | os.PathLike,
    split: str = "test",
    *,
    data_dir: str | os.PathLike | None = None,
    fmt: str | None = None,
    task: TaskConfig | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Examples of a named set's split or of a file; ``limit`` keeps the first N."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    name = str(name_or_path)
    if fmt is not None and fmt not in FORMATS and fmt != "auto":
        raise DataError(f"{name}: unknown data format {fmt!r} (--format / data.format); valid formats: {', '.join(FORMATS)}")
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    if name in PROCEDURAL:
        cfg = task if task is not None else PROCEDURAL[name]
        if name == "modchain_mixed" and task is not None and task.min_steps is None:
            cfg = replace(task, min_steps=1, n_steps=max(task.n_steps, 6))
        examples = procedural_split(cfg, split, limit)
    elif name in NAMED and split == "train" and "train" not in NAMED[name].files and name.startswith("mult_"):
        examples = multiplication_train(name, data_dir, limit)
    elif name in NAMED:
        spec = NAMED[name]
        if split not in spec.files:
            raise DataError(f"data set {name!r} has no {split!r} split; available: {', '.join(spec.files)}")
        examples = load_file(named_file(name, split, data_dir), fmt or spec.fmt)
    else:
        path = Path(name)
        if not path.exists():
            if os.sep in name or path.suffix:
                raise DataError(f"{name}: file not found")
            raise DataError(f"unknown data set {name!r}; valid names: {', '.join(dataset_names())} (or a file path)")
        if path.is_dir():
            raise DataError(f"{name}: is a directory, expected a data file or a named data set")
        examples = load_file(path, fmt)
    if limit is not None:
        examples = examples[:limit]
    return examples


_CACHE: dict[tuple, dict[str, list[Example]]] = {}


def procedural_split(cfg: TaskConfig, split: str, limit: int | None = None) -> list[Example]:
    key = tuple((f.name, repr(getattr(cfg, f.name))) for f in fields(cfg))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = generate_splits(cfg)
    out = _CACHE[key][split]
    return [Example(e.question, list(e.steps), e.answer, dict(e.meta)) for e in (out if limit is None else out[:limit])]


def multiplication_train(name: str, data_dir: str | os.PathLike | None, limit: int | None) -> list[Example]:
    """The (LFS-only upstream) train split of ``mult_NxN``: generated by the CoT rule, disjoint from
    the shipped valid/test questions when a data directory has them; 100k problems unless limited."""
    n = int(name.rsplit("_", 1)[1].split("x")[0])
    exclude: set[str] = set()
    dirs = data_dirs(data_dir)  # a bad --data-dir is an error; a directory without the files is not
    for rel in NAMED[name].files.values():
        f = next((d / rel for d in dirs if (d / rel).is_file()), None)
        if f is not None:
            exclude |= {e.question for e in load_file(f, "icot_mult")}
    return generate_multiplication(n, n, limit if limit is not None else 100_000, seed=0, exclude=exclude)
