"""The System-1.5 layer wrapper (:class:`ShortcutLayer`) and the key/value helpers it needs.

:class:`ShortcutLayer` wraps decoder layer l while a
:class:`~latentreason.methods.system15.shortcuts.ShortcutController` routes a pass: the soft mixture in
training, the hard exits at inference (the rules are in ``methods/system15/shortcuts.py``'s docstring). The
helpers give a layer's keys/values for states without running the whole layer (GPT-2 blocks
directly, any other architecture by stopping the attention at ``cache.update``) and views of a
cache for a subset of the batch's rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from latentreason.models.kv_cache import is_cache, layer_kv


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


def previous_kv(cache: Any, layer_idx: int) -> tuple[Tensor, Tensor]:
    """Copies of each row's last cached key/value at ``layer_idx`` (shape of one new position)."""
    keys, values = layer_kv(cache, layer_idx)
    return keys[:, :, -1:].clone(), values[:, :, -1:].clone()


class ShortcutLayer(nn.Module):
    """Decoder layer ``index`` with a router and an adapter in front of it (see the module docstring)."""

    def __init__(self, layer: nn.Module, index: int, ctl: Any):  # ctl: a ShortcutController
        super().__init__()
        self.layer, self.index, self.ctl = layer, index, ctl
        self._idx: int | None = None
        self._heads = _gpt2_heads(layer)  # read once: checked on every projection otherwise
        self._router: tuple[Tensor, ...] | None = None
        self._fused: tuple[Any, ...] | None = None
        self._bound_key: tuple | None = None
        self._sources: list[tuple[nn.Module, str]] | None = None

    def _weight_sources(self) -> list[tuple[nn.Module, str]]:
        """(module, parameter name) of every tensor :meth:`bind` reads."""
        r, a = self.ctl.routers[self.index], self.ctl.adapters[self.index]
        mods = [r.net[0], r.net[2], a.norm, a.down, a.up]
        if self._heads is not None:
            mods += [self.layer.ln_1, self.layer.attn.c_attn]
        return [(m, n) for m in mods for n in ("weight", "bias")]

    def bind(self) -> None:
        """Read the tensors of the two hot operations of inference once: the router (every layer a
        thought reaches) and, for GPT-2 blocks, the exit (below). A latent step at batch 1 costs per
        operation, and module calls and attribute look-ups would otherwise cost as much as the
        arithmetic; the colder paths (other architectures, mixed positions) call the modules.

        For a GPT-2 block whose adapter norm and ``ln_1`` share ``eps``, the exit of a position
        (this layer's keys/values from ``ln_1(h)``, then the adapter's down-projection of its own
        ``LN(h)``) shares one normalisation: both affine maps are folded into one matrix, so one
        matrix product gives the adapter's hidden units and the keys/values together — the same
        function as the modules, equal up to float rounding (tests compare it with the module path)."""
        ctl, l = self.ctl, self.index
        # bound once per set of weights: the key changes when a parameter is replaced, moved or updated
        # in place; read from the owners' parameter dicts (module attribute look-ups cost ~1 µs each,
        # and this runs once per ``generate``)
        if self._sources is None:
            self._sources = self._weight_sources()
        key = (ctl.direct_kv, *[None if t is None else (id(t), t.data_ptr(), t._version)
                                for t in [m._parameters.get(n) for m, n in self._sources]])
        if key == self._bound_key:
            return
        self._bound_key = key
        r, a = ctl.routers[l], ctl.adapters[l]
        first, last = r.net[0], r.net[2]
        # transposed views (same storage): ``addmm(b, x, w.t())`` is one operation where ``linear`` is two
        self._router = (first.weight.t(), first.bias, last.weight.t(), last.bias)
        self._fused = None
        ln = getattr(self.layer, "ln_1", None)
        if self._heads is not None and ctl.direct_kv and ln.eps == a.norm.eps \
                and a.norm.weight is not None and ln.weight is not None:
            w, b = self.layer.attn.c_attn.weight, self.layer.attn.c_attn.bias
            d = w.shape[0]
            w_kv, b_kv = w[:, d:], b[d:]
            down_w = (a.down.weight * a.norm.weight).t()  # (d, width): the norm's scale folded in
            down_b = a.down.weight @ a.norm.bias + a.down.bias
            kv_w = ln.weight[:, None] * w_kv  # (d, 2d)
            kv_b = ln.bias @ w_kv + b_kv
            self._fused = (torch.cat([down_w, kv_w], 1), torch.cat([down_b, kv_b]), down_w.shape[1],
                           a.up.weight.t(), a.up.bias, ln.eps, self._heads, d)
        self._layer_idx()

    def _router_logit(self, x: Tensor) -> Tensor:
        """(N, 1): the logit z of R_l(x) = sigmoid(z) for states ``x`` (N, d), from the bound tensors."""
        w1t, b1, w2t, b2 = self._router
        return torch.addmm(b2, _gelu(torch.addmm(b1, x, w1t)), w2t)

    def _fires(self, x: Tensor) -> Tensor:
        """Which rows of ``x`` (N, d) leave at this layer: R_l(x) > λ_depth."""
        if self._router is None or self.ctl.force_weight is not None:
            return self.ctl.router_weight(self.index, x) > self.ctl.lambda_depth
        return self._router_logit(x).squeeze(-1) > self.ctl._threshold

    def _exit_fused(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For states ``h`` (B, T, d): this layer's keys/values and the adapter's output, with one
        normalisation and one matrix product (see :meth:`bind`)."""
        m, c, width, uwt, ub, eps, heads, d = self._fused
        B, T = h.shape[0], h.shape[1]
        y = torch.addmm(c, F.layer_norm(h, (d,), None, None, eps).view(-1, d), m)
        out = torch.addmm(ub, _gelu(y[:, :width]), uwt).view(B, T, d).add_(h)
        kv = y[:, width:].view(B, T, 2, heads, d // heads).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1], out

    def forward(self, hidden_states: Tensor, *args, **kwargs):
        ctl = self.ctl
        if ctl.mode == "soft" and ctl.armed:
            return self._soft(hidden_states, *args, **kwargs)
        if ctl.mode == "hard" and ctl.armed:
            out = self._hard(hidden_states, *args, **kwargs)
            if ctl.reusing:
                l = self.index
                ctl.cur[l] = out[:, -1]  # this thought's state after layer l, for the next thought (never written in place)
                if l == ctl.L - 1 and ctl.carry is not None and ctl.max_start == ctl.L:
                    # rows that reused every layer leave with q_{L-1}(h_{L-1,t-1}) (min/max known: no sync here)
                    out = out.clone()
                    if ctl.min_start == ctl.L:
                        out[:, -1] = ctl.carry.to(out.dtype)
                    else:
                        top = (ctl.start == ctl.L).nonzero(as_tuple=True)[0]
                        out[top, -1] = ctl.carry[top].to(out.dtype)
            return out
        return self.layer(hidden_states, *args, **kwargs)

    @staticmethod
    def _out(x):
        return x[0] if isinstance(x, tuple) else x

    def _soft(self, h: Tensor, *args, **kwargs):
        """The training mixture at layer l. Depth: D = w·g_l(h) + (1 - w)·f_l(h), w = R_l(h). Step ("reuse", a
        thought with a previous one): h_{l,t} = p_l·h_{l,t-1} + (1 - p_l)·D with p_l = S_0···S_l, and the state
        passed on to layer l + 1 adds (p_l - p_{l+1})·(q_l(h_{l,t-1}) - h_{l,t-1}): with the step routers at 0/1
        that is the copy below the first computed layer k, q_{k-1}(h_{k-1,t-1}) entering it, and layer l's keys
        and values computed from the reused state entering it, as inference projects them."""
        ctl, l = self.ctl, self.index
        f = self._out(self.layer(h, *args, **kwargs))
        w = ctl.router_weight(l, h)  # (B, T)
        mixed = w.unsqueeze(-1) * ctl.adapters[l](h) + (1 - w.unsqueeze(-1)) * f
        ctl.weights.append(w)
        if ctl.p is None:
            ctl.states.append(mixed)
            ctl.cur[l] = mixed[:, -1]
            return mixed
        if mixed.shape[1] != 1:
            raise ValueError("the step shortcut routes one latent position per pass")
        prev = ctl.prev[l][:, None, :].to(mixed.dtype)
        p = ctl.p[:, l, None, None].to(mixed.dtype)
        out = p * prev + (1 - p) * mixed
        ctl.states.append(out)
        ctl.cur[l] = out[:, -1]
        p_next = ctl.p[:, l + 1, None, None].to(mixed.dtype) if l + 1 < ctl.L else torch.zeros_like(p)
        return out + (p - p_next) * (ctl.junction(l, prev) - prev)

    def _hard(self, h: Tensor, *args, **kwargs):
        ctl, l = self.ctl, self.index
        if ctl.all_exited:  # the whole batch left the layer stack earlier in this step
            return self._exited_batch(h, args, kwargs)
        if ctl.carry is not None and ctl.reusing and ctl.fast_paths and h.shape[1] == 1:
            if l < ctl.min_start:  # every row reuses this layer from the previous thought
                return self._reused_batch(h, args, kwargs)
            if l == ctl.min_start == ctl.max_start:  # every row computes from here on, from the carried state
                h = ctl.carry[:, None, :].to(h.dtype)
                ctl.uniform = True
        if ctl.uniform and not ctl.ask_depth:  # nothing to route in this layer for any row
            ctl._whole["layer_forwards"] += 1
            return self._out(self.layer(h, *args, **kwargs))
        if ctl.uniform:
            # fast path while every row is still running: one router call, then the layer or a whole-batch exit
            x = h[:, -1]
            ctl._whole["router_calls"] += 1
            if x.shape[0] == 1 and self._router is not None and ctl.force_weight is None:
                # batch 1: the router's logit as a Python float (the same comparison as _fires)
                fire = None
                n_fire = int(float(self._router_logit(x)) > ctl._threshold)
            else:
                fire = self._fires(x)
                n_fire = int(fire.sum()) if fire.shape[0] > 1 else int(fire[0])  # one host sync
            if n_fire == 0:
                ctl._whole["layer_forwards"] += 1
                return self._out(self.layer(h, *args, **kwargs))
            if n_fire == x.shape[0]:
                ctl.exit_layer.fill_(l)
                if ctl.depth_shortcut:
                    ctl.active.fill_(False)
                    ctl.all_exited = True
                    out = self._exited_batch(h, args, kwargs)
                else:  # step shortcut alone: the layer still runs, the next step starts after it
                    ctl._whole["layer_forwards"] += 1
                    ctl.uniform = False
                    out = self._out(self.layer(h, *args, **kwargs))
                if ctl.step_shortcut and ctl.step_rule == "exit_carry":
                    ctl.carry_next = out[:, -1].detach().clone()
                return out
            ctl.uniform = False  # rows part ways: the general path below from here on
            return self._general(h, args, kwargs, fired=fire.nonzero(as_tuple=True)[0])
        return self._general(h, args, kwargs)

    def _reused_batch(self, h: Tensor, args, kwargs) -> Tensor:
        """Every row reuses this layer (step rule "reuse"): its keys/values from the reused state entering it
        (by the KV rule), and the previous thought's state after it; nothing else is computed."""
        ctl, l = self.ctl, self.index
        cache = _find_cache(args, kwargs)
        if cache is not None:
            if ctl.kv_rule == "project" and l >= 1 and ctl.step_adapters is None and self._heads is not None:
                # the same entry as the previous position's: that one was computed from the same state entering
                # this layer (h_{l-1,t-1}, whatever path it took), and a GPT-2 layer adds no position to its keys
                keys, values = layer_kv(cache, self._layer_idx())
                k, v = keys[:, :, -1:], values[:, :, -1:]
            elif ctl.kv_rule == "project":
                k, v = self._project_kv(h, None, h.shape[0], args, kwargs)
                ctl._whole["kv_projections"] += 1
            else:
                k, v = previous_kv(cache, self._layer_idx())
            cache.update(k.to(h.dtype), v.to(h.dtype), self._layer_idx())
        return ctl.prev[l][:, None, :].to(h.dtype)

    def _exited_batch(self, h: Tensor, args, kwargs) -> Tensor:
        """Every row has exited: this layer's keys/values by the KV rule, then the adapter."""
        ctl, l = self.ctl, self.index
        cache = _find_cache(args, kwargs)
        if cache is not None and ctl.kv_rule == "project" and self._fused is not None and h.shape[1] == 1:
            k, v, out = self._exit_fused(h)  # keys/values and adapter in one product
            cache.update(k, v, self._idx)
            ctl._whole["kv_projections"] += 1
            ctl._whole["adapter_calls"] += 1
            return out
        if cache is not None:
            if ctl.kv_rule == "project":
                k, v = self._project_kv(h, None, h.shape[0], args, kwargs)
                ctl._whole["kv_projections"] += 1
            else:
                k, v = previous_kv(cache, self._layer_idx())
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
        carrying = ctl.step_shortcut and ctl.step_rule == "exit_carry"
        if carrying and ctl.carry_next is None:
            ctl.carry_next = h[:, -1].detach().clone()  # rows that exit in this step overwrite theirs
        if ctl.carry is not None:  # step shortcut: rows starting at this layer take the carried state
            starting = (ctl.start == l) & (ctl.start > 0)
            if bool(starting.any()):
                idx = starting.nonzero(as_tuple=True)[0]
                h[idx, -1] = ctl.carry[idx].to(h.dtype)
        running = ctl.active & (ctl.start <= l)
        fire = fired
        if fire is None and ctl.ask_depth:
            # exit_carry: a row that starts here by the step shortcut runs this layer (leaving at once would compute
            # nothing); reuse: the first computed layer is routed like any other
            cand = running & ~((ctl.start == l) & (ctl.start > 0)) if carrying else running
            cand = cand.nonzero(as_tuple=True)[0]
            if cand.numel():
                whole = cand.numel() == B
                fires = self._fires(h[:, -1] if whole else h[cand, -1])
                _bump(ctl.router_calls, None if whole else cand)
                fire = cand[fires]
        if fire is not None and fire.numel():
            fire = fire[ctl.exit_layer[fire] == ctl.L]
            ctl.exit_layer[fire] = l
            if ctl.depth_shortcut:
                ctl.active[fire] = False
                running[fire] = False
        rows = running.nonzero(as_tuple=True)[0]
        n_run = rows.numel()
        _bump(ctl.layer_forwards, None if n_run == B else rows)
        carry_fired = carrying and fire is not None and bool(fire.numel())
        if n_run == B:  # nobody skips this layer
            out = self._out(self.layer(h, *args, **kwargs))
            if carry_fired:  # step shortcut alone: the next step starts after this layer, from its output
                ctl.carry_next[fire] = out[fire, -1].detach()
            return out
        cache = _find_cache(args, kwargs)
        h, fill_k, fill_v = self._skipping_rows(h, cache, args, kwargs)
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

    def _skipping_rows(self, h: Tensor, cache: Any, args, kwargs) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Rows that do not run this layer (:meth:`_exited_rows`); with the step rule "reuse", the rows that reuse
        it from the previous thought then get its keys/values projected from the reused state entering it (what
        the layer computes from that state in training; ``kv_rule: copy`` keeps the previous position's entry)
        and leave it with the previous thought's state after it, h_{l,t-1}."""
        h, fill_k, fill_v = self._exited_rows(h, cache, args, kwargs)
        ctl = self.ctl
        if not (ctl.reusing and ctl.carry is not None):
            return h, fill_k, fill_v
        reused = (ctl.active & (ctl.start > self.index)).nonzero(as_tuple=True)[0]
        if not reused.numel():
            return h, fill_k, fill_v
        if cache is not None and ctl.kv_rule == "project" and self.index >= 1 and ctl.step_adapters is None \
                and self._heads is not None:  # the previous position's entry is the same (see _reused_batch)
            keys, values = layer_kv(cache, self._layer_idx())
            fill_k[reused], fill_v[reused] = keys[reused, :, -1:], values[reused, :, -1:]
        elif cache is not None and ctl.kv_rule == "project":
            k, v = self._project_kv(h[reused], reused, h.shape[0], args, kwargs)
            fill_k[reused], fill_v[reused] = k.to(fill_k.dtype), v.to(fill_v.dtype)
            _bump(ctl.kv_projections, reused)
        h[reused, -1] = ctl.prev[self.index][reused].to(h.dtype)
        return h, fill_k, fill_v

    def _exited_rows(self, h: Tensor, cache: Any, args, kwargs) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Rows that do not run this layer: the exited ones continue along the adapter branch (the soft
        mixture at w = 1, as trained) and, by the KV rule (open choice 3), get this layer's keys/values
        projected from the state entering it; rows skipping it by the step shortcut keep a copy of their
        previous entry. Returns the new states and the keys/values of every row for this layer (the
        running rows' entries are overwritten by the layer itself)."""
        ctl, B = self.ctl, h.shape[0]
        exited = (~ctl.active).nonzero(as_tuple=True)[0]
        n_exit = exited.numel()
        some = None if n_exit == B else exited
        fill_k = fill_v = None
        if cache is not None and n_exit and ctl.kv_rule == "project" and self._fused is not None and h.shape[1] == 1:
            k, v, adapted = self._exit_fused(h if n_exit == B else h[exited])  # one product (see bind)
            if n_exit == B:
                fill_k, fill_v, h = k, v, adapted
            else:
                if ctl.carry is not None:  # rows skipping this layer by the step shortcut keep the copy
                    fill_k, fill_v = previous_kv(cache, self._layer_idx())
                else:  # every row either runs this layer (its own entry) or has exited (projected)
                    fill_k, fill_v = k.new_empty((B, *k.shape[1:])), v.new_empty((B, *v.shape[1:]))
                fill_k[exited], fill_v[exited] = k, v
                h[exited] = adapted
            _bump(ctl.kv_projections, some)
            _bump(ctl.adapter_calls, some)
            return h, fill_k, fill_v
        if cache is not None:
            if ctl.kv_rule == "project" and n_exit == B:  # the whole batch has exited
                fill_k, fill_v = self._project_kv(h, None, B, args, kwargs)
            else:
                fill_k, fill_v = previous_kv(cache, self._layer_idx())
                if ctl.kv_rule == "project" and n_exit:  # step-shortcut skips keep the copy
                    k, v = self._project_kv(h[exited], exited, B, args, kwargs)
                    fill_k[exited], fill_v[exited] = k.to(fill_k.dtype), v.to(fill_v.dtype)
            if ctl.kv_rule == "project" and n_exit:
                _bump(ctl.kv_projections, some)
        if n_exit == B:
            h[:, -1] = ctl.adapters[self.index](h[:, -1])
        elif n_exit:
            h[exited, -1] = ctl.adapters[self.index](h[exited, -1])
        if n_exit:
            _bump(ctl.adapter_calls, some)
        return h, fill_k, fill_v

    def _project_kv(self, h: Tensor, rows: Tensor | None, B: int, args, kwargs) -> tuple[Tensor, Tensor]:
        """This layer's keys/values for states ``h`` of ``rows`` (None: all): only the pre-attention
        norm and the key/value projections run. GPT-2 blocks are projected directly; any other
        architecture through :class:`_CaptureCache` (a test checks both give the same entries)."""
        if self.ctl.direct_kv and self._heads is not None:
            return gpt2_kv(self.layer, h, self._heads)

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


def _gelu(x: Tensor) -> Tensor:
    """The exact GELU of ``nn.GELU`` for the few-element tensors of a routed latent step (routers,
    exit adapters). On a CPU, ``F.gelu`` of a contiguous float tensor goes through oneDNN, whose
    per-call set-up (about 7 µs) is nearly all of its cost at 32-64 elements; with oneDNN off for
    the call PyTorch's own kernel computes the same function (about 1 µs; equal up to float
    rounding, which the tests' comparisons with the module path allow). The switch is the public
    ``torch.backends.mkldnn.enabled`` flag, restored at once."""
    mk = torch.backends.mkldnn
    if x.device.type != "cpu" or not mk.enabled:
        return F.gelu(x)
    mk.enabled = False
    try:
        return F.gelu(x)
    finally:
        mk.enabled = True


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


def is_gpt2_block(layer: nn.Module) -> bool:
    return _gpt2_heads(layer) is not None


def gpt2_kv(layer: nn.Module, h: Tensor, heads: int | None = None) -> tuple[Tensor, Tensor]:
    """A GPT-2 block's keys/values for states ``h`` (B, T, d): ln_1, then c_attn's key/value parts."""
    attn, heads = layer.attn, heads or _gpt2_heads(layer)
    w, b = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: (d, 3d) = [query | key | value]; the query part is not needed
    d = w.shape[0]
    ln = layer.ln_1
    x = F.layer_norm(h, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
    kv = torch.addmm(b[d:], x.reshape(-1, d), w[:, d:]).view(*h.shape[:-1], 2 * d)
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
