"""The embedded default task: chains of single-digit modular arithmetic.

A problem starts from a digit and applies ``n`` operations, left to right, modulo ``modulus``::

    question  3+4*7-2+5
    steps     <<3+4=7>> <<7*7=9>> <<9-2=7>> <<7+5=2>>
    answer    2

Each step is written as an equation in GSM8k-Aug's ``<<expr=result>>`` style, so the number of
CoT tokens reflects the real cost of explicit reasoning.

**Why chain of thought is needed.** The answer is a composition of ``n`` modular operations; no
single operation's result is visible in the question. With the CoT, every token to predict is
one table lookup (``a op b mod 10``) on values already written down. Without it, a small
Transformer must carry out all ``n`` lookups serially inside one forward pass, which a 4-layer
model trained for minutes does not learn: measured on this kind of CPU (``../shared/MEASURED.md``
and ``docs/default_task.md``), CoT-SFT reaches ~1.0 while No-CoT-SFT stays near 0.25 for n = 4
(chance is 0.1). Operands are single digits because multi-digit carries make training slow;
the difficulty lives in the number of steps, which latent methods must internalise.

Knobs: ``n_steps`` (or ``min_steps``..``n_steps`` for a mixed-difficulty set), ``modulus``,
``operand_max``, ``ops`` and ``wording`` (``symbolic`` or ``words``). Splits are disjoint as
sets of questions and deterministic for a seed.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from latentreason.data.criticality import reaches_answer
from latentreason.data.example import Example
from latentreason.errors import ConfigError

_OP_WORDS = {"+": "add", "-": "subtract", "*": "multiply by"}


@dataclass
class TaskConfig:
    """Knobs of the procedural task (all documented in ``docs/default_task.md``)."""

    n_steps: int = 4
    #: if set, each problem has a uniformly drawn number of steps in [min_steps, n_steps]
    min_steps: int | None = None
    #: with ``min_steps``: relative frequencies of min_steps..n_steps steps in the *train* split only
    #: (valid and test stay uniform), e.g. ``[1, 1, 1, 1, 3, 3]`` for 1..6 steps; None: uniform
    train_step_weights: list[float] | None = None
    modulus: int = 10
    operand_max: int = 9
    ops: str = "+-*"
    wording: str = "symbolic"
    #: how a step is written: equation ``<<4+7=1>>`` (GSM8k-Aug style), plain ``4+7=1``, value ``1``
    step_format: str = "plain"
    #: distractor steps per problem: side computations on two literal operands, written in brackets where
    #: they happen (``4+7*8(3*6)+2-5``) and computed in the CoT like any step, whose result nothing uses
    #: (non-critical in the dependency graph; ``docs/default_task.md``)
    distractors: int = 0
    #: where distractors go: "start" (computed before the chain begins: ``(3*6)4+7*8+2-5``) or "random" (before a
    #: random main step after the first, or after the last one: ``4+7(3*6)*8+2-5``)
    distractor_at: str = "start"
    #: probability that an operation is an identity (``+0``, ``-0`` or ``*1``): a step that restates its input
    #: value without computing anything new, so the answer's dependency graph skips it (non-critical)
    identity_prob: float = 0.0
    n_train: int = 20000
    n_valid: int = 300
    n_test: int = 500
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.n_steps < 1:
            raise ConfigError(f"task.n_steps must be >= 1, got {self.n_steps}")
        if self.min_steps is not None and not 1 <= self.min_steps <= self.n_steps:
            raise ConfigError(f"task.min_steps must be in [1, n_steps={self.n_steps}], got {self.min_steps}")
        if self.train_step_weights is not None:
            want = self.n_steps - (self.min_steps or self.n_steps) + 1
            w = self.train_step_weights
            if self.min_steps is None or len(w) != want or any(x < 0 for x in w) or not sum(w) > 0:
                raise ConfigError(f"task.train_step_weights needs min_steps and {want} non-negative weights (one per "
                                  f"number of steps {self.min_steps}..{self.n_steps}, not all 0), got {w}")
        if not 2 <= self.modulus <= 10:
            raise ConfigError(f"task.modulus must be in [2, 10] (single-digit values), got {self.modulus}")
        if not 1 <= self.operand_max <= 9:
            raise ConfigError(f"task.operand_max must be in [1, 9], got {self.operand_max}")
        if not self.ops or set(self.ops) - set(_OP_WORDS):
            raise ConfigError(f"task.ops must be a non-empty string over '+-*', got {self.ops!r}")
        if self.wording not in ("symbolic", "words"):
            raise ConfigError(f"task.wording must be 'symbolic' or 'words', got {self.wording!r}")
        if self.step_format not in ("equation", "plain", "value"):
            raise ConfigError(f"task.step_format must be 'equation', 'plain' or 'value', got {self.step_format!r}")
        if self.distractors < 0:
            raise ConfigError(f"task.distractors must be >= 0, got {self.distractors}")
        if not 0.0 <= self.identity_prob <= 1.0:
            raise ConfigError(f"task.identity_prob must be in [0, 1], got {self.identity_prob}")
        if self.distractor_at not in ("start", "random"):
            raise ConfigError(f"task.distractor_at must be 'start' or 'random', got {self.distractor_at!r}")
        for name in ("n_train", "n_valid", "n_test"):
            if getattr(self, name) < 0:
                raise ConfigError(f"task.{name} must be >= 0")


IDENTITIES = (("+", 0), ("-", 0), ("*", 1))


def is_identity(op: str, b: int) -> bool:
    """An operation that cannot change the value (``+0``, ``-0``, ``*1``)."""
    return (op, b) in IDENTITIES


def _apply(a: int, op: str, b: int, mod: int) -> int:
    if op == "+":
        return (a + b) % mod
    if op == "-":
        return (a - b) % mod
    return (a * b) % mod


def _step_text(a: int, op: str, b: int, r: int, cfg: TaskConfig) -> str:
    eq = f"{a}{op}{b}={r}"
    return {"equation": f"<<{eq}>>", "plain": eq, "value": str(r)}[cfg.step_format]


def make_problem(start: int, ops: list[tuple[str, int]], cfg: TaskConfig,
                 distractors: dict[int, list[tuple[int, str, int]]] | None = None) -> Example:
    """Build the example for a start value and a list of (op, operand).

    An identity operation (``x*1``, ``x+0``, ``x-0``) restates its input: later steps read the value
    from the step that computed it, so the identity step is non-critical. ``distractors`` maps a
    main-step index i to side computations ``(a, op, b)`` written (and
    computed) right before main step i (i = 0: before the start value; i = len(ops): after the last
    step); nothing uses their results. ``meta`` records the dependency graph of the written steps (``parents``: the steps each
    one reads; the answer reads the last main step) and the criticality it implies.
    """
    distractors = distractors or {}
    value = start
    steps, values, parents, kinds = [], [], [], []
    q_parts: list[str] = []
    w_parts: list[str] = []
    last_main: int | None = None  # index (in the written steps) of the latest main step

    def side(items):
        for a, op, b in items:
            r = _apply(a, op, b, cfg.modulus)
            steps.append(_step_text(a, op, b, r, cfg))
            values.append(r)
            parents.append([])
            kinds.append("distractor")
            q_parts.append(f"({a}{op}{b})")
            w_parts.append(f"(Aside: {a} {_OP_WORDS[op].split()[0]} {b}.)")

    side(distractors.get(0, []))  # side computations before the chain begins
    q_parts.append(str(start))
    w_parts.append(f"Start with {start}.")
    for i, (op, b) in enumerate(ops):
        if i:
            side(distractors.get(i, []))
        new = _apply(value, op, b, cfg.modulus)
        steps.append(_step_text(value, op, b, new, cfg))
        values.append(new)
        parents.append([] if last_main is None else [last_main])
        if is_identity(op, b):
            # a restatement (x*1, x+0, x-0): it produces no new value, so later steps read the value from the
            # step that computed it; nothing depends on this one
            kinds.append("identity")
        else:
            kinds.append("main")
            last_main = len(steps) - 1
        q_parts.append(f"{op}{b}")
        w_parts.append(f"{_OP_WORDS[op].capitalize()} {b}.")
        value = new
    side(distractors.get(len(ops), []))
    if cfg.wording == "symbolic":
        question = "".join(q_parts)
    else:
        question = " ".join(w_parts) + f" Result mod {cfg.modulus}?"
    meta = {
        "task": "modchain",
        "n_steps": len(steps),
        "start": start,
        "ops": [op for op, _ in ops],
        "operands": [b for _, b in ops],
        "values": values,
        "parents": parents,
        "step_kinds": kinds,
        # a step matters when the answer depends on it through the dependency graph: distractors do not
        "critical": reaches_answer(parents, [last_main] if last_main is not None else []),
    }
    return Example(question, steps, str(value), meta)


def _sample(rng: random.Random, cfg: TaskConfig, step_weights: list[float] | None = None) -> Example:
    if cfg.min_steps is None:
        n = cfg.n_steps
    elif step_weights:
        n = rng.choices(range(cfg.min_steps, cfg.n_steps + 1), weights=step_weights)[0]
    else:
        n = rng.randint(cfg.min_steps, cfg.n_steps)
    start = rng.randrange(cfg.modulus)
    ops = [(rng.choice(cfg.ops), rng.randint(1, cfg.operand_max)) for _ in range(n)]
    if cfg.identity_prob > 0:
        ops = [rng.choice(IDENTITIES) if rng.random() < cfg.identity_prob else o for o in ops]
    side: dict[int, list[tuple[int, str, int]]] = {}
    for _ in range(cfg.distractors):
        # "random": before main step 1..n-1 (0-based), or after the last one
        at = 0 if cfg.distractor_at == "start" else rng.randint(1, n)
        side.setdefault(at, []).append((rng.randint(1, cfg.operand_max), rng.choice(cfg.ops), rng.randint(1, cfg.operand_max)))
    return make_problem(start, ops, cfg, side)


def generate_splits(cfg: TaskConfig) -> dict[str, list[Example]]:
    """Deterministic train/valid/test splits with no question shared between splits.

    Test is drawn first, then valid (excluding test questions), then train (excluding both);
    repeats inside the train split are allowed (short chains have few distinct problems).
    """
    cfg.validate()
    rng = random.Random(f"latentreason-modchain-{cfg.seed}")
    taken: set[str] = set()
    out: dict[str, list[Example]] = {}
    for split, n, unique in (("test", cfg.n_test, True), ("valid", cfg.n_valid, True), ("train", cfg.n_train, False)):
        items: list[Example] = []
        seen_here: set[str] = set()
        attempts = 0
        while len(items) < n:
            attempts += 1
            if attempts > 200 * max(n, 1) + 10000:
                raise ConfigError(
                    f"task: cannot draw {n} distinct {split} problems with these knobs "
                    f"(n_steps={cfg.n_steps}, ops={cfg.ops!r}, operand_max={cfg.operand_max}); "
                    "lower n_test/n_valid or allow more steps"
                )
            ex = _sample(rng, cfg, cfg.train_step_weights if split == "train" else None)
            if ex.question in taken or (unique and ex.question in seen_here):
                continue
            seen_here.add(ex.question)
            ex.meta["split"] = split
            items.append(ex)
        taken |= seen_here
        out[split] = items
    return out


def task_description(cfg: TaskConfig) -> dict:
    d = asdict(cfg)
    d["name"] = "modchain"
    d.pop("extra", None)
    return d
