import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # tests never reach a hub (data download reads a local mirror)

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


#: Qwen-style tiny models (test-only): grouped-query attention (2 key/value heads for 4 query heads),
#: Qwen2's q/k/v biases, Qwen3's q/k norms — built from their transformers configs like a user's Hub model
QWEN_KINDS = ("tiny-qwen2", "tiny-qwen3")


def _tiny_qwen(kind: str, seed: int, n_layer: int, n_embd: int, n_head: int, n_positions: int):
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3Config

    from latentreason.models.backbone import Backbone
    from latentreason.models.tokenizer import build_byte_tokenizer, special_ids

    tok = build_byte_tokenizer()
    ids = special_ids(tok)
    cls = Qwen2Config if kind == "tiny-qwen2" else Qwen3Config
    cfg = cls(vocab_size=len(tok), hidden_size=n_embd, intermediate_size=2 * n_embd, num_hidden_layers=n_layer,
              num_attention_heads=n_head, num_key_value_heads=max(1, n_head // 2), head_dim=n_embd // n_head,
              max_position_embeddings=n_positions, tie_word_embeddings=True, bos_token_id=ids.eos,
              eos_token_id=ids.eos, pad_token_id=ids.pad)
    torch.manual_seed(seed)
    return Backbone(AutoModelForCausalLM.from_config(cfg), tok, ids)


def tiny_backbone(kind: str = "tiny-gpt2", seed: int = 0, dtype=torch.float32, **kw):
    from latentreason.models.backbone import ModelConfig, load_backbone

    if kind in QWEN_KINDS:
        bb = _tiny_qwen(kind, seed, kw.pop("n_layer", 2), kw.pop("n_embd", 32), kw.pop("n_head", 2),
                        kw.pop("n_positions", 128))
        assert not kw, f"unsupported options for {kind}: {kw}"
        bb.model.to(dtype)
        return bb
    cfg = ModelConfig(name=kind, n_layer=kw.pop("n_layer", 2), n_embd=kw.pop("n_embd", 32), n_head=kw.pop("n_head", 2),
                      n_positions=kw.pop("n_positions", 128), **kw)
    bb = load_backbone(cfg, seed=seed)
    bb.model.to(dtype)
    return bb


@pytest.fixture(params=["tiny-gpt2", "tiny-llama", *QWEN_KINDS])
def backbone_kind(request) -> str:
    return request.param
