"""System-1.5 shortcut modules: per-layer routers and adapters, and the layer wrapper that uses them.

* :class:`Router` — Linear(d, d/4) → GELU → Linear(d/4, 1) → sigmoid, one per layer (not shared).
* :class:`Adapter` — residual bottleneck h + W_up·GELU(W_down·LN(h)); W_up starts at zero, so a
  fresh adapter is the identity.
* :class:`ShortcutLayer` — wraps decoder layer l while a :class:`ShortcutController` is active.
  Only *latent* positions are routed (language tokens always run at full depth):

  - ``soft`` (training): h_l = w·g_l(h_{l-1}) + (1 - w)·f_l(h_{l-1}) with w = R_l(h_{l-1});
  - ``hard`` (inference): if R_l(h_{l-1}) > λ_depth the position exits: h = g_l(h_{l-1}) and layers
    l..L are **not run** for it; it continues along the adapter branch (g_{l+1}, ..., g_L: the soft
    mixture with w = 1, as trained). Rows of one batch exit at different layers: each layer is run
    on the rows still active only.

  KV rule (documented open choice): a (position, layer) pair that is not computed — layers after
  an exit, or layers skipped by a step shortcut — gets the keys/values of the same row's previous
  position at that layer, so later positions attend to an existing, valid entry of that layer.
  Step shortcut: a latent step that exited at layer l hands the state that entered layer l to the
  next latent step, which starts at layer l instead of re-running layers 1..l-1.

The wrappers are swapped into the model's layer list only inside :meth:`ShortcutController.installed`,
so the backbone's own weights, state dict and ``save_pretrained`` output never change.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn


class Router(nn.Module):
    def __init__(self, d_model: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(1, d_model // 4)
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.net(h)).squeeze(-1)


class Adapter(nn.Module):
    def __init__(self, d_model: int, width: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.down = nn.Linear(d_model, width)
        self.act = nn.GELU()
        self.up = nn.Linear(width, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(self.act(self.down(self.norm(h))))


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder layers (the ModuleList with ``num_hidden_layers`` entries)."""
    cfg = model.config
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    best = None
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            best = mod
            break
    if best is None:
        raise ValueError(f"cannot find the {n} decoder layers of {type(model).__name__}")
    return best


def _rows_of(x: Any, rows: Tensor, batch: int) -> Any:
    if isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == batch:
        return x[rows]
    if isinstance(x, tuple) and x and all(isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == batch for t in x):
        return tuple(t[rows] for t in x)
    return x


class _RowCache:
    """A view of a ``transformers`` cache for a subset of rows (the other rows get the KV rule)."""

    def __init__(self, base: Any, rows: Tensor, batch: int):
        self.base, self.rows, self.batch = base, rows, batch

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args, **kwargs):
        full_k, full_v = previous_kv(self.base, layer_idx, self.batch, key_states)
        full_k[self.rows] = key_states
        full_v[self.rows] = value_states
        k, v = self.base.update(full_k, full_v, layer_idx, *args, **kwargs)
        return k[self.rows], v[self.rows]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def previous_kv(cache: Any, layer_idx: int, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Copies of each row's last cached key/value at ``layer_idx`` (shape of one new position)."""
    layer = cache.layers[layer_idx]
    return layer.keys[:, :, -1:].clone(), layer.values[:, :, -1:].clone()


class ShortcutController:
    """State of routed forward passes; owned by the System-1.5 method."""

    def __init__(self, model: nn.Module, routers: nn.ModuleList, adapters: nn.ModuleList):
        self.model = model
        self.layers = find_decoder_layers(model)
        self.routers, self.adapters = routers, adapters
        self.L = len(self.layers)
        self.mode = "off"  # off | soft | hard
        self.armed = False  # route the next forward pass (a latent step)
        self.lambda_depth = 0.5
        self.depth_shortcut = True
        self.step_shortcut = True
        self.force_weight: float | None = None  # tests: a fixed router output
        self.reset(0)

    def reset(self, batch: int, device: torch.device | str = "cpu") -> None:
        self.batch = batch
        self.start = torch.zeros(batch, dtype=torch.long, device=device)  # layers < start skipped (step shortcut)
        self.carry: Tensor | None = None
        self.exit_layer = torch.full((batch,), self.L, dtype=torch.long, device=device)
        self.active: Tensor | None = None
        self.layer_forwards = torch.zeros(batch, dtype=torch.long, device=device)
        self.latent_steps = torch.zeros(batch, dtype=torch.long, device=device)
        self.step_exits: list[Tensor] = []
        self.weights: list[Tensor] = []  # soft mode: router weights per layer of the current step
        self.states: list[Tensor] = []  # soft mode: mixed layer outputs of the current step

    @contextmanager
    def installed(self, mode: str) -> Iterator["ShortcutController"]:
        """Swap the wrappers in (``soft`` or ``hard``); a routed pass ends when the final norm has run."""
        from latentreason.models.backbone import find_final_norm

        originals = list(self.layers)
        self.mode = mode
        self.soft_log: list[tuple[list[Tensor], list[Tensor]]] = []
        for i, layer in enumerate(originals):
            self.layers[i] = ShortcutLayer(layer, i, self)
        hook = find_final_norm(self.model).register_forward_hook(lambda mod, inp, out: self._pass_done(out))
        try:
            yield self
        finally:
            hook.remove()
            for i, layer in enumerate(originals):
                self.layers[i] = layer
            self.mode = "off"
            self.armed = False

    def arm(self) -> None:
        """Route the next forward pass (a latent step)."""
        if self.mode == "soft":
            self.weights, self.states = [], []
            self.armed = True
        elif self.mode == "hard":
            self.begin_step()

    def last_hidden(self, output=None) -> Tensor:
        """The final-norm output of the last pass at its last position (the recorder of HF hidden
        states does not see through the wrappers)."""
        return self._normed[:, -1]

    def _pass_done(self, normed: Tensor) -> None:
        self._normed = normed
        if not self.armed:
            return
        if self.mode == "soft":
            self.soft_log.append((self.weights, self.states))
            self.armed = False
        else:
            self.end_step()

    def router_weight(self, l: int, h: Tensor) -> Tensor:
        if self.force_weight is not None:
            return torch.full(h.shape[:-1], float(self.force_weight), dtype=h.dtype, device=h.device)
        return self.routers[l](h)

    # ---------------------------------------------------------------- hard mode bookkeeping
    def begin_step(self) -> None:
        """Before a routed latent step (hard mode)."""
        self.armed = True
        self.active = self.start.new_ones(self.batch, dtype=torch.bool)
        self.exit_layer = torch.full_like(self.start, self.L)
        self.entry = [None] * self.batch

    def end_step(self) -> None:
        """After a routed latent step: prepare the step shortcut for the next one."""
        self.armed = False
        exited = self.exit_layer < self.L
        self.step_exits.append(self.exit_layer.clone())
        self.latent_steps += 1
        if self.step_shortcut and bool(exited.any()):
            self.start = torch.where(exited, self.exit_layer, torch.zeros_like(self.start))
            self.carry = self._entry_states
        else:
            self.start = torch.zeros_like(self.start)
            self.carry = None


class ShortcutLayer(nn.Module):
    """Decoder layer ``index`` with a router and an adapter in front of it (see the module docstring)."""

    def __init__(self, layer: nn.Module, index: int, ctl: ShortcutController):
        super().__init__()
        self.layer, self.index, self.ctl = layer, index, ctl

    def forward(self, hidden_states: Tensor, *args, **kwargs):
        ctl = self.ctl
        if ctl.mode == "soft" and ctl.armed:
            return self._soft(hidden_states, *args, **kwargs)
        if ctl.mode == "hard" and ctl.armed:
            return self._hard(hidden_states, *args, **kwargs)
        return self.layer(hidden_states, *args, **kwargs)

    @staticmethod
    def _out(x):
        return x[0] if isinstance(x, tuple) else x

    def _soft(self, h: Tensor, *args, **kwargs):
        ctl, l = self.ctl, self.index
        f = self._out(self.layer(h, *args, **kwargs))
        w = ctl.router_weight(l, h)  # (B, T)
        mixed = w.unsqueeze(-1) * ctl.adapters[l](h) + (1 - w.unsqueeze(-1)) * f
        ctl.weights.append(w)
        ctl.states.append(mixed)
        return mixed

    def _hard(self, h: Tensor, *args, **kwargs):
        ctl, l = self.ctl, self.index
        B = h.shape[0]
        h = h.clone()
        if l == 0:
            ctl._entry_states = h[:, -1].detach().clone()
        if ctl.carry is not None:  # step shortcut: rows starting at this layer take the carried state
            starting = ctl.start == l
            if bool((starting & (ctl.start > 0)).any()):
                idx = (starting & (ctl.start > 0)).nonzero(as_tuple=True)[0]
                h[idx, -1] = ctl.carry[idx].to(h.dtype)
        # rows that exited at an earlier layer continue along the adapter branch (no layer, no router)
        along = ~ctl.active & (ctl.exit_layer < l)
        if bool(along.any()):
            idx = along.nonzero(as_tuple=True)[0]
            h[idx, -1] = ctl.adapters[l](h[idx, -1])
        running = ctl.active & (ctl.start <= l)
        if ctl.depth_shortcut or ctl.step_shortcut:
            cand = running.nonzero(as_tuple=True)[0]
            if cand.numel():
                w = ctl.router_weight(l, h[cand, -1])
                fire = cand[w > ctl.lambda_depth]
                if fire.numel():
                    first = ctl.exit_layer[fire] == ctl.L
                    fire = fire[first]
                    ctl.exit_layer[fire] = l
                    ctl._entry_states[fire] = h[fire, -1].detach()
                    if ctl.depth_shortcut:
                        h[fire, -1] = ctl.adapters[l](h[fire, -1])
                        ctl.active[fire] = False
                        running[fire] = False
        rows = running.nonzero(as_tuple=True)[0]
        ctl.layer_forwards[rows] += 1
        cache_pos = _find_cache(args, kwargs)
        if rows.numel() == B:
            return self._out(self.layer(h, *args, **kwargs))
        if rows.numel() == 0:
            if cache_pos is not None:
                cache = cache_pos
                k, v = previous_kv(cache, self._layer_idx(), B, h)
                cache.update(k, v, self._layer_idx())
            return h
        sub_args = [_RowCache(a, rows, B) if _is_cache(a) else _rows_of(a, rows, B) for a in args]
        sub_kwargs = {k: (_RowCache(v, rows, B) if _is_cache(v) else _rows_of(v, rows, B)) for k, v in kwargs.items()}
        out = self._out(self.layer(h[rows], *sub_args, **sub_kwargs))
        h[rows] = out
        return h

    def _layer_idx(self) -> int:
        for mod in self.layer.modules():
            idx = getattr(mod, "layer_idx", None)
            if isinstance(idx, int):
                return idx
        return self.index


def _is_cache(x: Any) -> bool:
    return hasattr(x, "update") and hasattr(x, "layers") and not isinstance(x, (Tensor, nn.Module))


def _find_cache(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        if _is_cache(a):
            return a
    return None
