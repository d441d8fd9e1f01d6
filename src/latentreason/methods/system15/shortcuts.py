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
  at that layer (nothing computed). Layers skipped by the exit_carry step shortcut get the copy.
  Step shortcut (``step_rule``): "reuse" (trained; Eq. 4 as a prefix) — before latent step t the step router
  (:class:`StepRouter`, on the previous thought's last-layer state) fires for the bottom k layers; the step
  reuses the previous thought's states after them (h_{l,t} = h_{l,t-1}, those layers are not run, their
  keys/values those of the reused state entering them) and computes layers k..L-1 from h_{k-1,t-1} (through a
  step adapter when configured); training mixes the same way with the router's hard decisions.
  "exit_carry" (SPEC §3.5's inference algorithm, not trained): a latent step that exited at layer l < L - 1
  hands the state it had after layer l to the next latent step, which starts at layer l + 1 and always runs
  that layer (its router is not asked: leaving at once would repeat the previous step's adapter branch).
  When every row of the batch runs a layer, or every row has exited, whole-batch paths skip the
  per-row bookkeeping (``fast_paths``; tests check they change nothing).

The wrappers are swapped into the model's layer list only inside :meth:`ShortcutController.installed`
(training: for the whole block; inference: for the pass of each latent step only), so the backbone's
own weights, state dict and ``save_pretrained`` output never change. At inference each wrapper reads
its router's tensors and (GPT-2) its fused exit's once (:meth:`ShortcutLayer.bind`) and runs them as
plain tensor operations: at batch 1 on a CPU a latent step costs per operation, and
``docs/system15.md`` ("Speed") measures what that buys.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from latentreason.methods.system15.shortcut_layer import ShortcutLayer, _bump, _gelu
from latentreason.models.backbone import find_final_norm


class Router(nn.Module):
    def __init__(self, d_model: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(1, d_model // 4)
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.net(h)).squeeze(-1)


class StepRouter(nn.Module):
    """The step shortcut's router (step rule "reuse"): Linear(d, d/4) → GELU → Linear(d/4, L) → sigmoid on the
    previous thought's state after the last layer, one output per layer: S_l = "reuse layer l from the previous
    thought". It reads the state that encodes where the chain of thoughts stands (the next thought's input is
    its projection); the per-layer routers of the depth shortcut, given the previous thought's state at their own
    layer, could not tell the thought past the last step from the others (docs/system15.md)."""

    def __init__(self, d_model: int, num_layers: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(1, d_model // 4)
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, num_layers))

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.net(h))


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


class ShortcutController:
    """State of routed forward passes; owned by the System-1.5 method."""

    def __init__(self, model: nn.Module, routers: nn.ModuleList, adapters: nn.ModuleList,
                 step_router: nn.Module | None = None, step_adapters: nn.ModuleList | None = None):
        self.model = model
        self.layers = find_decoder_layers(model)
        self.routers, self.adapters = routers, adapters
        self.step_router, self.step_adapters = step_router, step_adapters  # step_rule "reuse"
        self.L = len(self.layers)
        self.mode = "off"  # off | soft | hard
        self.armed = False  # route the next forward pass (a latent step)
        self.lambda_depth = 0.5
        self.depth_shortcut = True
        self.step_shortcut = True
        self.step_rule = "reuse"  # reuse (trained, Eq. 4 as a prefix) | exit_carry (SPEC's inference algorithm)
        self.step_threshold = 0.5
        self.force_step_weight: float | None = None  # tests: a fixed step-router output
        self.kv_rule = "project"  # project | copy (docs/system15.md, open choice 3)
        self.direct_kv = True  # GPT-2: project keys/values without calling the block (tests compare both)
        self.fast_paths = True  # whole-batch shortcuts of the routing bookkeeping (tests compare both)
        self.force_weight: float | None = None  # tests: a fixed router output
        self._wrappers: list[ShortcutLayer] = []
        self._final_norm: nn.Module | None = None
        self._hook: Any = None
        self._normed: Tensor | None = None
        self._threshold, self._threshold_of = 0.0, None
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
        # counts of whole-batch steps (the same for every row), added to the per-row tensors in counts()
        self._whole_total = dict.fromkeys(self.COUNTS, 0)
        self._start_zero = True
        self.step_exits: list[Tensor] = []
        self.step_reused: list[Tensor] = []  # hard mode, step_rule "reuse": per step, layers reused per row
        self.weights: list[Tensor] = []  # soft mode: router weights per layer of the current step
        self.states: list[Tensor] = []  # soft mode: mixed layer outputs of the current step
        # step_rule "reuse": the previous thought's state after each layer (B, d), this thought's as it is computed,
        # and in soft mode the prefix weights p_l of the current thought and the step routers' outputs per thought
        self.prev: list[Tensor] | None = None
        self.cur: list[Tensor | None] = [None] * self.L
        self.p: Tensor | None = None
        self.step_log: list[Tensor | None] = []
        self.p_log: list[Tensor | None] = []

    @contextmanager
    def installed(self, mode: str) -> Iterator["ShortcutController"]:
        """Make routed passes possible (``soft`` or ``hard``); a routed pass ends when the final norm has run.

        ``soft`` (training) swaps the wrappers into the layer list for the whole block. ``hard``
        (inference) swaps them in only for the pass of a latent step (:meth:`arm`) and back out when
        it ends, so the prompt and the answer tokens run the plain layers with no wrapper call."""
        self._originals = list(self.layers)
        self.mode = mode
        self.soft_log: list[tuple[list[Tensor], list[Tensor]]] = []
        if mode == "soft":  # per thought: the step router's outputs and the prefix weights p the mixture took
            self.prev, self.p, self.step_log, self.p_log = None, None, [], []
        if [w.layer for w in self._wrappers] != self._originals:  # built once, for these layers
            self._wrappers = [ShortcutLayer(layer, i, self) for i, layer in enumerate(self._originals)]
        if self._final_norm is None:
            self._final_norm = find_final_norm(self.model)
        self._normed = None
        if mode == "soft":
            self._swap(self._wrappers)
            self._hook = self._final_norm.register_forward_hook(self._on_final_norm)
        else:  # hard: the hook is on for the routed passes only (begin_step)
            for w in self._wrappers:
                w.bind()
        try:
            yield self
        finally:
            if self._hook is not None:
                self._hook.remove()
                self._hook = None
            self._swap(self._originals)
            self.mode = "off"
            self.armed = False

    def _swap(self, layers: list[nn.Module]) -> None:
        # the ModuleList's registry is written directly: ``layers[i] = m`` goes through
        # Module.__setattr__ (about 12 µs a layer), twice per latent step, which at batch 1 costs
        # as much as the wrappers it avoids on the other passes
        registry = self.layers._modules
        for key, layer in zip(list(registry), layers):
            registry[key] = layer

    @property
    def reusing(self) -> bool:
        """The trained step shortcut is on (step_rule "reuse")."""
        return self.step_shortcut and self.step_rule == "reuse" and self.step_router is not None

    @property
    def ask_depth(self) -> bool:
        """Whether a latent step consults the depth routers: for the depth shortcut, and for the exit_carry step
        rule, whose step shortcut is triggered by the depth routers' decisions."""
        return self.depth_shortcut or (self.step_shortcut and self.step_rule == "exit_carry")

    def step_weights(self, prev: list[Tensor]) -> Tensor:
        """(B, L): the step router's outputs S_l on the previous thought's state after the last layer."""
        if self.force_step_weight is not None:
            return torch.full((prev[0].shape[0], self.L), float(self.force_step_weight), dtype=prev[0].dtype,
                              device=prev[0].device)
        return self.step_router(prev[-1])

    def junction(self, l: int, prev: Tensor) -> Tensor:
        """The state a thought that reused layers 0..l computes on from: q_l(h_{l,t-1})."""
        return prev if self.step_adapters is None else self.step_adapters[l](prev)

    def arm(self) -> None:
        """Route the next forward pass (a latent step)."""
        if self.mode == "soft":
            self.weights, self.states = [], []
            self.cur = [None] * self.L
            if self.reusing and self.prev is not None:
                s = self.step_weights([x.detach() for x in self.prev])
                # the step router is a classifier trained by its targets alone (method.forward), and training takes
                # its decisions as inference does: p_l = 1 where S_0..S_l all fire (the bottom layers reused), else 0.
                # Its output as a soft weight with a gradient let the exit loss push every reuse back (reused inputs
                # move the computed layers off the full path), and the router never fired; as a soft weight without
                # one, the layers trained on 30 %-copied states of thoughts inference computes (docs/system15.md)
                self.p = (s.detach() > self.step_threshold).to(s.dtype).cumprod(1)
                self.step_log.append(s)
            else:
                self.p = None
                self.step_log.append(None)
            self.p_log.append(self.p)
            self.armed = True
        elif self.mode == "hard":
            self.begin_step()

    def last_hidden(self, output=None) -> Tensor:
        """The final-norm output of the last pass at its last position: taken by a hook on the final
        norm where the pass was routed (the recorder of HF hidden states does not see through the
        wrappers), else the model output's last hidden state (a pass that was not routed, e.g. the
        prompt at inference)."""
        normed, self._normed = self._normed, None
        if normed is None:  # the decoder stack's output (no LM head), else the whole model's hidden states
            normed = getattr(output, "last_hidden_state", None)
            return (normed if normed is not None else output.hidden_states[-1])[:, -1]
        return normed[:, -1]

    def _on_final_norm(self, module: nn.Module, inputs: Any, normed: Tensor) -> None:
        self._normed = normed
        if not self.armed:
            return
        if self.mode == "soft":
            self.soft_log.append((self.weights, self.states))
            self.prev = list(self.cur)
            self.armed = False
        else:
            self._hook.remove()
            self._hook = None
            self.end_step()

    COUNTS = ("layer_forwards", "router_calls", "adapter_calls", "kv_projections")

    def counts(self) -> dict[str, Tensor]:
        """Per row: decoder layers run, routers asked, adapters and key/value projections computed, over
        the routed latent steps since :meth:`reset`."""
        return {name: getattr(self, name) + self._whole_total[name] for name in self.COUNTS}

    @property
    def router_logit(self) -> float:
        """The router fires when R_l(h) = sigmoid(z) > λ_depth, i.e. when z > logit(λ_depth): inference
        compares the router's logit and skips the sigmoid."""
        lam = float(self.lambda_depth)
        if lam <= 0.0:
            return -math.inf
        if lam >= 1.0:
            return math.inf
        return math.log(lam) - math.log1p(-lam)

    def router_weight(self, l: int, h: Tensor) -> Tensor:
        if self.force_weight is not None:
            return torch.full(h.shape[:-1], float(self.force_weight), dtype=h.dtype, device=h.device)
        return self.routers[l](h)

    # ---------------------------------------------------------------- hard mode bookkeeping
    def begin_step(self) -> None:
        """Before a routed latent step (hard mode)."""
        self.armed = True
        self._swap(self._wrappers)
        if self._hook is None:
            self._hook = self._final_norm.register_forward_hook(self._on_final_norm)
        if self.active is None or self.active.shape[0] != self.batch:
            self.active = self.start.new_ones(self.batch, dtype=torch.bool)
        else:
            self.active.fill_(True)
        self.exit_layer = torch.full_like(self.start, self.L)
        w = self._wrappers[0]._router
        key = (self.lambda_depth, w[0].dtype if w is not None else self.routers[0].net[2].weight.dtype)
        if self._threshold_of != key:
            # the router logit's threshold, rounded to the routers' dtype: a tensor compared with it and
            # the batch-1 path's Python float compare alike
            self._threshold = torch.tensor(self.router_logit, dtype=key[1]).item()
            self._threshold_of = key
        self._whole = self._whole_total  # whole-batch counts go straight into the running totals
        if self.reusing:
            self._plan_reuse()
        # whole-batch fast paths: every row still runs / every row has exited, plus counts for all rows
        self.uniform = self.carry is None and self.fast_paths
        self.carry_next: Tensor | None = None  # step shortcut: per row, the state the next step starts from
        self.all_exited = False

    def step_fires(self, last: Tensor) -> Tensor:
        """(B, L) bool: where the step router fires on the previous thought's last-layer states ``last``, S_l >
        step_threshold — its logit compared with logit(step_threshold), the module's tensors used directly (one
        call per latent step; at batch 1 a module call costs as much as the arithmetic)."""
        if self.force_step_weight is not None:
            return torch.full((last.shape[0], self.L), float(self.force_step_weight) > self.step_threshold,
                              device=last.device)
        thr = float(self.step_threshold)
        if thr <= 0.0 or thr >= 1.0:
            return self.step_router(last) > thr
        first, last_lin = self.step_router.net[0], self.step_router.net[2]
        z = F.linear(_gelu(F.linear(last, first.weight, first.bias)), last_lin.weight, last_lin.bias)
        return z > math.log(thr) - math.log1p(-thr)

    def _plan_reuse(self) -> None:
        """Step rule "reuse", before a latent step: per row, how many bottom layers k it reuses from the previous
        thought (the layers whose step-router output fires, from layer 0 up to the first that does not), and the
        state it computes on from, q_{k-1}(h_{k-1,t-1}) (entering layer k; for k = L the thought's final state).
        Whole-batch cases (nobody reuses; every row reuses the same k) skip the per-row bookkeeping."""
        self.carry = None
        self.min_start = self.max_start = 0
        if self.prev is None:
            self.start = torch.zeros(self.batch, dtype=torch.long, device=self.start.device)
            self.step_reused.append(self.start)
            return
        fires = self.step_fires(self.prev[-1])
        self._whole["router_calls"] += 1  # one step-router call per row
        k = fires.long().cumprod(1).sum(1)  # the bottom layers that fire without a gap
        self.start = k
        self.step_reused.append(k)
        lo, hi = (int(k), int(k)) if k.shape[0] == 1 else torch.stack([k.min(), k.max()]).tolist()
        if hi == 0:
            return
        self.min_start, self.max_start = lo, hi
        if lo == hi:  # every row reuses the same layers
            carry = self.junction(hi - 1, self.prev[hi - 1])
            if self.step_adapters is not None:
                self._whole["adapter_calls"] += 1
        else:
            carry = self.prev[0].new_zeros(self.prev[0].shape)
            for kk in range(1, hi + 1):
                rows = (k == kk).nonzero(as_tuple=True)[0]
                if rows.numel():
                    carry[rows] = self.junction(kk - 1, self.prev[kk - 1][rows])
                    if self.step_adapters is not None:
                        _bump(self.adapter_calls, rows)
        self.carry = carry
        self._start_zero = False

    def end_step(self) -> None:
        """After a routed latent step: prepare the step shortcut for the next one.

        A row that exited at layer l < L - 1 hands the state it had after layer l (its exit adapter's
        output, or layer l's own output when the depth shortcut is off) to the next latent step, which
        starts at layer l + 1 for it: layers 0..l are not run, and the carried state moves one layer on
        at least, so consecutive thoughts never repeat the same computation. An exit at the last layer
        (nothing left to run) restarts the next step at layer 0.
        """
        self.armed = False
        self._swap(self._originals)
        self.step_exits.append(self.exit_layer)  # a new tensor every step (begin_step)
        if self.reusing:  # the states of this thought are the next one's to reuse; its plan is made in begin_step
            self.prev, self.cur = list(self.cur), [None] * self.L
            self.start, self.carry, self.carry_next, self._start_zero = torch.zeros_like(self.start), None, None, True
            return
        reuse = self.exit_layer < self.L - 1 if self.step_shortcut and self.carry_next is not None else None
        if reuse is not None and bool(reuse.any()):
            self.start = torch.where(reuse, self.exit_layer + 1, torch.zeros_like(self.start))
            self.carry = self.carry_next
            self._start_zero = False
        else:
            if not self._start_zero:
                self.start = torch.zeros_like(self.start)
                self._start_zero = True
            self.carry = None
        self.carry_next = None
