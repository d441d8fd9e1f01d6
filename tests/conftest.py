import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's in-process work on one intra-op thread (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny models are fastest that way, and on a loaded 2-core machine OpenMP threads spin-waiting for each
    other make them many times slower (subprocesses get OMP_NUM_THREADS=1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not present next to this checkout")
    return SHARED


def tiny_backbone(kind: str = "tiny-gpt2", seed: int = 0, dtype=torch.float32, **kw):
    from latentreason.models.backbone import ModelConfig, load_backbone

    cfg = ModelConfig(name=kind, n_layer=kw.pop("n_layer", 2), n_embd=kw.pop("n_embd", 32), n_head=kw.pop("n_head", 2),
                      n_positions=kw.pop("n_positions", 128), **kw)
    bb = load_backbone(cfg, seed=seed)
    bb.model.to(dtype)
    return bb


@pytest.fixture(params=["tiny-gpt2", "tiny-llama"])
def backbone_kind(request) -> str:
    return request.param
