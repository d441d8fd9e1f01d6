"""The package's structure: one-way layers, no import cycles, few function-level imports, short files.

Layers, lowest first (a module may import from its own layer and the layers below it, never above):

1. ``base``        — ``latentreason`` (package init), ``errors``, ``config``, ``utils``, ``progress``
2. ``data``        — ``data/``: examples, loaders, named sets, procedural tasks, answers
3. ``models``      — ``models/``: backbones, tokenizer, KV-cache API, projection, shortcuts, halting head
4. ``decoding``    — ``decoding/``: batched generation, the latent loop, soft-thinking loop and samplers,
                     halting rules (decoding takes callables — thought / halt functions — never methods)
5. ``methods``     — ``methods/``: one module per method, the registry, soft thinking on a method
6. ``analysis``    — ``analysis/``: JS, logit lens, ROUGE-L, Pass@k, probing, the soft-thinking study,
                     noisy-thought sampling, the System-1.5 grid (used by the benchmark, never using it)
7. ``evaluation``  — ``evaluation/``: evaluate a method on examples
8. ``training``    — ``training/``: trainer (validates through ``evaluation``), run config, checkpoints,
                     run building blocks, a whole training run
9. ``reporting``   — ``reporting/``: HTML report, plots, terminal tables (read results, never run them)
10. ``experiments`` — ``experiments/``: the benchmark runner and its sections, the demo, seeds, latency,
                     FLOPs, reproductions
11. ``cli``        — ``cli*.py``, ``__main__``: the command line

Every module of the package must belong to a layer (a new module is placed here). Imports are read
with ``ast`` — module-level, function-level and ``TYPE_CHECKING`` ones alike; the implicit import
of a parent package (``import a.b`` runs ``a/__init__``) is not counted, an explicit import of a
package is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "latentreason"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("latentreason", "latentreason.errors", "latentreason.config", "latentreason.utils", "latentreason.progress")),
    ("data", ("latentreason.data",)),
    ("models", ("latentreason.models",)),
    ("decoding", ("latentreason.decoding",)),
    ("methods", ("latentreason.methods",)),
    ("analysis", ("latentreason.analysis",)),
    ("evaluation", ("latentreason.evaluation",)),
    ("training", ("latentreason.training",)),
    ("reporting", ("latentreason.reporting",)),
    ("experiments", ("latentreason.experiments",)),
    ("cli", ("latentreason.cli", "latentreason.cli_analyze", "latentreason.cli_data", "latentreason.cli_lib",
             "latentreason.cli_report", "latentreason.cli_repro", "latentreason.cli_soft", "latentreason.__main__")),
]

#: at most this many imports inside functions in src/ (issue 21: "fewer than 20, each with a reason")
MAX_FUNCTION_IMPORTS = 19
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
#: a function longer than MAX_FUNCTION_LINES carries this comment (with its reason) in its first lines
LONG_FUNCTION_MARK = "# long function:"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted((SRC / PKG).rglob("*.py")):
        parts = p.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


MODULES = _modules()


def _layer(module: str) -> int:
    """Index of the module's layer: the longest matching prefix (exact module or package) wins."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            hit = module == pre or (module.startswith(pre + ".") and pre != PKG)
            if hit and len(pre) > best_len:
                best, best_len = i, len(pre)
    if best is None:
        raise AssertionError(f"module {module} belongs to no layer: add it to LAYERS in tests/test_layering.py")
    return best


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package modules an import statement imports."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")
            if MODULES[module].name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        subs = [f"{origin}.{a.name}" for a in node.names if f"{origin}.{a.name}" in MODULES]
        # `from pkg import submodule` imports the submodule; `from pkg import name` the package itself
        names = subs + ([origin] if len(subs) < len(node.names) else [])
    out = []
    for n in names:
        while n and n not in MODULES and "." in n:  # `import a.b.c` where c is not a module
            n = n.rsplit(".", 1)[0]
        if n in MODULES:
            out.append(n)
    return out


def _imports() -> dict[str, list[tuple[str, int]]]:
    """module -> [(imported package module, line)]."""
    graph: dict[str, list[tuple[str, int]]] = {}
    for module, path in MODULES.items():
        edges = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges += [(t, node.lineno) for t in _targets(module, node) if t != module]
        graph[module] = edges
    return graph


def _function_imports() -> list[tuple[Path, int, ast.stmt]]:
    found = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        seen: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in seen:
                        seen.add(id(node))
                        found.append((path, node.lineno, node))
    return found


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_import_from_a_higher_layer():
    bad = []
    for module, edges in _imports().items():
        mine = _layer(module)
        for target, line in edges:
            theirs = _layer(target)
            if theirs > mine:
                bad.append(f"{MODULES[module].relative_to(SRC)}:{line}: {module} ({LAYERS[mine][0]}) imports "
                           f"{target} ({LAYERS[theirs][0]})")
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan): each is an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_the_checks_see_what_they_check():
    """The import reader finds known imports of each kind, and the cycle finder finds a cycle."""
    edges = {m: {t for t, _ in e} for m, e in _imports().items()}
    assert "latentreason.decoding.generate" in edges["latentreason.methods.base"]  # module level
    assert "latentreason.cli_lib" in edges["latentreason.cli"]  # function level, `from package import module`
    assert "latentreason.methods.base" in edges["latentreason.analysis.js"]  # under TYPE_CHECKING
    assert "latentreason" not in edges["latentreason.cli"]
    assert any("peft" in ast.unparse(node) for _, _, node in _function_imports())
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert _cycles({"a": ["b"], "b": []}) == []
    assert _layer("latentreason.experiments.bench") > _layer("latentreason.analysis.soft_study") > _layer("latentreason.methods.cot")
    assert _layer("latentreason.training.trainer") > _layer("latentreason.evaluation.evaluate")


def test_no_import_cycle():
    graph = {m: sorted({t for t, _ in edges}) for m, edges in _imports().items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles among the package's modules: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_function_level_imports_are_few_and_explained():
    found = _function_imports()
    lines = {p: p.read_text(encoding="utf-8").splitlines() for p in MODULES.values()}
    unexplained = [f"{p.relative_to(SRC)}:{n}" for p, n, _ in found
                   if "#" not in lines[p][n - 1] and "#" not in lines[p][n - 2]]
    assert not unexplained, ("function-level imports without a comment giving the reason (on the line or the line "
                             "above):\n" + "\n".join(unexplained))
    where = "\n".join(f"{p.relative_to(SRC)}:{n}" for p, n, _ in found)
    assert len(found) <= MAX_FUNCTION_IMPORTS, f"{len(found)} function-level imports (at most {MAX_FUNCTION_IMPORTS}):\n{where}"


@pytest.mark.parametrize("path", sorted(MODULES.values()), ids=lambda p: str(p.relative_to(SRC / PKG)))
def test_files_and_functions_are_short(path):
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= MAX_FILE_LINES, f"{path.relative_to(SRC)} has {len(lines)} lines (at most {MAX_FILE_LINES})"
    long = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            head = "\n".join(lines[node.lineno - 1 : node.lineno + 9])
            if n > MAX_FUNCTION_LINES and LONG_FUNCTION_MARK not in head:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, (f"functions over {MAX_FUNCTION_LINES} lines without a '{LONG_FUNCTION_MARK} <reason>' comment "
                      "in their first lines:\n" + "\n".join(long))
