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

  KV rule (documented open choice 3, ``kv_rule``): a (position, layer) pair that is not run after an
  exit gets keys/values by ``project`` — the layer's own pre-attention norm and key/value projection
  of the adapter-branch state entering that layer, which is what the soft mixture computes in
  training (f_l runs on the mixed state) — or by ``copy``: the same row's previous position's entry
  at that layer (nothing computed). Layers skipped by a step shortcut always get the copy.
  Step shortcut: a latent step that exited at layer l < L - 1 hands the state it had after layer l
  (the exit adapter's output) to the next latent step, which starts at layer l + 1 instead of
  re-running layers 0..l (SPEC §3.5's inference algorithm) and always runs that layer (its router is
  not asked: leaving at once would repeat the previous step's adapter branch and compute nothing).
  When every row of the batch runs a layer, or every row has exited, whole-batch paths skip the
  per-row bookkeeping (``fast_paths``; tests check they change nothing).

The wrappers are swapped into the model's layer list only inside :meth:`ShortcutController.installed`,
so the backbone's own weights, state dict and ``save_pretrained`` output never change.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from latentreason.models.backbone import find_final_norm
from latentreason.models.kv_cache import is_cache, layer_kv


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
    """A view of a ``transformers`` cache for a subset of rows; the other rows' new entries are given."""

    def __init__(self, base: Any, rows: Tensor, fill_k: Tensor, fill_v: Tensor):
        self.base, self.rows, self.fill_k, self.fill_v = base, rows, fill_k, fill_v

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args, **kwargs):
        full_k, full_v = self.fill_k, self.fill_v
        full_k[self.rows] = key_states
        full_v[self.rows] = value_states
        k, v = self.base.update(full_k, full_v, layer_idx, *args, **kwargs)
        return k[self.rows], v[self.rows]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


class _Captured(Exception):
    def __init__(self, keys: Tensor, values: Tensor):
        super().__init__("keys/values captured")
        self.keys, self.values = keys, values


class _CaptureCache:
    """Stands in for the cache when only a layer's keys/values of some positions are wanted.

    Hugging Face attention modules compute the pre-attention norm and the key/value projections
    (with rotary embeddings where the model has them) and hand them to ``cache.update`` before
    attending; this cache's ``update`` raises with them, so attention, output projection and MLP
    are never run. Works for any architecture whose attention goes through ``cache.update``."""

    def __init__(self, base: Any):
        self.base = base

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args, **kwargs):
        raise _Captured(key_states, value_states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def previous_kv(cache: Any, layer_idx: int, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Copies of each row's last cached key/value at ``layer_idx`` (shape of one new position)."""
    keys, values = layer_kv(cache, layer_idx)
    return keys[:, :, -1:].clone(), values[:, :, -1:].clone()


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
        self.kv_rule = "project"  # project | copy (docs/system15.md, open choice 3)
        self.direct_kv = True  # GPT-2: project keys/values without calling the block (tests compare both)
        self.fast_paths = True  # whole-batch shortcuts of the routing bookkeeping (tests compare both)
        self.force_weight: float | None = None  # tests: a fixed router output
        self.reset(0)

    def reset(self, batch: int, device: torch.device | str = "cpu") -> None:
        self.batch = batch
        self.start = torch.zeros(batch, dtype=torch.long, device=device)  # layers < start skipped (step shortcut)
        self.carry: Tensor | None = None
        self.carry_next: Tensor | None = None
        self.exit_layer = torch.full((batch,), self.L, dtype=torch.long, device=device)
        self.active: Tensor | None = None
        self.layer_forwards = torch.zeros(batch, dtype=torch.long, device=device)
        # what else a routed latent step ran, per row (for the FLOPs count)
        self.router_calls = torch.zeros(batch, dtype=torch.long, device=device)
        self.adapter_calls = torch.zeros(batch, dtype=torch.long, device=device)
        self.kv_projections = torch.zeros(batch, dtype=torch.long, device=device)
        self.latent_steps = torch.zeros(batch, dtype=torch.long, device=device)
        self.step_exits: list[Tensor] = []
        self.weights: list[Tensor] = []  # soft mode: router weights per layer of the current step
        self.states: list[Tensor] = []  # soft mode: mixed layer outputs of the current step

    @contextmanager
    def installed(self, mode: str) -> Iterator["ShortcutController"]:
        """Swap the wrappers in (``soft`` or ``hard``); a routed pass ends when the final norm has run."""
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
        # whole-batch fast paths: every row still runs / every row has exited, plus counts for all rows
        self.uniform = self.carry is None and self.fast_paths
        self.carry_next: Tensor | None = None  # step shortcut: per row, the state the next step starts from
        self.all_exited = False
        self._whole = {"layer_forwards": 0, "router_calls": 0, "adapter_calls": 0, "kv_projections": 0}

    def end_step(self) -> None:
        """After a routed latent step: prepare the step shortcut for the next one.

        A row that exited at layer l < L - 1 hands the state it had after layer l (its exit adapter's
        output, or layer l's own output when the depth shortcut is off) to the next latent step, which
        starts at layer l + 1 for it: layers 0..l are not run, and the carried state moves one layer on
        at least, so consecutive thoughts never repeat the same computation. An exit at the last layer
        (nothing left to run) restarts the next step at layer 0.
        """
        self.armed = False
        for name, n in self._whole.items():
            if n:
                getattr(self, name).add_(n)
        self.step_exits.append(self.exit_layer.clone())
        self.latent_steps += 1
        reuse = self.exit_layer < self.L - 1
        if self.step_shortcut and self.carry_next is not None and bool(reuse.any()):
            self.start = torch.where(reuse, self.exit_layer + 1, torch.zeros_like(self.start))
            self.carry = self.carry_next
        else:
            self.start = torch.zeros_like(self.start)
            self.carry = None
        self.carry_next = None


class ShortcutLayer(nn.Module):
    """Decoder layer ``index`` with a router and an adapter in front of it (see the module docstring)."""

    def __init__(self, layer: nn.Module, index: int, ctl: ShortcutController):
        super().__init__()
        self.layer, self.index, self.ctl = layer, index, ctl
        self._idx: int | None = None

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
        if ctl.all_exited:  # the whole batch left the layer stack earlier in this step
            return self._exited_batch(h, args, kwargs)
        if ctl.uniform and (ctl.depth_shortcut or ctl.step_shortcut):
            # fast path while every row is still running: one router call, then the layer or a whole-batch exit
            w = ctl.router_weight(l, h[:, -1])
            ctl._whole["router_calls"] += 1
            fire = w > ctl.lambda_depth
            if not bool(fire.any()):
                ctl._whole["layer_forwards"] += 1
                return self._out(self.layer(h, *args, **kwargs))
            if bool(fire.all()):
                ctl.exit_layer.fill_(l)
                if ctl.depth_shortcut:
                    ctl.active.fill_(False)
                    ctl.all_exited = True
                    out = self._exited_batch(h, args, kwargs)
                else:  # step shortcut alone: the layer still runs, the next step starts after it
                    ctl._whole["layer_forwards"] += 1
                    ctl.uniform = False
                    out = self._out(self.layer(h, *args, **kwargs))
                if ctl.step_shortcut:
                    ctl.carry_next = out[:, -1].detach().clone()
                return out
            ctl.uniform = False  # rows part ways: the general path below from here on
            return self._general(h, args, kwargs, fired=fire.nonzero(as_tuple=True)[0])
        return self._general(h, args, kwargs)

    def _exited_batch(self, h: Tensor, args, kwargs) -> Tensor:
        """Every row has exited: this layer's keys/values by the KV rule, then the adapter."""
        ctl, l = self.ctl, self.index
        cache = _find_cache(args, kwargs)
        if cache is not None:
            if ctl.kv_rule == "project":
                k, v = self._project_kv(h, None, h.shape[0], args, kwargs)
                ctl._whole["kv_projections"] += 1
            else:
                k, v = previous_kv(cache, self._layer_idx(), h.shape[0], h)
            cache.update(k.to(h.dtype), v.to(h.dtype), self._layer_idx())
        ctl._whole["adapter_calls"] += 1
        if h.shape[1] == 1:
            return ctl.adapters[l](h)
        h = h.clone()
        h[:, -1] = ctl.adapters[l](h[:, -1])
        return h

    def _general(self, h: Tensor, args, kwargs, fired: Tensor | None = None) -> Tensor:
        """Rows of the batch at different places: route, run the layer on the running rows only."""
        ctl, l = self.ctl, self.index
        B = h.shape[0]
        h = h.clone()
        if ctl.step_shortcut and ctl.carry_next is None:
            ctl.carry_next = h[:, -1].detach().clone()  # rows that exit in this step overwrite theirs
        if ctl.carry is not None:  # step shortcut: rows starting at this layer take the carried state
            starting = (ctl.start == l) & (ctl.start > 0)
            if bool(starting.any()):
                idx = starting.nonzero(as_tuple=True)[0]
                h[idx, -1] = ctl.carry[idx].to(h.dtype)
        running = ctl.active & (ctl.start <= l)
        fire = fired
        if fire is None and (ctl.depth_shortcut or ctl.step_shortcut):
            # a row that starts here by the step shortcut runs this layer: leaving at once would compute nothing
            cand = (running & ~((ctl.start == l) & (ctl.start > 0))).nonzero(as_tuple=True)[0]
            if cand.numel():
                whole = cand.numel() == B
                w = ctl.router_weight(l, h[:, -1] if whole else h[cand, -1])
                _bump(ctl.router_calls, None if whole else cand)
                fire = cand[w > ctl.lambda_depth]
        if fire is not None and fire.numel():
            fire = fire[ctl.exit_layer[fire] == ctl.L]
            ctl.exit_layer[fire] = l
            if ctl.depth_shortcut:
                ctl.active[fire] = False
                running[fire] = False
        rows = running.nonzero(as_tuple=True)[0]
        n_run = rows.numel()
        _bump(ctl.layer_forwards, None if n_run == B else rows)
        carry_fired = ctl.step_shortcut and fire is not None and bool(fire.numel())
        if n_run == B:  # nobody skips this layer
            out = self._out(self.layer(h, *args, **kwargs))
            if carry_fired:  # step shortcut alone: the next step starts after this layer, from its output
                ctl.carry_next[fire] = out[fire, -1].detach()
            return out
        cache = _find_cache(args, kwargs)
        exited = (~ctl.active).nonzero(as_tuple=True)[0]
        n_exit = exited.numel()
        fill_k = fill_v = None
        if cache is not None:
            # keys/values of this layer for the positions that do not run it (KV rule, open choice 3)
            if ctl.kv_rule == "project" and n_exit == B:  # the whole batch has exited
                fill_k, fill_v = self._project_kv(h, None, B, args, kwargs)
            else:
                fill_k, fill_v = previous_kv(cache, self._layer_idx(), B, h)
                if ctl.kv_rule == "project" and n_exit:  # step-shortcut skips keep the copy
                    k, v = self._project_kv(h[exited], exited, B, args, kwargs)
                    fill_k[exited], fill_v[exited] = k.to(fill_k.dtype), v.to(fill_v.dtype)
            if ctl.kv_rule == "project" and n_exit:
                _bump(ctl.kv_projections, None if n_exit == B else exited)
        # exited rows continue along the adapter branch (the soft mixture at w = 1, as trained)
        if n_exit == B:
            h[:, -1] = ctl.adapters[l](h[:, -1])
        elif n_exit:
            h[exited, -1] = ctl.adapters[l](h[exited, -1])
        if n_exit:
            _bump(ctl.adapter_calls, None if n_exit == B else exited)
        if carry_fired and ctl.depth_shortcut:  # the state after the exit adapter starts the next step's next layer
            ctl.carry_next[fire] = h[fire, -1].detach()
        if n_run == 0:
            if cache is not None:
                cache.update(fill_k, fill_v, self._layer_idx())
            return h
        sub_args = [_RowCache(a, rows, fill_k, fill_v) if _is_cache(a) else _rows_of(a, rows, B) for a in args]
        sub_kwargs = {k: (_RowCache(v, rows, fill_k, fill_v) if _is_cache(v) else _rows_of(v, rows, B))
                      for k, v in kwargs.items()}
        out = self._out(self.layer(h[rows], *sub_args, **sub_kwargs))
        h[rows] = out
        if carry_fired and not ctl.depth_shortcut:
            ctl.carry_next[fire] = h[fire, -1].detach()
        return h

    def _project_kv(self, h: Tensor, rows: Tensor | None, B: int, args, kwargs) -> tuple[Tensor, Tensor]:
        """This layer's keys/values for states ``h`` of ``rows`` (None: all): only the pre-attention
        norm and the key/value projections run. GPT-2 blocks are projected directly; any other
        architecture through :class:`_CaptureCache` (a test checks both give the same entries)."""
        if self.ctl.direct_kv and _is_gpt2_block(self.layer):
            return gpt2_kv(self.layer, h)

        def sub(x):
            return _CaptureCache(x) if _is_cache(x) else (x if rows is None else _rows_of(x, rows, B))

        try:
            self.layer(h, *[sub(a) for a in args], **{k: sub(v) for k, v in kwargs.items()})
        except _Captured as c:
            return c.keys, c.values
        raise RuntimeError(f"{type(self.layer).__name__} did not hand its keys/values to the cache; "
                           "use method_args.kv_rule=copy for this architecture")

    def _layer_idx(self) -> int:
        if self._idx is None:
            self._idx = self.index
            for mod in self.layer.modules():
                idx = getattr(mod, "layer_idx", None)
                if isinstance(idx, int):
                    self._idx = idx
                    break
        return self._idx


def _bump(counter: Tensor, idx: Tensor | None) -> None:
    if idx is None:
        counter += 1
    else:
        counter[idx] += 1


def _gpt2_heads(layer: nn.Module) -> int | None:
    """Attention heads of a plain GPT-2 block (``ln_1``, a self-attention ``c_attn`` Conv1D of shape
    (d, 3d) and the model config), else None: anything else goes through :class:`_CaptureCache`.
    Only the block's weights and its public config are read."""
    attn = getattr(layer, "attn", None)
    w = getattr(getattr(attn, "c_attn", None), "weight", None)
    cfg = getattr(attn, "config", None)
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    if not hasattr(layer, "ln_1") or not isinstance(w, Tensor) or not isinstance(heads, int) or heads < 1 \
            or getattr(attn, "is_cross_attention", False) or w.dim() != 2 or w.shape[1] != 3 * w.shape[0] \
            or w.shape[0] % heads:
        return None
    return heads


def _is_gpt2_block(layer: nn.Module) -> bool:
    return _gpt2_heads(layer) is not None


def gpt2_kv(layer: nn.Module, h: Tensor) -> tuple[Tensor, Tensor]:
    """A GPT-2 block's keys/values for states ``h`` (B, T, d): ln_1, then c_attn's key/value parts."""
    attn, heads = layer.attn, _gpt2_heads(layer)
    w, b = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: (d, 3d) = [query | key | value]; the query part is not needed
    d = w.shape[0]
    kv = torch.addmm(b[d:], layer.ln_1(h).reshape(-1, d), w[:, d:]).view(*h.shape[:-1], 2 * d)
    k, v = kv.split(d, dim=-1)
    shape = (*k.shape[:-1], heads, d // heads)
    return k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2)


def _is_cache(x: Any) -> bool:
    return is_cache(x) or isinstance(x, (_RowCache, _CaptureCache))


def _find_cache(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        if _is_cache(a):
            return a
    return None
