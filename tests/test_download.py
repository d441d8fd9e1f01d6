"""`latentreason data download`: named sets fetched from their public sources into the user data directory.

No test touches the network: sources are read from a local mirror laid out like their URLs
(`--mirror`), and the network path is exercised with `urlopen` replaced by a failing stub.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES
from latentreason.data.download import SOURCES, DownloadError, GitHubFile, HubSplit, download, fetch_hub, files_of
from latentreason.data.loaders import load_file
from latentreason.data.registry import NAMED, load_dataset, user_data_dir
from latentreason.errors import DataError

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A user with an empty home, no $LATENTREASON_DATA_DIR, working in a directory without data/ or ../shared/data."""
    h = tmp_path / "home"
    work = tmp_path / "w" / "x"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("LATENTREASON_DATA_DIR", raising=False)
    monkeypatch.chdir(work)
    return h


def _mirror_from(files: dict[str, Path], mirror: Path) -> Path:
    for rel, local in files.items():
        target = SOURCES[rel].mirrored(mirror)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
    return mirror


def test_every_named_set_has_a_pinned_source():
    for name, spec in NAMED.items():
        files = files_of(name)
        assert set(spec.files.values()) <= set(files), name
        assert all(f in SOURCES for f in files), name
        assert any(f.endswith("LICENSE") for f in files), name
    for rel, src in SOURCES.items():
        if isinstance(src, GitHubFile):
            assert len(src.commit) == 40 and len(src.sha256) == 64 and src.size > 0, rel
            assert src.url == f"https://raw.githubusercontent.com/{src.repo}/{src.commit}/{src.path}"
    cose = {"commonsenseqa_cose/v1.0/cose_train_v1.0.jsonl", "commonsenseqa_cose/v1.0/cose_dev_v1.0.jsonl"}
    assert cose <= set(files_of("commonsenseqa")) and not cose & set(files_of("gsm8k"))


def test_user_data_dir(home, monkeypatch, tmp_path):
    assert user_data_dir() == home / ".cache" / "latentreason" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_data_dir() == tmp_path / "xdg" / "latentreason" / "data"
    monkeypatch.setenv("LATENTREASON_DATA_DIR", str(tmp_path / "env"))
    assert user_data_dir() == tmp_path / "env"


def test_download_from_a_mirror_then_named_sets_resolve_anywhere(home, tmp_path, shared_data):
    """The real files (this repository's ../shared/data copies are byte-identical to the pinned commits)."""
    from latentreason.cli import main

    wanted = [f for n in ("gsm8k_aug", "mult_4x4", "commonsenseqa") for f in files_of(n)]
    mirror = _mirror_from({f: shared_data / f for f in wanted}, tmp_path / "mirror")
    with pytest.raises(DataError, match="latentreason data download gsm8k_aug"):
        load_dataset("gsm8k_aug", "test")
    main(["data", "download", "gsm8k_aug", "mult_4x4", "commonsenseqa", "--mirror", str(mirror)])
    root = home / ".cache" / "latentreason" / "data"
    for f in wanted:
        assert (root / f).read_bytes() == (shared_data / f).read_bytes(), f
    assert len(load_dataset("gsm8k_aug", "test")) == 1319
    assert len(load_dataset("gsm8k_aug", "train")) == 6973
    assert load_dataset("mult_4x4", "valid")[0].steps[0] == "5 5 5 6 1"
    assert len(load_dataset("commonsenseqa", "valid")) == 950
    assert load_dataset("commonsenseqa", "valid")[0].steps  # the CoS-E explanation came along
    record = json.loads((root / "downloads.json").read_text())
    assert record["gsm8k_aug/test.txt"]["source"] == SOURCES["gsm8k_aug/test.txt"].url
    # a second run keeps what is there (the mirror may be gone by then)
    shutil.rmtree(mirror)
    download("gsm8k_aug")
    # --data-dir still wins, and a named set missing from it names the download command with --to
    with pytest.raises(DataError, match=r"latentreason data download gsm8k --to "):
        load_dataset("gsm8k", "test", data_dir=root)


def test_checksum_mismatch_writes_nothing(home, tmp_path):
    mirror = _mirror_from({"svamp/SVAMP.json": FIXTURES / "svamp.json"}, tmp_path / "mirror")
    to = tmp_path / "data"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download("svamp", to=to, mirror=mirror)
    assert not (to / "svamp" / "SVAMP.json").exists()
    assert not [p for p in to.rglob("*") if p.is_file()]  # no partial file left behind
    with pytest.raises(DownloadError, match=r"not found in the mirror"):
        download("gsm_hard", to=to, mirror=mirror)


def test_network_failure_is_one_clear_line(home, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(url, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError) as e:
        download("asdiv")
    msg = str(e.value)
    assert "\n" not in msg and SOURCES["asdiv/asdiv.jsonl"].url in msg and "--mirror" in msg
    assert "name resolution" in msg


def test_cli_errors(home, capsys):
    from latentreason.cli import main

    for args, needle in ((["data", "download", "nonesuch"], "unknown data set 'nonesuch'"),
                         (["data", "download", "modchain"], "generated by the package"),
                         (["data", "download", "svamp", "--mirror", "/nonexistent/mirror"], "is not a directory")):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
        assert needle in capsys.readouterr().err


def _hub_rows():
    return [
        {"question": "Tom has 3 apples\nand buys 4. How many?", "cot": "<<3+4=7>>", "answer": "7"},
        {"question": "A || B owes 5 and pays 7?", "cot": "<<5-7=-2>>", "answer": "#### -2"},
        {"question": "Bad row?", "cot": "<<1=1>>", "answer": None},
        {"question": "Not a number?", "cot": "<<1=1>>", "answer": "seven"},
        {"question": "Commas?", "cot": "<<1000+234=1234>>", "answer": "1,234"},
    ]


def test_hub_split_through_datasets_from_a_mirror(home, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    repo = tmp_path / "mirror" / "huggingface.co" / "datasets" / "zen-E" / "GSM8k-Aug"
    repo.mkdir(parents=True)
    (repo / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _hub_rows()))
    src = SOURCES["gsm8k_aug/train_full.txt"]
    assert isinstance(src, HubSplit) and src.repo_id == "zen-E/GSM8k-Aug" and src.split == "train"
    dest = tmp_path / "data" / "gsm8k_aug" / "train_full.txt"
    where, written, skipped = fetch_hub(src, dest, tmp_path / "mirror")
    assert (written, skipped) == (3, 2) and where == str(repo)
    exs = load_file(dest, "gsm8k_aug")
    assert [(e.question, e.steps, e.answer) for e in exs] == [
        ("Tom has 3 apples and buys 4. How many?", ["<<3+4=7>>"], "7"),
        ("A | B owes 5 and pays 7?", ["<<5-7=-2>>"], "-2"),
        ("Commas?", ["<<1000+234=1234>>"], "1,234"),
    ]
    with pytest.raises(DownloadError, match="not found in the mirror"):
        fetch_hub(SOURCES["gsm8k_aug/train_full_nl.txt"], tmp_path / "d2" / "x.txt", tmp_path / "mirror")


def test_data_show_without_data_names_the_download_command(tmp_path):
    """The acceptance check: no data/ or ../shared/data, an empty home: exit 2 and one line naming the command."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("LATENTREASON_DATA_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "latentreason", "data", "show", "gsm8k_aug"], cwd=work, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "latentreason data download gsm8k_aug" in lines[0], r.stderr
