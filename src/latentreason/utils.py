"""Small shared helpers: seeding, atomic writes, environment description."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import tempfile
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import numpy as np
import torch

import latentreason
from latentreason.errors import OutputError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(device)


def default_mode(directory: bool = False) -> int:
    """The permissions a plain ``open`` / ``mkdir`` would give (``tempfile`` makes private 0600 / 0700 ones)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written ``tmp_dir`` into place at ``final_dir`` (atomic for the new name)."""
    final_dir = Path(final_dir)
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


def git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty() -> bool | None:
    """Whether the package's git work tree has uncommitted changes (None outside a git checkout)."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
                             text=True, timeout=10)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


_SOURCE_HASH: str | None = None


def source_hash() -> str:
    """SHA-256 (16 hex digits) of every ``.py`` file of the installed package: the code that trains and
    evaluates, whether it came from a git checkout or a wheel."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        root = Path(__file__).resolve().parent
        h = hashlib.sha256()
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(b"\0")
            h.update(f.read_bytes())
            h.update(b"\0")
        _SOURCE_HASH = h.hexdigest()[:16]
    return _SOURCE_HASH


def code_identity() -> dict[str, Any]:
    """What code produced a result: package version, git revision, dirty work tree, hash of the source.

    The benchmark's reuse check compares ``source_hash``: a model trained by other code is retrained
    (or reused only with ``--reuse-stale``)."""
    return {"version": latentreason.__version__, "git_revision": git_revision(), "dirty": git_dirty(),
            "source_hash": source_hash()}


def env_info(device: torch.device | None = None) -> dict[str, Any]:
    """Library versions and hardware, recorded beside every result (library versions as installed, read from
    their distributions' metadata: nothing is imported for them)."""
    info: dict[str, Any] = {
        "latentreason": latentreason.__version__,
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _dist_version("transformers"),
        "accelerate": _dist_version("accelerate"),
        "tokenizers": _dist_version("tokenizers"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else None,
    }
    if device is not None and device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (for PNG files and embedded images)."""
    # matplotlib is imported on first use: only plotting needs it, and importing it costs noticeable time
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display backend is ever tried

    return plt


def check_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``path`` if needed and make sure we can write there, with a clear error otherwise."""
    check_output_dir(path, what)
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{what} {str(p)!r} is not writable: {e.strerror or e}") from None
    return p


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Check, without creating anything, that directory ``path`` exists and is writable or can be created.

    The path is resolved (``~`` expanded); the nearest existing ancestor must be a directory we
    may write into. Returns the resolved path.
    """
    raw = str(path)
    if not raw.strip():
        raise OutputError(f"{what}: empty path")
    p = Path(raw).expanduser().resolve()
    if p.exists():
        if not p.is_dir():
            raise OutputError(f"{what} {raw!r} exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError(f"{what} {raw!r} is not writable (permission denied)")
        return p
    anc = p.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"{what} {raw!r} cannot be created: {str(anc)!r} is a file, not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {raw!r} cannot be created: {str(anc)!r} is not writable (permission denied)")
    return p


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check, without creating anything, that file ``path`` can be written (atomically, beside itself)."""
    p = Path(str(path)).expanduser().resolve()
    if p.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a directory")
    check_output_dir(p.parent, f"directory of the {what}")
    return p
