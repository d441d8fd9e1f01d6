"""Pieces several test modules share: small example sets, the command line, a run's metrics and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch

from latentreason.cli import main
from latentreason.data.example import Example
from latentreason.data.procedural import TaskConfig, generate_splits

#: fields of a metrics.jsonl row that are wall-clock measurements (everything else is reproducible)
TIMING_KEYS = ("tokens_per_s", "elapsed_s")


def train_examples(n: int, seed: int = 0, **task) -> list[Example]:
    """``n`` training examples of the procedural task (4-step chains unless ``task`` says otherwise)."""
    return generate_splits(TaskConfig(n_train=n, n_valid=2, n_test=2, seed=seed, **task))["train"]


def run_cli(capsys, *args) -> tuple[int, str]:
    """The CLI in this process (no interpreter start-up): (exit status, stderr); status 0 when it returns."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def cli_process(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m latentreason ARGS`` in a fresh process, offline, one thread."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "latentreason", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def metrics_rows(run: Path) -> list[dict]:
    """Every complete row of ``run/metrics.jsonl`` (a line being written right now is left out)."""
    p = run / "metrics.jsonl"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def reproducible_metrics(run: Path) -> list[dict]:
    """``run``'s metrics rows without their wall-clock fields: two runs of the same training must agree exactly."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in metrics_rows(run)]


def model_weights(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the final model (``run/model/*.safetensors``: the backbone and the method's extra modules)."""
    from safetensors.torch import load_file

    files = sorted((run / "model").glob("*.safetensors"))
    assert files, f"no weights in {run / 'model'}"
    return {f"{p.name}:{k}": v for p in files for k, v in load_file(str(p)).items()}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = model_weights(a), model_weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} of {len(wa)} tensors differ, e.g. {differ[:3]}"


def sharp_backbone(kind: str = "tiny-gpt2", seed: int = 1, dtype=torch.float32, **kw):
    """A tiny backbone (d = 48, 4 heads) in eval mode with its weights tripled: decisive greedy choices
    (random-init logits are near-uniform otherwise), so two code paths either agree on tokens or truly differ."""
    from conftest import tiny_backbone

    bb = tiny_backbone(kind, seed=seed, dtype=dtype, n_embd=48, n_head=4, **kw)
    with torch.no_grad():
        for p in bb.model.parameters():
            p.mul_(3.0)
    bb.model.eval()
    return bb


def sharp_latent_method(name: str, kind: str = "tiny-gpt2"):
    """CODI (3 thoughts) or Coconut (3 latent stages) on a 2-layer :func:`sharp_backbone`, in eval mode."""
    from latentreason.methods.coconut import Coconut, CoconutConfig
    from latentreason.methods.codi import CODI, CODIConfig

    bb = sharp_backbone(kind, seed=3, n_layer=2)
    if name == "codi":
        m = CODI(bb, CODIConfig(n_latent=3, max_new_tokens=8))
    else:
        m = Coconut(bb, CoconutConfig(max_latent_stage=3, max_new_tokens=8))
    return m.eval()


def stop_token(rows: list[list[int]], at: int | None = None) -> int:
    """The most common token that some generated rows hold and others do not (at position ``at``, or anywhere):
    used as EOS, it makes rows leave the batch at different steps."""
    counts = Counter(t for row in rows for t in ({row[at]} if at is not None else set(row)))
    return max(counts, key=lambda t: (counts[t] < len(rows), counts[t]))
