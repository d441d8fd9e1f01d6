"""System-1.5 Reasoning (Wang et al. 2025; SPEC §3.5) — experimental: no official code exists.

A latent reasoner (CODI-style continuous thoughts) that spends compute unevenly:

* **Stage 1 — language-to-latent alignment** (``stage=1``): a CoT teacher and a latent student of
  the same backbone; student loss = answer NLL + α·distance between every thought's states and the
  teacher's states at the aligned CoT positions (the position predicting the matching step's
  result). This is CODI's machinery with step alignment (``methods/codi.py``): System-1.5's stage
  1 is the objective our ``codi`` default-task preset already trains, so the demo reuses that run
  as stage 1 instead of training the same thing twice (``docs/system15.md``).
* **Stage 2 — shortcut learning** (``stage=2``): the stage-1 model (backbone + projection) is frozen;
  a router and an adapter per layer and a step router (``methods/system15/shortcuts.py``) are the only
  trainable parameters. Soft depth mixture in training, hard exit at inference (λ_depth); step shortcut
  (Eq. 4 as a prefix: a thought reuses the previous thought's states after its bottom k layers, k from the
  step router, the same hard decision in training and at inference). Loss:
  L_2 = NLL(answer) + β·L_exit + ρ·BCE(router, learnt target) + δ·L_adapter + ρ_s·BCE(step router, criticality),
  with L_exit = Σ_t Σ_l e_{l,t}(c_t)·(1 - S_0···S_l)·MSE(h^ϕ_{l,t}, sg(h^{full}_{l,t})) (S: the step router).

Every open choice of SPEC §3.5 is a config field below and is documented in ``docs/system15.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentreason.data.criticality import step_criticality
from latentreason.data.example import Example
from latentreason.decoding.generate import Generation
from latentreason.decoding.latent import latent_forward
from latentreason.errors import ConfigError
from latentreason.methods.codi import CODI, CODIConfig
from latentreason.methods.objective import shifted_ce
from latentreason.methods.system15.shortcuts import Adapter, Router, ShortcutController, StepRouter
from latentreason.models.backbone import find_final_norm


@dataclass
class System15Config(CODIConfig):
    #: 1 = language-to-latent alignment (full path), 2 = shortcut learning (routers + adapters only)
    stage: int = 2
    #: open choice 1/2: router hidden width (default d/4) and adapter bottleneck width
    router_hidden: int | None = None
    adapter_width: int = 64
    #: open choice 5: inference thresholds; λ_step = number of latent steps (default: n_latent)
    lambda_depth: float = 0.5
    lambda_step: int | None = None
    depth_shortcut: bool = True
    step_shortcut: bool = True
    #: open choice 4, the step shortcut's rule: "reuse" (trained; Eq. 4 as a prefix) — thought t reuses the
    #: previous thought's states after layers 0..k-1 (h_{l,t} = h_{l,t-1}) and computes layers k..L-1 from a step
    #: adapter's map of the reused state, q_{k-1}(h_{k-1,t-1}); k = the bottom layers whose step-router output S_l
    #: fires (one router on the previous thought's state after the last layer, an output per layer; k = L: the
    #: whole thought is the previous one's, through q).
    #: Training mixes h_{l,t} = p_l·h_{l,t-1} + (1 - p_l)·(depth mixture) with p_l = S_0···S_l. "exit_carry"
    #: (SPEC §3.5's inference algorithm, not trained): a thought that exited at layer l hands its post-exit state
    #: to the next one, which starts at layer l + 1
    step_rule: str = "reuse"
    #: the step router fires where S_l > step_threshold, in training (the reuse pattern the layers learn with) as at
    #: inference. High by default: reusing a critical thought costs the answer, missing a reusable one a few
    #: layers, and the router cannot tell every non-critical thought from the previous one's state (identity
    #: steps: it learns their base rate, ~0.3); at 0.5 its misfires on critical thoughts cost the step shortcut
    #: alone 39 points, at 0.9 3 points (docs/system15.md)
    step_threshold: float = 0.9
    #: a step adapter q_l at the first computed layer (trained by the answer and exit losses); off: q = identity,
    #: Eq. 4 exactly (the reused state enters the first computed layer as it is). Off in the demo: trained
    #: adapters fitted the depth-mixed training path and cost the step shortcut alone 13 points (docs/system15.md)
    step_adapter: bool = False
    #: weight of the step router's BCE towards its targets (open choice 8's labels: reuse every layer of a
    #: non-critical thought, none of a critical one); the router learns from this term only
    step_router_bce: float = 5.0
    #: open choice 7: weights of the exit loss and of the direct router targets
    beta_exit: float = 1.0
    router_bce: float = 1.0
    #: where the routers' targets come from: "learned" — from the model: a router is told to fire at the
    #: first layer from which the adapter branch reproduces the full path's final state within
    #: ``exit_tolerance`` (relative squared error, weighted by the exit loss's depth weights e_l(c), so a
    #: non-critical thought may leave with a larger error); "hand" — the position rules below
    router_targets: str = "learned"
    #: relative squared error (after the final norm) under which exiting counts as reproducing the full path
    exit_tolerance: float = 0.05
    #: weight of the adapter self-distillation: the adapter branch from every layer l (adapters l..L-1 on the
    #: full path's state entering l) is pulled to the full path's final state (weighted by e_l(c)); this is what
    #: teaches the adapters to stand in for the layers they skip
    adapter_distill: float = 1.0
    #: "hand" targets: layer (0-based) from which a non-critical thought's router is trained to exit
    noncritical_exit_layer: int = 0
    #: "hand" targets: how many final layers a critical thought's router is trained to skip, at most L - 1 (a
    #: critical thought always runs its first layer); 0: critical thoughts run every layer (the paper's description)
    critical_skip_layers: int = 0
    #: open choice 3: keys/values of a (position, layer) that is not run after an exit: "project" (the
    #: layer's own key/value projection of the adapter-branch state, as the soft mixture computes them in
    #: training) or "copy" (the same row's previous position's entry; nothing computed)
    kv_rule: str = "project"
    #: open choice 8: how criticality is labelled: "step" — a thought aligned to a step inherits the step's label
    #: from the dependency graph of the steps (``data.criticality.step_criticality``: meta["critical"] of the
    #: procedural task, the equation DAG of GSM8k-Aug-style CoTs; a step is critical when the answer depends on
    #: its result); thoughts beyond the last step only carry the result: non-critical
    criticality: str = "step"

    def validate(self) -> None:
        super().validate()
        if self.stage not in (1, 2):
            raise ConfigError(f"method_args.stage must be 1 or 2, got {self.stage}")
        if not 0.0 <= self.lambda_depth <= 1.0:
            raise ConfigError(f"method_args.lambda_depth must be in [0, 1], got {self.lambda_depth}")
        if self.lambda_step is not None and self.lambda_step < 0:
            raise ConfigError(f"method_args.lambda_step must be >= 0, got {self.lambda_step}")
        if self.adapter_width < 1:
            raise ConfigError(f"method_args.adapter_width must be >= 1, got {self.adapter_width}")
        if self.kv_rule not in ("project", "copy"):
            raise ConfigError(f"method_args.kv_rule must be 'project' or 'copy', got {self.kv_rule!r}")
        if self.router_targets not in ("learned", "hand"):
            raise ConfigError(f"method_args.router_targets must be 'learned' or 'hand', got {self.router_targets!r}")
        if self.exit_tolerance < 0 or self.adapter_distill < 0:
            raise ConfigError("method_args.exit_tolerance and method_args.adapter_distill must be >= 0")
        if self.critical_skip_layers < 0:
            raise ConfigError(f"method_args.critical_skip_layers must be >= 0, got {self.critical_skip_layers}")
        if self.step_rule not in ("reuse", "exit_carry"):
            raise ConfigError(f"method_args.step_rule must be 'reuse' or 'exit_carry', got {self.step_rule!r}")
        if not 0.0 <= self.step_threshold <= 1.0:
            raise ConfigError(f"method_args.step_threshold must be in [0, 1], got {self.step_threshold}")
        if self.step_router_bce < 0:
            raise ConfigError(f"method_args.step_router_bce must be >= 0, got {self.step_router_bce}")
        if self.criticality not in ("step",):
            raise ConfigError(f"method_args.criticality must be 'step', got {self.criticality!r}")


STAGE1 = dict(n_latent=5, projection=True, teacher_drop_last_step=False, align_steps=True, align_offset=1,
              align_skip_embedding=True, distill_skip_embedding=True, step_ce_weight=1.0, align_first_layer=2)


class System15(CODI):
    name = "system15"
    Config = System15Config
    summary = "System-1.5 (experimental): latent reasoning with depth and step shortcuts (routers + adapters per layer)"
    presets = {
        "stage1": {**STAGE1, "stage": 1},
        # the demo's setting (docs/system15.md): routers learn where the adapter branch reproduces the full path
        "default_task": {**STAGE1, "stage": 2, "lambda_depth": 0.5, "router_bce": 5.0, "router_targets": "learned",
                         "exit_tolerance": 0.2, "step_shortcut": True, "step_rule": "reuse"},
        # the same with the step shortcut off (depth only; the headline row before the step shortcut was trained)
        "default_task_depth_only": {**STAGE1, "stage": 2, "lambda_depth": 0.5, "router_bce": 5.0,
                                    "router_targets": "learned", "exit_tolerance": 0.2, "step_shortcut": False},
        # the first version's hand schedule (critical thoughts leave after layer 1, non-critical before it)
        "hand_schedule": {**STAGE1, "stage": 2, "lambda_depth": 0.5, "router_bce": 5.0, "router_targets": "hand",
                          "critical_skip_layers": 3, "step_shortcut": False},
        "paper": {**STAGE1, "stage": 2, "lambda_step": 2},
    }

    def __init__(self, backbone, config: System15Config | None = None):
        super().__init__(backbone, config)
        d, L = backbone.hidden_size, backbone.num_layers
        dtype = self.model.get_input_embeddings().weight.dtype
        self.routers = nn.ModuleList([Router(d, self.config.router_hidden) for _ in range(L)]).to(dtype)
        self.adapters = nn.ModuleList([Adapter(d, self.config.adapter_width) for _ in range(L)]).to(dtype)
        if self.config.step_rule == "reuse":  # the trained step shortcut's routers S_l and step adapters q_l
            self.step_router = StepRouter(d, L, self.config.router_hidden).to(dtype)
            if self.config.step_adapter:
                self.step_adapters = nn.ModuleList([Adapter(d, self.config.adapter_width) for _ in range(L)]).to(dtype)
        self.ctl = ShortcutController(self.model, self.routers, self.adapters, getattr(self, "step_router", None),
                                      getattr(self, "step_adapters", None))
        self._configure_controller()
        self._freeze()

    def _configure_controller(self) -> None:
        """The controller routes by the config's current switches (tests and the ablation change them)."""
        cfg, ctl = self.config, self.ctl
        ctl.depth_shortcut, ctl.step_shortcut, ctl.kv_rule = cfg.depth_shortcut, cfg.step_shortcut, cfg.kv_rule
        ctl.step_rule, ctl.step_threshold = cfg.step_rule, cfg.step_threshold

    def _freeze(self) -> None:
        stage2 = self.config.stage == 2
        for p in self.model.parameters():
            p.requires_grad_(not stage2)
        if self.config.projection:
            for p in self.projection.parameters():
                p.requires_grad_(not stage2)
        for p in self.shortcut_parameters():
            p.requires_grad_(stage2)

    def shortcut_parameters(self) -> list[nn.Parameter]:
        """What stage 2 trains: the routers and adapters of both shortcuts."""
        mods = [self.routers, self.adapters] + [getattr(self, n) for n in ("step_router", "step_adapters") if hasattr(self, n)]
        return [p for m in mods for p in m.parameters()]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.stage == 2:  # the frozen stage-1 model never uses dropout
            self.model.eval()
        return self

    # ------------------------------------------------------------------ data
    def thought_criticality(self, ex: Example, n: int | None = None) -> list[bool]:
        """Per thought 1..n: the criticality of the step it is aligned with (thought j <-> step j - offset);
        thoughts past the last step only carry the result and are non-critical."""
        crit = step_criticality(ex)
        n, off = self.config.n_latent if n is None else n, self.config.align_offset
        return [bool(crit[j - off]) if 0 <= j - off < len(crit) else False for j in range(1, n + 1)]

    def features(self, t) -> dict[str, Any]:
        f = super().features(t)
        f["critical"] = self.thought_criticality(t.example)
        return f

    def exit_histogram(self, examples: list[Example], exit_layers: list[list[int]],
                       reused_layers: list[list[int]] | None = None) -> dict[str, Any]:
        """Where thoughts left the layer stack, for critical and non-critical thoughts: ``counts[kind][l]`` =
        thoughts that computed at least one layer and exited before layer l (l = L: ran to the end);
        ``reused[kind]`` = thoughts that reused every layer from the previous one (step shortcut: nothing
        computed). ``{kind}_mean_exit_layer`` is over the thoughts that computed; ``{kind}_mean_layers_run``
        over all of them (exit layer minus the layers reused; 0 for a reused thought)."""
        L = len(self.routers)
        counts = {"critical": [0] * (L + 1), "noncritical": [0] * (L + 1)}
        reused = {"critical": 0, "noncritical": 0}
        run = {"critical": 0, "noncritical": 0}
        for i, (ex, exits) in enumerate(zip(examples, exit_layers)):
            ks = reused_layers[i] if reused_layers is not None else [0] * len(exits)
            for c, e, k in zip(self.thought_criticality(ex, len(exits)), exits, ks):
                kind = "critical" if c else "noncritical"
                if k >= L:
                    reused[kind] += 1
                    continue
                counts[kind][int(e)] += 1
                run[kind] += max(0, int(e) - int(k))
        out: dict[str, Any] = {"num_layers": L, "counts": counts, "reused": reused}
        for kind, row in counts.items():
            total = sum(row)
            out[f"{kind}_thoughts"] = total + reused[kind]
            out[f"{kind}_mean_exit_layer"] = sum(l * k for l, k in enumerate(row)) / total if total else None
            out[f"{kind}_mean_layers_run"] = run[kind] / out[f"{kind}_thoughts"] if out[f"{kind}_thoughts"] else None
        return out

    def collate(self, feats: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(feats)
        batch["critical"] = torch.tensor([f["critical"] for f in feats], dtype=torch.bool)
        return batch

    # ------------------------------------------------------------------ loss
    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        if self.config.stage == 1:
            return super().forward(batch)
        cfg = self.config
        n = cfg.n_latent
        final_norm = find_final_norm(self.model)
        # the frozen full path: per-step, per-layer states of the stage-1 model; the last layer's output is
        # taken before the final norm (HF's hidden_states[-1] is after it), the space the shortcuts work in
        raw_last: list[Tensor] = []
        hook = final_norm.register_forward_hook(lambda mod, inp, out: raw_last.append(inp[0][:, -1]))
        try:
            with torch.no_grad():
                full = latent_forward(self.model, batch["prompt_ids"], batch["prompt_mask"], n, self.thought,
                                      batch["suffix_ids"], batch["suffix_mask"])
        finally:
            hook.remove()
        ctl = self.ctl
        self._configure_controller()

        def thought(h, step, rows=None):
            e = self.thought(h, step)
            ctl.arm()
            return e

        with ctl.installed("soft"):
            s = latent_forward(self.model, batch["prompt_ids"], batch["prompt_mask"], n, thought,
                               batch["suffix_ids"], batch["suffix_mask"], last_hidden=ctl.last_hidden)
        weights = [w for w, _ in ctl.soft_log]
        states = [st for _, st in ctl.soft_log]
        loss_nll = shifted_ce(s.suffix_logits, batch["suffix_labels"])
        crit = batch["critical"].to(s.suffix_logits.device).to(states[0][0].dtype)  # (B, n)
        L = len(self.routers)
        exit_terms, bce_terms, distill_terms = [], [], []
        for t in range(n):
            c = crit[:, t]
            full_in = [full.latent_hidden[t + 1][l] for l in range(L)] + [raw_last[t + 1]]  # entering layer l / output
            full_final = full.latent_hidden[t + 1][L]  # after the final norm
            err = self._exit_errors(full_in, full_final, final_norm)  # (B, L): relative error of exiting at l
            # a layer the thought reuses from the previous one is not computed: its state is not pulled to the full
            # path's (that would pull the previous thought's state). The weight is the router's probability of
            # computing the layer, 1 - S_0···S_l (no gradient: the step router learns from its targets alone), a
            # smooth stand-in for the hard decision the mixture takes (the three-seed run trained with it)
            computed = 1 - ctl.step_log[t].detach().cumprod(1).to(c.dtype) if ctl.step_log[t] is not None else None
            for l in range(L):
                mse = ((states[t][l][:, -1] - full_in[l + 1]) ** 2).mean(-1)
                if computed is not None:
                    mse = computed[:, l] * mse
                exit_terms.append((self.depth_weight(c, l) * mse).mean())
                distill_terms.append((self.depth_weight(c, l) * err[:, l]).mean())
            w = torch.stack([weights[t][l][:, -1] for l in range(L)], 1).clamp(1e-6, 1 - 1e-6)  # (B, L)
            tgt = self.router_targets_for(c, err.detach())
            bce_terms.append(F.binary_cross_entropy(w.float(), tgt.float()))
        loss_exit = torch.stack(exit_terms).mean()
        loss_bce = torch.stack(bce_terms).mean()
        loss_distill = torch.stack(distill_terms).mean()
        loss = loss_nll + cfg.beta_exit * loss_exit + cfg.router_bce * loss_bce + cfg.adapter_distill * loss_distill
        out = {"loss_nll": loss_nll.detach(), "loss_exit": loss_exit.detach(), "loss_router": loss_bce.detach(),
               "loss_adapter": loss_distill.detach()}
        # the step routers (thoughts 2..n: the first has no previous thought to reuse): towards their targets
        step_w = [(t, sw) for t, sw in enumerate(ctl.step_log) if sw is not None]
        if step_w:
            terms = []
            for t, sw in step_w:
                tgt = self.step_targets_for(crit[:, t]).unsqueeze(1).expand_as(sw)
                terms.append(F.binary_cross_entropy(sw.float().clamp(1e-6, 1 - 1e-6), tgt.float()))
            loss_step = torch.stack(terms).mean()
            loss = loss + cfg.step_router_bce * loss_step
            # layers the mixture reused per thought (the hard decisions), over thoughts 2..n
            reused = torch.stack([p.sum(1) for p in ctl.p_log if p is not None]).float().mean()
            out.update(loss_step_router=loss_step.detach(), reused_layers=reused)
        return {"loss": loss, **out}

    def step_targets_for(self, critical: Tensor) -> Tensor:
        """(B,) step-router targets of a thought (every layer the same): 1 = reuse the previous thought's states
        (a non-critical thought), 0 = compute (a critical one)."""
        return 1 - critical

    def depth_weight(self, critical: Tensor, layer: int) -> Tensor:
        """e_l(c) of the exit loss: 1 at every layer for a critical thought, (l + 1) / L for a non-critical one
        (its deviation from the full path matters less the earlier it leaves)."""
        depth = (layer + 1) / len(self.routers)
        return critical + (1 - critical) * depth

    def _exit_errors(self, full_in: list[Tensor], full_final: Tensor, final_norm) -> Tensor:
        """(B, L): for every layer l, the relative squared error (after the final norm) of leaving there —
        adapters l..L-1 applied to the full path's state entering layer l — against the full path."""
        errs = []
        scale = (full_final.float() ** 2).sum(-1).clamp(min=1e-6)
        for l in range(len(self.routers)):
            x = full_in[l].detach()
            for k in range(l, len(self.routers)):
                x = self.adapters[k](x)
            errs.append(((final_norm(x).float() - full_final.float()) ** 2).sum(-1) / scale)
        return torch.stack(errs, 1)

    def router_targets_for(self, critical: Tensor, err: Tensor) -> Tensor:
        """(B, L) router targets: 1 = leave at this layer (and at every later one), 0 = run it."""
        L = len(self.routers)
        if self.config.router_targets == "hand":
            cols = [critical * self.router_target(True, l) + (1 - critical) * self.router_target(False, l) for l in range(L)]
            return torch.stack(cols, 1)
        ok = torch.stack([self.depth_weight(critical, l) * err[:, l] <= self.config.exit_tolerance for l in range(L)], 1)
        return (ok.long().cummax(1).values > 0).to(err.dtype)  # the first acceptable layer and every one after it

    def router_target(self, critical: bool, layer: int) -> float:
        """The "hand" router target at ``layer`` (0-based): 1 = leave here, 0 = run the layer."""
        cfg, L = self.config, len(self.routers)
        if not critical:
            return float(layer >= cfg.noncritical_exit_layer)
        return float(cfg.critical_skip_layers > 0 and layer >= max(1, L - cfg.critical_skip_layers))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(self, examples: list[Example], record_hidden: bool = False, thought_fn=None, halt_fn=None,
                 n_latent: int | None = None, lambda_depth: float | None = None, lambda_step: int | None = None,
                 shortcuts: bool | None = None) -> list[Generation]:
        cfg = self.config
        steps = lambda_step if lambda_step is not None else (cfg.lambda_step if cfg.lambda_step is not None else cfg.n_latent)
        if n_latent is not None:
            steps = n_latent
        use = (cfg.stage == 2) if shortcuts is None else shortcuts
        if not use:
            gens = super().generate(examples, record_hidden=record_hidden, thought_fn=thought_fn, n_latent=steps)
            L = len(self.routers)
            for g in gens:
                g.extra.update(layers_per_latent_step=float(L), num_layers=L)
            return gens
        ctl = self.ctl
        ctl.lambda_depth = cfg.lambda_depth if lambda_depth is None else lambda_depth
        self._configure_controller()
        base = thought_fn or self.thought
        ctl.reset(len(examples), self.device)

        def thought(h, step, rows=None):
            e = base(h, step, rows)
            ctl.arm()
            return e

        with ctl.installed("hard"):
            gens = super().generate(examples, record_hidden=record_hidden, thought_fn=thought, n_latent=steps,
                                    last_hidden=ctl.last_hidden)
        L = len(self.routers)
        per = max(steps, 1)
        exits = torch.stack(ctl.step_exits, 1).tolist() if ctl.step_exits else [[] for _ in gens]
        total = ctl.counts()
        counts = {name: (total[attr].float() / per).tolist() for name, attr in (
            ("layers_per_latent_step", "layer_forwards"), ("routers_per_latent_step", "router_calls"),
            ("adapters_per_latent_step", "adapter_calls"), ("kv_projections_per_latent_step", "kv_projections"))}
        reused = torch.stack(ctl.step_reused, 1).tolist() if ctl.step_reused else [[] for _ in gens]
        for i, g in enumerate(gens):
            g.extra.update({name: vals[i] for name, vals in counts.items()}, num_layers=L, exit_layers=exits[i])
            if ctl.reusing:  # per thought, the bottom layers it reused from the previous one (L: all of them)
                g.extra["reused_layers"] = reused[i]
        return gens
