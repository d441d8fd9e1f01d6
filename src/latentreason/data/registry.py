"""Named data sets, resolved against a data directory, and the one entry point ``load_dataset``.

``load_dataset(name_or_path, split)`` accepts

* a file path (format detected from content unless ``fmt`` is given);
* a named set below, found under the data directory (``--data-dir``, else the environment
  variable ``LATENTREASON_DATA_DIR``, else ``./data`` or ``../shared/data`` when present);
* ``modchain`` (alias ``default``) and ``modchain_mixed``: the procedural task, generated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from latentreason.data.example import Example
from latentreason.data.loaders import FORMATS, load_file
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
        "GSM8k-Aug equation CoT (train = the 7k non-augmented core; the 385k set is LFS-only upstream)",
    ),
    "gsm8k_aug_nl": NamedSet(
        {"train": "gsm8k_aug/train_orig7k_nl.txt", "valid": "gsm8k_aug/valid.txt", "test": "gsm8k_aug/test.txt"},
        "gsm8k_aug_nl",
        "GSM8K train questions with natural-language CoT (valid/test as gsm8k_aug)",
    ),
    "gsm8k": NamedSet({"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}, "gsm8k", "GSM8K original jsonl"),
    "prosqa": NamedSet({"valid": "prosqa/prosqa_valid.json", "test": "prosqa/prosqa_test.json"}, "prosqa", "ProsQA (Coconut)"),
    "prontoqa": NamedSet(
        {"valid": "prontoqa/prontoqa_valid.json", "test": "prontoqa/prontoqa_test.json"}, "prontoqa", "ProntoQA 5-hop"
    ),
    "svamp": NamedSet({"test": "svamp/SVAMP.json"}, "svamp", "SVAMP (evaluation only; not shipped)"),
    "gsm_hard": NamedSet({"test": "gsm_hard/gsmhardv2.jsonl"}, "gsm_hard", "GSM-Hard (evaluation only; not shipped)"),
    "multiarith": NamedSet({"test": "multiarith/mawpsmultiarith.jsonl"}, "pal", "MultiArith (evaluation only; not shipped)"),
    "asdiv": NamedSet({"test": "asdiv/asdiv.jsonl"}, "pal", "ASDiv (evaluation only; not shipped)"),
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


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data directory: explicit, else $LATENTREASON_DATA_DIR, else ./data or ../shared/data."""
    if explicit:
        p = Path(explicit)
        if not p.is_dir():
            what = "is a file, not a directory" if p.exists() else "does not exist"
            raise DataError(f"data directory {str(p)!r} (--data-dir / data.data_dir) {what}")
        return p
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        p = Path(env)
        if not p.is_dir():
            raise DataError(f"${ENV_DATA_DIR}={env!r} is not a directory")
        return p
    for cand in (Path("data"), Path("..") / "shared" / "data"):
        if cand.is_dir() and any((cand / s.files[next(iter(s.files))]).exists() for s in NAMED.values()):
            return cand
    return None


def dataset_names() -> list[str]:
    return sorted(set(NAMED) | set(PROCEDURAL))


def load_dataset(
    name_or_path: str | os.PathLike,
    split: str = "test",
    *,
    data_dir_: str | os.PathLike | None = None,
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
        examples = multiplication_train(name, data_dir_, limit)
    elif name in NAMED:
        spec = NAMED[name]
        if split not in spec.files:
            raise DataError(f"data set {name!r} has no {split!r} split; available: {', '.join(spec.files)}")
        root = data_dir(data_dir_)
        if root is None:
            raise DataError(
                f"data set {name!r} needs a data directory: pass --data-dir or set ${ENV_DATA_DIR} "
                f"(expected file {spec.files[split]} inside it)"
            )
        path = root / spec.files[split]
        if not path.exists():
            raise DataError(f"data set {name!r} split {split!r}: file {str(path)!r} not found in data directory {str(root)!r}")
        examples = load_file(path, fmt or spec.fmt)
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


def multiplication_train(name: str, data_dir_: str | os.PathLike | None, limit: int | None) -> list[Example]:
    """The (LFS-only upstream) train split of ``mult_NxN``: generated by the CoT rule, disjoint from
    the shipped valid/test questions when a data directory has them; 100k problems unless limited."""
    from latentreason.data.multiplication import generate_multiplication

    n = int(name.rsplit("_", 1)[1].split("x")[0])
    exclude: set[str] = set()
    root = data_dir(data_dir_) if data_dir_ or os.environ.get(ENV_DATA_DIR) else None
    if root is None:
        try:
            root = data_dir()
        except DataError:
            root = None
    if root is not None:
        for split_file in NAMED[name].files.values():
            f = root / split_file
            if f.exists():
                exclude |= {e.question for e in load_file(f, "icot_mult")}
    return generate_multiplication(n, n, limit if limit is not None else 100_000, seed=0, exclude=exclude)
