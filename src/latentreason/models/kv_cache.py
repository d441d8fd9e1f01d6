"""The one place that speaks ``transformers``' KV-cache API (supported: transformers >= 5.24, < 6).

transformers 5.24 renamed the forward keyword and the output field ``past_key_values`` to
``cache`` (the old keyword warns and is removed in 5.40; the old output field logs a deprecation).
Every cached forward pass of this package goes through :func:`cached_forward`, caches are created
by :func:`new_cache`, and reading one layer's cached keys/values (System-1.5's ``copy`` rule) goes
through :func:`layer_kv`.

Inference caches are **preallocated** (``new_cache(model, capacity=N)``): each full-attention layer
writes its new keys/values into buffers allocated once for N positions and hands the attention a
view of the filled part, where transformers' ``DynamicLayer`` concatenates (copies) the whole cache
at every step. Rows can still leave the batch (``batch_select_indices`` compacts the filled part in
place), the cache can be cropped, and a write past N grows the buffers (so a capacity is a size
hint, never a limit). The attention sees the same keys/values, mask and positions as with a
dynamic cache. Training keeps the dynamic cache: autograd saves the views an in-place write would
overwrite. On a CPU the buffers come from, and go back to, a small pool of spare buffers
(:func:`release_cache`): a fresh buffer is fresh pages, and the first write to each page is a page
fault, a few per cent of a generation call at batch 64. With a transformers outside the supported range these fail with one line
naming the range: an older release would silently ignore the ``cache`` keyword and decode without
a cache (wrong positions), which must never pass unnoticed.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Any

import torch
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


class SpareBuffers:
    """Released CPU cache buffers, handed to the next preallocated cache that fits in one.

    Linux maps a fresh allocation this size to pages it faults in on first write, so a cache made for every
    generation call pays for its pages again each time; a buffer taken from here has been written before.
    Holds flat buffers of at most ``limit_bytes`` in all (the largest that fit), CPU only (a GPU's
    caching allocator already reuses memory, and keeping it here would hide it from training). A buffer is
    given back only by :func:`release_cache`, whose caller vouches that nothing still views the cache."""

    def __init__(self, limit_bytes: int = 256 << 20):
        self.limit_bytes = int(limit_bytes)
        self._free: list[Tensor] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A flat buffer of ``like``'s dtype and device with room for ``shape`` (a spare one if one fits)."""
        n = math.prod(shape)
        if like.device.type == "cpu":
            with self._lock:
                # an inference-mode tensor cannot be written outside inference mode
                inference_ok = torch.is_inference_mode_enabled()
                fits = [i for i, t in enumerate(self._free) if t.dtype == like.dtype and t.numel() >= n
                        and (inference_ok or not t.is_inference())]
                if fits:
                    return self._free.pop(min(fits, key=lambda i: self._free[i].numel()))
        return like.new_empty((n,))

    def give(self, buffers: list[Tensor]) -> None:
        """Keep ``buffers`` (flat, CPU) for later; the largest first while they fit in ``limit_bytes``."""
        with self._lock:
            kept, total = [], 0
            for t in sorted(self._free + [t for t in buffers if t.device.type == "cpu" and t.dim() == 1],
                            key=lambda t: -t.numel() * t.element_size()):
                size = t.numel() * t.element_size()
                if total + size <= self.limit_bytes:
                    kept.append(t)
                    total += size
            self._free = kept

    def clear(self) -> None:
        with self._lock:
            self._free.clear()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(t.numel() * t.element_size() for t in self._free)


#: the process's pool of spare cache buffers (``SPARE_BUFFERS.limit_bytes = 0`` turns keeping them off)
SPARE_BUFFERS = SpareBuffers()


class PreallocatedLayer(transformers.DynamicLayer):
    """A full-attention layer cache whose keys/values live in buffers of ``capacity`` positions.

    ``keys`` / ``values`` are views of the filled part (batch, heads, length, head_dim), so the
    model and :func:`layer_kv` read it as a ``DynamicLayer``; ``update`` copies only the new
    positions. For inference only (the in-place writes would overwrite tensors autograd saved)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = max(int(capacity), 1)
        self.length = 0
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self._owned: list[Tensor] = []  # the flat buffers _k and _v view

    def _buffers(self, k_shape: tuple[int, ...], v_shape: tuple[int, ...], like_k: Tensor, like_v: Tensor):
        fk, fv = SPARE_BUFFERS.take(k_shape, like_k), SPARE_BUFFERS.take(v_shape, like_v)
        self._owned = [fk, fv]
        return fk[: math.prod(k_shape)].view(k_shape), fv[: math.prod(v_shape)].view(v_shape)

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        b, h, _, dk = key_states.shape
        self._k, self._v = self._buffers((b, h, self.capacity, dk), (b, h, self.capacity, value_states.shape[-1]),
                                         key_states, value_states)

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * self._k.shape[2])
        old, (ok, ov) = self._owned, (self._k, self._v)
        k, v = self._buffers((*ok.shape[:2], cap, ok.shape[3]), (*ov.shape[:2], cap, ov.shape[3]), ok, ov)
        k[:, :, : self.length] = ok[:, :, : self.length]
        v[:, :, : self.length] = ov[:, :, : self.length]
        self._k, self._v = k, v
        SPARE_BUFFERS.give(old)

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._k.shape[2]:
            self._grow(end)
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def write_rows(self, rows: Tensor, start: int, key_states: Tensor, value_states: Tensor, batch: int) -> None:
        """Write the keys/values ``(len(rows), heads, n, head_dim)`` of the rows ``rows`` at positions
        ``start .. start + n`` of a cache for ``batch`` rows (the prompt of a length group; ``decoding.generate``).
        The first write allocates the buffers with every slot up to its end zeroed (slots no group writes, the
        padding, stay zeros and masked); the filled length becomes the furthest position written."""
        end = start + key_states.shape[-2]
        if not self.is_initialized:
            shape = (batch, key_states.shape[1], 0, key_states.shape[3])
            self.lazy_initialization(key_states.new_empty(shape), value_states.new_empty((*shape[:3], value_states.shape[3])))
            if end > self._k.shape[2]:
                self._grow(end)
            self._k[:, :, :end].zero_()
            self._v[:, :, :end].zero_()
        self._k[rows, :, start:end] = key_states
        self._v[rows, :, start:end] = value_states
        self.length = max(self.length, end)
        self._views()

    def crop(self, tokens_to_remove: int) -> None:
        """Forget the last ``-tokens_to_remove`` positions (transformers' convention: a negative count)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of positions to remove, got {tokens_to_remove}")
        if tokens_to_remove and self.is_initialized:
            self.length = max(self.length + tokens_to_remove, 0)
            self._views()

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep the rows ``indices`` (ascending): the filled part is compacted into the buffer's first rows."""
        if not self.is_initialized:
            return
        n, end = indices.shape[0], self.length
        self._k[:n, :, :end] = self._k[indices, :, :end]
        self._v[:n, :, :end] = self._v[indices, :, :end]
        self._k, self._v = self._k[:n], self._v[:n]
        self._views()

    def reset(self) -> None:
        self.length = 0
        self._k = self._v = None
        self._owned = []
        super().reset()

    def release(self) -> None:
        """Give the buffers to :data:`SPARE_BUFFERS` and empty the layer (the caller holds no view of them)."""
        owned = self._owned
        self.reset()
        SPARE_BUFFERS.give(owned)


def new_cache(model: Any, capacity: int | None = None):
    """An empty cache laid out for ``model`` (sliding-window / hybrid layers included).

    ``capacity``: positions to preallocate (prompt plus everything a loop will append): every
    plain full-attention layer becomes a :class:`PreallocatedLayer` (inference only); None: the
    dynamic cache (training, where autograd needs the concatenating cache)."""
    check_transformers()
    cache = transformers.DynamicCache(config=model.config)
    if capacity is not None:
        for i, layer in enumerate(cache.layers):
            if type(layer) is transformers.DynamicLayer:  # sliding / hybrid / dummy layers keep their own logic
                cache.layers[i] = PreallocatedLayer(capacity)
    return cache


def release_cache(cache: Any) -> None:
    """Hand a finished inference cache's preallocated buffers back for the next cache (:class:`SpareBuffers`);
    the cache is empty afterwards. Only for a cache the caller alone holds: a view of its keys or values kept
    elsewhere would be overwritten by the next cache that takes the buffer."""
    for layer in getattr(cache, "layers", ()):
        if isinstance(layer, PreallocatedLayer):
            layer.release()


def static_cache(model: Any, capacity: int):
    """transformers' static cache of ``capacity`` positions for ``model``: fixed shapes, written in place at
    one column for every row (the compiled decode path, ``decoding/compiled.py``)."""
    check_transformers()
    return transformers.StaticCache(config=model.config, max_cache_len=capacity)


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


def decoder_of(model: Any) -> Any:
    """The decoder stack of a causal LM (embeddings, layers, final norm; no LM head), or None.

    A peft model is unwrapped first (its LoRA layers live in the wrapped model). Calling the decoder
    returns ``last_hidden_state``, the same tensor as the full model's ``hidden_states[-1]``, without
    the LM head's product over the vocabulary or every layer's states."""
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    decoder = getattr(inner, "base_model", None)
    if decoder is None or decoder is inner or not callable(getattr(decoder, "get_input_embeddings", None)):
        return None
    return decoder


def static_forward(model: Any, cache: Any, **inputs: Any) -> Any:
    """``model(**inputs)`` on a :func:`static_cache` (checked when it was made): the body of a compiled step,
    which must not call the version check (a cached function dynamo would warn about)."""
    return model(**inputs, cache=cache, use_cache=True)


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
