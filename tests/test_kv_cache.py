"""The transformers KV-cache API as this package uses it (models/kv_cache.py).

Every cached path (plain decoding, the latent loop in inference and training, soft thinking with
the JS probe that crops the cache, System-1.5's routed steps with both KV rules) runs on GPT-2,
LLaMA and Qwen-style tiny models with deprecation warnings turned into errors and transformers'
own deprecation log lines recorded: our calls must use the current API only.
"""

import logging
import warnings

import pytest
import torch

from conftest import tiny_backbone
from latentreason.data.procedural import TaskConfig, generate_splits
from latentreason.errors import DependencyError
from latentreason.models.kv_cache import SUPPORTED_TRANSFORMERS, check_transformers, layer_kv, new_cache

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-qwen3"]


@pytest.fixture
def deprecations(monkeypatch):
    """Deprecation notices transformers logs (``logger.warning_once``, which a verbosity setting would hide
    and its cache would report once per process only) — recorded here, every time."""
    seen: list[str] = []
    plain = logging.Logger.warning

    def once(self, msg, *args, **kwargs):
        seen.append(str(msg))
        return None

    def warn(self, msg, *args, **kwargs):
        seen.append(str(msg))
        return plain(self, msg, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "warning_once", once)
    monkeypatch.setattr(logging.Logger, "warning", warn)
    return seen


@pytest.mark.parametrize("kind", KINDS)
def test_every_cached_path_uses_the_current_api(kind, deprecations):
    from latentreason.analysis.js import JSProbe
    from latentreason.decoding.generate import greedy_generate, greedy_reference
    from latentreason.methods.system15.method import System15, System15Config
    from latentreason.soft_thinking.config import soft_config
    from latentreason.soft_thinking.loop import soft_generate

    bb = tiny_backbone(kind, seed=4, dtype=torch.float64, n_embd=48, n_head=4, n_layer=3)
    with torch.no_grad():
        for p in bb.model.parameters():
            p.mul_(3.0)
    bb.model.eval()
    prompts = [bb.tokenizer(t).input_ids for t in ("1+2*3\n", "9-8+7*6-5\n", "4\n")]
    exs = generate_splits(TaskConfig(n_train=4, n_valid=2, n_test=2, seed=1))["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        tokens, _ = greedy_generate(bb.model, prompts, bb.ids.pad, bb.ids.eos, max_new_tokens=6)
        assert tokens == [greedy_reference(bb.model, p, bb.ids.eos, max_new_tokens=6) for p in prompts]
        probe = JSProbe(temperature=1.0, horizon=2)
        soft_generate(bb.model, prompts, bb.tokenizer, config=soft_config(mode="vanilla", max_topk=3),
                      eos_id=bb.ids.eos, pad_id=bb.ids.pad, think_end="####", max_new_tokens=4, probe=probe)
        assert probe.records  # the probe ran (and cropped its positions from the cache again)
        for kv_rule in ("project", "copy"):
            s15 = System15(bb, System15Config(n_latent=2, max_new_tokens=4, lambda_depth=0.5, kv_rule=kv_rule))
            s15.to(torch.float64).eval()
            with torch.no_grad():
                for p in list(s15.routers.parameters()):
                    p.normal_(0, 0.5)
            gens = s15.generate(exs)  # hard routing: row caches, projected / copied keys and values
            assert len(gens) == len(exs)
        s15.train()
        batch = s15.collate([s15.features(t) for t in s15.prepare(exs)])
        s15(batch)["loss"].backward()  # training: the latent loop on one cache with the graph kept
    assert not [m for m in deprecations if "deprecat" in m.lower()], deprecations


def test_unsupported_transformers_fails_with_one_line_naming_the_range():
    for ok in ("5.24.0", "5.24.1", "5.39.2"):
        check_transformers(ok)
    for bad in ("5.23.0", "5.0.0", "4.57.1", "6.0.0"):
        with pytest.raises(DependencyError) as e:
            check_transformers(bad)
        msg = str(e.value)
        assert bad in msg and SUPPORTED_TRANSFORMERS in msg and "\n" not in msg


def test_layer_kv_reads_the_cache_or_names_the_supported_versions():
    bb = tiny_backbone("tiny-qwen3", n_embd=32, n_head=4)
    cache = new_cache(bb.model)
    ids = torch.tensor([bb.tokenizer("1+2\n").input_ids])
    bb.model(input_ids=ids, cache=cache, use_cache=True)
    k, v = layer_kv(cache, 1)
    assert k.shape == v.shape == (1, 2, ids.shape[1], 8)  # (batch, key/value heads, positions, head dim)
    with pytest.raises(DependencyError, match=SUPPORTED_TRANSFORMERS.replace("<", ".")):
        layer_kv(object(), 0)
