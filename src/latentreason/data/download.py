"""``latentreason data download NAME``: fetch a named data set from its public source.

Every file a named set reads comes from the public source listed in ``shared/data/README.md``:

* files in GitHub repositories are fetched at a **pinned commit** from ``raw.githubusercontent.com``
  and checked against their SHA-256 (the same bytes as the copies the project was developed on);
* the paper-scale GSM8k-Aug train sets exist only on the Hugging Face Hub (``zen-E/GSM8k-Aug``,
  ``zen-E/GSM8k-Aug-NL``, CODI's sources); they are read with ``datasets.load_dataset`` and written
  in the iCoT line format ``question||cot #### answer`` (named sets ``gsm8k_aug_full`` and
  ``gsm8k_aug_nl_full``; rows whose answer is not a number are left out and counted).

Files land in the user data directory (:func:`~latentreason.data.registry.user_data_dir`:
``$LATENTREASON_DATA_DIR``, else ``~/.cache/latentreason/data``) or ``--to DIR``, with the same
relative paths as in ``shared/data``, written atomically; files already present with the right
checksum are kept. ``downloads.json`` in the data directory records where each file came from.

``mirror`` (``--mirror DIR``) replaces the network with a local directory laid out like the URLs
the files come from: ``DIR/raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH`` and
``DIR/huggingface.co/datasets/OWNER/NAME/...`` (the Hub repository's files) — for machines without
internet access, and for the tests (which never touch the network).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from latentreason.data.answers import plain_number
from latentreason.data.registry import NAMED, PROCEDURAL, dataset_names, user_data_dir
from latentreason.errors import DataError, LatentReasonError
from latentreason.utils import atomic_write_json, default_mode

GITHUB_RAW = "https://raw.githubusercontent.com"
HUB = "huggingface.co"
RECORD = "downloads.json"


class DownloadError(DataError):
    """A file could not be fetched (network, HTTP status, checksum); the message names it and says what to do."""


@dataclass(frozen=True)
class GitHubFile:
    """One file of a GitHub repository at a pinned commit."""

    repo: str
    commit: str
    path: str
    sha256: str
    size: int

    @property
    def url(self) -> str:
        return f"{GITHUB_RAW}/{self.repo}/{self.commit}/{self.path}"

    def mirrored(self, mirror: Path) -> Path:
        return mirror / "raw.githubusercontent.com" / self.repo / self.commit / self.path


def _answer_number(answer: object) -> str | None:
    """GSM8k-Aug's answer field (``"18"``, ``"#### 18"``, ``"1,234"``) as the number text, else None."""
    if answer is None:
        return None
    text = str(answer).replace("####", " ").split()
    if not text or plain_number(text[-1]) is None:
        return None
    return text[-1]


def _one_line(text: object) -> str:
    return " ".join(str(text).replace("||", "|").split())


def icot_line(row: dict) -> str | None:
    """A Hub GSM8k-Aug row ``{question, cot, answer}`` as ``question||cot #### answer``; None for an unusable row."""
    question, cot, answer = row.get("question"), row.get("cot"), _answer_number(row.get("answer"))
    if not question or cot is None or answer is None:
        return None
    return f"{_one_line(question)}||{_one_line(cot)} #### {answer}"


@dataclass(frozen=True)
class HubSplit:
    """One split of a Hugging Face Hub data set, converted to a line format by ``to_line``."""

    repo_id: str
    split: str
    to_line: Callable[[dict], str | None] = icot_line
    revision: str | None = None

    @property
    def url(self) -> str:
        return f"https://{HUB}/datasets/{self.repo_id}"

    def mirrored(self, mirror: Path) -> Path:
        return mirror / HUB / "datasets" / self.repo_id


_GSM = ("openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c")
_SI = ("da03/Internalize_CoT_Step_by_Step", "c2e3891d8d577beeaff03fa3b076d1e4db96cfe8")
_KD_OLD = ("da03/implicit_chain_of_thought", "a5f3eb98ef1dfe4c4f80d9433a389063f765b254")
_KD = ("da03/implicit_chain_of_thought", "51027999b2780c53adc9cb92bd36a96dab84560c")
_COCONUT = ("facebookresearch/coconut", "27273cb8cca4bb763c041a63b036d0c3b7cbbb48")
_PRONTO = ("michaelrizvi/coconut", "8a939d7cf261dd18a6050222737131b2a44f6f5a")
_COSE = ("salesforce/cos-e", "fd0cafcc3e30fd24e3e1742934e8fcbf677315c9")
_SVAMP = ("arkilpatel/SVAMP", "689d7ccac74b9983a2ac7cc3b264f441b99e7c53")
_PAL = ("reasoning-machines/pal", "f81ca2a9777f002f98a6b4d0f10b61bd5c8feb02")
_PAL_LICENSE = ("LICENSE", "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4", 11357)
_SI_LICENSE = ("LICENSE", "fe3e4d2d64d526c7cf0baf1b08f474d8f4f9cad7f7f5570230c6534edbcadac7", 1069)
_META_LICENSE = ("LICENSE", "cf9b17822d1fcd4ff32ccbe14183386fb3adf6f2ff92dc184130823f7fc28173", 1087)


def _gh(src: tuple[str, str], path: str, sha256: str, size: int) -> GitHubFile:
    return GitHubFile(src[0], src[1], path, sha256, size)


#: every file a named set needs (its split files, the CoS-E explanations and each folder's LICENSE),
#: by its path in the data directory; checksums and sizes of the files at the pinned commits
SOURCES: dict[str, GitHubFile | HubSplit] = {
    "gsm8k/train.jsonl": _gh(_GSM, "grade_school_math/data/train.jsonl",
                             "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465", 4166206),
    "gsm8k/test.jsonl": _gh(_GSM, "grade_school_math/data/test.jsonl",
                            "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14", 749738),
    "gsm8k/LICENSE": _gh(_GSM, "LICENSE", "86bbb73e855821d7c401912fd4bf82e34313e6e3b6fd6f909f2b6cc9e209a53b", 1062),
    "gsm8k_aug/valid.txt": _gh(_SI, "data/gsm8k/valid.txt",
                               "04f9bddfe8ac4846571b1e2b612b289c95770b5012fdb34cc36a597b041afb87", 143419),
    "gsm8k_aug/test.txt": _gh(_SI, "data/gsm8k/test.txt",
                              "e464efa2713fbcf423bdbfb482c543a6a086188c3d97c294b1d19a70c2a515e8", 388019),
    "gsm8k_aug/LICENSE": _gh(_SI, *_SI_LICENSE),
    "gsm8k_aug/train_orig7k_equation.txt": _gh(_KD_OLD, "data/math_scaffolding_formula/src1_train.txt",
                                               "72906dc05545c6e6620c5a70f31f058959e730be4c9cd2965311280f5f7a57a9", 2009650),
    "gsm8k_aug/train_orig7k_nl.txt": _gh(_KD, "data/gsm8k/train_no_aug.txt",
                                         "d4be3efa9c83b45cd7d31ba70968dd94c3b6c287d1ae2cfd42e820637ff7b506", 3387670),
    "gsm8k_aug/train_full.txt": HubSplit("zen-E/GSM8k-Aug", "train"),
    "gsm8k_aug/train_full_nl.txt": HubSplit("zen-E/GSM8k-Aug-NL", "train"),
    "prosqa/prosqa_valid.json": _gh(_COCONUT, "data/prosqa_valid.json",
                                    "c74e0de24f1e90ec48b1a993e6458a7be4caeef3928f5104e3c2e45d689a5249", 518208),
    "prosqa/prosqa_test.json": _gh(_COCONUT, "data/prosqa_test.json",
                                   "82ddc0afe6ee30eb31bb16fa208e293e55278a20fa987098d48519cae7e12680", 856611),
    "prosqa/LICENSE": _gh(_COCONUT, *_META_LICENSE),
    "prontoqa/prontoqa_valid.json": _gh(_PRONTO, "data/prontoqa_valid.json",
                                        "c61e8c80beb1d9958d135346a34b26f2f64777c4b22925f9d25c0ba6b4d7a70b", 257470),
    "prontoqa/prontoqa_test.json": _gh(_PRONTO, "data/prontoqa_test.json",
                                       "53925389a02e367ce2c679719cc041436ccdae7dfc312cb2d811541f47ff5472", 1027683),
    "prontoqa/LICENSE": _gh(_PRONTO, *_META_LICENSE),
    "commonsenseqa_cose/v1.0/train_rand_split.jsonl": _gh(
        _COSE, "data/v1.0/train_rand_split.jsonl", "1989ce97e24d8572113d6a18f44e0f11ee9d206fb9bf9a1133937645583e697e", 2160200),
    "commonsenseqa_cose/v1.0/dev_rand_split.jsonl": _gh(
        _COSE, "data/v1.0/dev_rand_split.jsonl", "790dd2a8492e7f3b51ded04116de603115b7acaded32ea84f6a7101f9d571ac1", 268531),
    "commonsenseqa_cose/v1.0/cose_train_v1.0.jsonl": _gh(
        _COSE, "data/v1.0/cose_train_v1.0.jsonl", "bd4399c3942d786947365a67ca995d00e0b2ac2f226d12bc9342f046e82060e5", 1437397),
    "commonsenseqa_cose/v1.0/cose_dev_v1.0.jsonl": _gh(
        _COSE, "data/v1.0/cose_dev_v1.0.jsonl", "b3377cf9125093c8d6d1cb3296a3ad8174f730a97236f3e177a93fe9e5a3ae37", 184269),
    "commonsenseqa_cose/LICENSE": _gh(_COSE, "LICENSE",
                                      "4c0148f98b35f769803970ed631e7f297f40c193ca18f50fcd68a56feea27120", 1518),
    "svamp/SVAMP.json": _gh(_SVAMP, "SVAMP.json", "5be77703a6d891ae476d7c082787ad361392aa02453b132516cdd5f4e7934e3e", 339970),
    "svamp/LICENSE": _gh(_SVAMP, "LICENSE", "07ce3a34de7a865345634f9278bc26ddcacc2d0defd348c28e3f4603448b9ba4", 1068),
    "gsm_hard/gsmhardv2.jsonl": _gh(_PAL, "datasets/gsmhardv2.jsonl",
                                    "2032b0188a49ac0ec38cbe1e695e7d62d6dddc44bbb64f920728aca710e9ddef", 1138151),
    "gsm_hard/LICENSE": _gh(_PAL, *_PAL_LICENSE),
    "multiarith/mawpsmultiarith.jsonl": _gh(_PAL, "datasets/mawpsmultiarith.jsonl",
                                            "12e8295088364af21fb6591dbdbd1dda452aade57227f63d725677471ded2951", 109522),
    "multiarith/LICENSE": _gh(_PAL, *_PAL_LICENSE),
    "asdiv/asdiv.jsonl": _gh(_PAL, "datasets/asdiv.jsonl",
                             "6fb7347f20b2393e5f877573b0adacb7ac8f4ea15e52e39ed60803ed6ecd3cb6", 388949),
    "asdiv/LICENSE": _gh(_PAL, *_PAL_LICENSE),
    "icot_multiplication/LICENSE": _gh(_SI, *_SI_LICENSE),
}
_MULT = {
    ("icot_si_2024", 4): ("27c2ca51e9368367b43b4a99eb6148f8dc904531f7ead074d3a97056f788058c",
                          "3d902a2a35b3ad626a37fab5ff0964f874ebf79c39dd07eea846c2ee0c733a51"),
    ("icot_si_2024", 5): ("d3b95bdf0f74863a88bc777fee3fe23854e6ad458b8e7b847b65dac25e59182c",
                          "661ab1db2ea0d33fc3e6e398c75920a7a8471f64ebad481bcaf5c8a8ff2b9c4b"),
    ("icot_si_2024", 7): ("3916e4871b6368065db115a640194e4ef6eebba195fdb29a2b9d4c788feee53c",
                          "88e10e0ec14cfb87b07e55a57b9e2e70922f7e708e23a67a546ebeecfc1dc256"),
    ("icot_si_2024", 9): ("3a589f77acf5093a42f03ad12952d02d2681642b33e372135c6519aa6e90e2b5",
                          "0b5d938a7de1ac2fe0582f77da4a4cb6cf57a5f185430430b6b35ceadbdd6000"),
    ("icot_si_2024", 11): ("6d9b6d163ad059bbb15e2ea503ab38cc43883ed4cb5636886556b1f526b53d6b",
                           "5250b7a92627dff78242c1d32972e2dd6345af419c205712f62d5ea8b8c7ce83"),
    ("icot_kd_2023", 4): ("27c2ca51e9368367b43b4a99eb6148f8dc904531f7ead074d3a97056f788058c",
                          "7aeb64139bc14b869e72016d8873ae68c1114093b7b78ba4e33966beb699d786"),
    ("icot_kd_2023", 5): ("d3b95bdf0f74863a88bc777fee3fe23854e6ad458b8e7b847b65dac25e59182c",
                          "b4ea09fc6c925ab3ca46f1e56f0c1bbf858264ef1b0589564b220c7c015fa665"),
}
for (_set, _n), (_valid, _test) in _MULT.items():
    _src = _SI if _set == "icot_si_2024" else _KD
    _size = {4: 132000, 5: 196000, 7: 360000, 9: 572000, 11: 832000}[_n]
    for _f, _sha in (("valid", _valid), ("test_bigbench", _test)):
        SOURCES[f"icot_multiplication/{_set}/{_n}_by_{_n}_mult/{_f}.txt"] = _gh(
            _src, f"data/{_n}_by_{_n}_mult/{_f}.txt", _sha, _size)


def files_of(name: str) -> list[str]:
    """Every file (data-directory path) named set ``name`` needs: its splits, CoS-E explanations, LICENSEs."""
    spec = NAMED[name]
    files = list(dict.fromkeys(spec.files.values()))
    folders = {f.split("/", 1)[0] for f in files}
    extra = [d for d in SOURCES if d.split("/", 1)[0] in folders and d.endswith("/LICENSE")]
    if spec.fmt == "commonsenseqa":
        extra += [d for d in SOURCES if "/cose_" in d]
    return files + [d for d in extra if d not in files]


# --------------------------------------------------------------------------- fetching
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _temp_beside(dest: Path) -> tuple[int, Path]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    return fd, Path(tmp)


def _finish(tmp: Path, dest: Path) -> None:
    os.chmod(tmp, default_mode())
    os.replace(tmp, dest)


def fetch_github(src: GitHubFile, dest: Path, mirror: Path | None = None, timeout: float = 60.0) -> str:
    """Copy ``src`` to ``dest`` (atomically) and check its SHA-256; returns where it came from."""
    where = str(src.mirrored(mirror)) if mirror is not None else src.url
    fd, tmp = _temp_beside(dest)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            if mirror is not None:
                if not src.mirrored(mirror).is_file():
                    raise DownloadError(f"{dest.name}: {where} not found in the mirror (--mirror {mirror})")
                reader = open(src.mirrored(mirror), "rb")
            else:
                try:
                    reader = urllib.request.urlopen(src.url, timeout=timeout)  # noqa: S310 - a fixed https URL
                except (urllib.error.URLError, OSError) as e:
                    reason = getattr(e, "reason", None) or e
                    raise DownloadError(
                        f"cannot download {src.url} ({reason}); check the network connection, or copy the files "
                        "onto this machine and pass --mirror DIR"
                    ) from None
            with reader:
                while True:
                    try:
                        block = reader.read(1 << 20)
                    except OSError as e:
                        raise DownloadError(f"download of {where} interrupted ({e}); run the command again") from None
                    if not block:
                        break
                    h.update(block)
                    out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != src.sha256:
            raise DownloadError(
                f"{where}: checksum mismatch (SHA-256 {h.hexdigest()[:12]}…, expected {src.sha256[:12]}…); "
                "the file is not the one this data set is defined by — nothing was written"
            )
        _finish(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return where


def fetch_hub(src: HubSplit, dest: Path, mirror: Path | None = None) -> tuple[str, int, int]:
    """Write split ``src.split`` of a Hub data set to ``dest`` through ``datasets.load_dataset``, one
    line per usable row; returns (source, rows written, rows left out)."""
    try:  # datasets is heavy to import and only the Hub data sets need it
        import datasets
    except ImportError:
        raise DownloadError(f"{src.repo_id} is read with the `datasets` package: pip install datasets") from None
    where = str(src.mirrored(mirror)) if mirror is not None else src.url
    if mirror is not None and not src.mirrored(mirror).is_dir():
        raise DownloadError(f"{dest.name}: {where} not found in the mirror (--mirror {mirror})")
    try:
        ds = datasets.load_dataset(str(src.mirrored(mirror)) if mirror is not None else src.repo_id,
                                   split=src.split, revision=None if mirror is not None else src.revision)
    except Exception as e:  # noqa: BLE001 - network, offline mode, missing split: one line for the user
        first = " ".join(str(e).split())[:300]
        raise DownloadError(
            f"cannot load split {src.split!r} of {where} ({type(e).__name__}: {first}); check the network connection "
            "(and that HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are not set), or pass --mirror DIR"
        ) from None
    fd, tmp = _temp_beside(dest)
    written = skipped = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in ds:
                line = src.to_line(row)
                if line is None:
                    skipped += 1
                    continue
                out.write(line + "\n")
                written += 1
            out.flush()
            os.fsync(out.fileno())
        if not written:
            raise DownloadError(f"{where}: split {src.split!r} has no usable row (expected fields question, cot, answer)")
        _finish(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return where, written, skipped


def _record(root: Path, entries: dict[str, dict]) -> None:
    path = root / RECORD
    try:
        old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    old.update(entries)
    atomic_write_json(path, dict(sorted(old.items())))


def download(name: str, to: str | os.PathLike | None = None, mirror: str | os.PathLike | None = None,
             force: bool = False, log: Callable[[str], None] = lambda s: None) -> Path:
    """Fetch every file of named set ``name`` into ``to`` (default: the user data directory); returns it."""
    if name in PROCEDURAL:
        raise LatentReasonError(f"{name!r} is generated by the package (nothing to download)")
    if name not in NAMED:
        raise DataError(f"unknown data set {name!r}; names to download: {', '.join(n for n in dataset_names() if n in NAMED)}")
    root = Path(to).expanduser() if to else user_data_dir()
    if root.exists() and not root.is_dir():
        raise DataError(f"--to {str(root)!r} is a file, not a directory")
    mirror_dir = Path(mirror).expanduser() if mirror else None
    if mirror_dir is not None and not mirror_dir.is_dir():
        raise DataError(f"--mirror {str(mirror_dir)!r} is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data directory {str(root)!r} ({e.strerror or e})") from None
    entries: dict[str, dict] = {}
    for rel in files_of(name):
        src = SOURCES[rel]
        dest = root / rel
        if isinstance(src, GitHubFile):
            if not force and dest.is_file() and dest.stat().st_size == src.size and _sha256(dest) == src.sha256:
                log(f"{rel}: present (checksum ok)")
                continue
            where = fetch_github(src, dest, mirror_dir)
            entries[rel] = {"source": src.url, "sha256": src.sha256, "bytes": src.size}
            log(f"{rel}: {src.size:,} bytes from {where}")
        else:
            if not force and dest.is_file() and dest.stat().st_size > 0:
                log(f"{rel}: present (--force fetches it again)")
                continue
            where, written, skipped = fetch_hub(src, dest, mirror_dir)
            entries[rel] = {"source": src.url, "split": src.split, "rows": written, "rows_left_out": skipped,
                            "sha256": _sha256(dest)}
            log(f"{rel}: {written:,} rows from {where}" + (f" ({skipped} rows without a question, CoT or numeric answer left out)" if skipped else ""))
        entries[rel]["downloaded"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if entries:
        _record(root, entries)
    return root

