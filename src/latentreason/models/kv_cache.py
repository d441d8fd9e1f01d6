"""The one place that speaks ``transformers``' KV-cache API (supported: transformers >= 5.24, < 6).

transformers 5.24 renamed the forward keyword and the output field ``past_key_values`` to
``cache`` (the old keyword warns and is removed in 5.40; the old output field logs a deprecation).
Every cached forward pass of this package goes through :func:`cached_forward`, caches are created
by :func:`new_cache`, and reading one layer's cached keys/values (System-1.5's ``copy`` rule) goes
through :func:`layer_kv`. With a transformers outside the supported range these fail with one line
naming the range: an older release would silently ignore the ``cache`` keyword and decode without
a cache (wrong positions), which must never pass unnoticed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import transformers
from packaging.version import Version
from torch import Tensor

from latentreason.errors import DependencyError

#: the transformers releases this module is written for (pyproject pins the same range)
SUPPORTED_TRANSFORMERS = ">=5.24,<6"
_LOWEST = (5, 24)
_BELOW = (6,)


def _release(version: str) -> tuple[int, ...]:
    return Version(version).release


@lru_cache(maxsize=None)
def check_transformers(version: str | None = None) -> None:
    """Fail with one clear line unless the installed transformers is in :data:`SUPPORTED_TRANSFORMERS`."""
    if version is None:
        version = transformers.__version__
    rel = _release(version)
    if not (_LOWEST <= rel[: len(_LOWEST)] and rel[: len(_BELOW)] < _BELOW):
        raise DependencyError(
            f"transformers {version} is installed; latentreason needs transformers{SUPPORTED_TRANSFORMERS} "
            f"(its KV-cache API: the `cache` keyword of model forward passes). "
            f"Install a supported release: pip install 'transformers{SUPPORTED_TRANSFORMERS}'"
        )


def new_cache(model: Any):
    """An empty dynamic cache laid out for ``model`` (sliding-window / hybrid layers included)."""
    check_transformers()
    return transformers.DynamicCache(config=model.config)


def is_cache(x: Any) -> bool:
    """Whether ``x`` is a ``transformers`` cache object."""
    return isinstance(x, transformers.Cache)


def cached_forward(model: Any, cache: Any, **inputs: Any) -> tuple[Any, Any]:
    """``model(**inputs)`` appending to ``cache``; returns ``(output, cache)``.

    ``inputs`` are the usual forward arguments (``input_ids`` or ``inputs_embeds``, the 2-D
    ``attention_mask`` over everything cached plus the new positions, ``position_ids``,
    ``output_hidden_states``)."""
    check_transformers()
    out = model(**inputs, cache=cache, use_cache=True)
    return out, out.cache


def layer_kv(cache: Any, layer_idx: int) -> tuple[Tensor, Tensor]:
    """The cached keys and values of decoder layer ``layer_idx``, each ``(batch, kv_heads, positions, head_dim)``.

    ``Cache.layers`` is the documented list of per-layer caches in transformers 5; anything else
    is a layout this package does not know."""
    layers = getattr(cache, "layers", None)
    layer = layers[layer_idx] if layers is not None and 0 <= layer_idx < len(layers) else None
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if not isinstance(keys, Tensor) or not isinstance(values, Tensor):
        raise DependencyError(
            f"cannot read layer {layer_idx}'s keys/values from a {type(cache).__name__} of transformers "
            f"{transformers.__version__}; supported: transformers{SUPPORTED_TRANSFORMERS}"
        )
    return keys, values
