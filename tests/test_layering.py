"""The package's structure: one-way layers, no import cycles, few function-level imports, no re-exports.

Layers, lowest first (a module may import from its own layer and the layers below it, never above):

1. ``base``          — ``latentreason`` (package init), ``errors``, ``config``, ``utils``, ``progress``
2. ``data``          — ``data/``: examples, loaders, named sets, procedural tasks, answers
3. ``models``        — ``models/``: backbones, tokenizer, KV-cache API, latent projection
4. ``decoding``      — ``decoding/``: batched generation, the latent loop (decoding takes callables —
                       thought / halt functions — never methods)
5. ``methods``       — ``methods/``: one module per method, a folder for System-1.5 and for adaptive
                       thinking, the registry
6. ``analysis``      — ``analysis/``: JS divergence, logit lens, ROUGE-L, Pass@k, Spearman, probing
7. ``soft_thinking`` — ``soft_thinking/``: samplers, settings, the loop, the method entry, noisy
                       thoughts, the study (it measures with ``analysis``)
8. ``evaluation``    — ``evaluation/``: evaluate a method on examples
9. ``training``      — ``training/``: trainer (validates through ``evaluation``), run config, checkpoints,
                       run building blocks, a whole training run
10. ``reporting``    — ``reporting/``: HTML report, plots, terminal tables (read results, never run them)
11. ``experiments``  — ``experiments/``: the benchmark runner and its sections, the demo, seeds, latency,
                       FLOPs, extra evaluation sets, reproductions
12. ``cli``          — ``cli*.py``, ``__main__``: the command line

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
    ("soft_thinking", ("latentreason.soft_thinking",)),
    ("evaluation", ("latentreason.evaluation",)),
    ("training", ("latentreason.training",)),
    ("reporting", ("latentreason.reporting",)),
    ("experiments", ("latentreason.experiments",)),
    ("cli", ("latentreason.cli", "latentreason.cli_analyze", "latentreason.cli_data",
             "latentreason.cli_report", "latentreason.cli_repro", "latentreason.cli_soft", "latentreason.__main__")),
]

#: at most this many imports inside functions in the library (issue 21: few, each with a reason). The CLI
#: modules are not counted: a command imports the library it calls in its body, so that ``--help`` starts
#: without torch (each such import still carries its reason).
MAX_LIBRARY_FUNCTION_IMPORTS = 10
CLI_MODULES = {m for _, prefixes in LAYERS if _ == "cli" for m in prefixes}


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
    assert "latentreason.training.run" in edges["latentreason.cli"]  # function level
    assert "latentreason.reporting.plots" in edges["latentreason.reporting.report"]  # `from package import module`
    assert "latentreason" not in edges["latentreason.cli"]
    assert any("peft" in ast.unparse(node) for _, _, node in _function_imports())
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert _cycles({"a": ["b"], "b": []}) == []
    assert _layer("latentreason.experiments.bench") > _layer("latentreason.soft_thinking.study") > _layer("latentreason.methods.cot")
    assert _layer("latentreason.training.trainer") > _layer("latentreason.evaluation.evaluate")


def test_no_import_cycle():
    graph = {m: sorted({t for t, _ in edges}) for m, edges in _imports().items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles among the package's modules: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_function_level_imports_are_few_and_explained():
    found = _function_imports()
    lines = {p: p.read_text(encoding="utf-8").splitlines() for p in MODULES.values()}
    unexplained = [f"{p.relative_to(SRC)}:{n}" for p, n, _ in found if not _explained(lines[p], n)]
    assert not unexplained, ("function-level imports without a comment giving the reason (on the line, or on the line "
                             "above the block of imports it belongs to):\n" + "\n".join(unexplained))
    library = [(p, n) for p, n, _ in found if _module_of(p) not in CLI_MODULES]
    where = "\n".join(f"{p.relative_to(SRC)}:{n}" for p, n in library)
    assert len(library) <= MAX_LIBRARY_FUNCTION_IMPORTS, (f"{len(library)} function-level imports in the library "
                                                          f"(at most {MAX_LIBRARY_FUNCTION_IMPORTS}):\n{where}")


def _explained(lines: list[str], n: int) -> bool:
    """The import on line ``n`` carries a comment, or the line above its block of imports does."""
    k = n - 2
    while k >= 0 and (not lines[k].strip() or lines[k].lstrip().startswith(("from ", "import "))):
        k -= 1
    return "#" in lines[n - 1] or (k >= 0 and "#" in lines[k])


def _module_of(path: Path) -> str:
    return next(m for m, p in MODULES.items() if p == path)

def _unused_imports(path: Path) -> list[tuple[int, str]]:
    """(line, name) of each name a module imports but never uses; a name listed in ``__all__`` only is
    re-exported, not used."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for a in node.names:
                imported[a.asname or a.name] = node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                imported[a.asname or a.name.split(".")[0]] = node.lineno
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for node in ast.walk(tree):  # string annotations: "Method", list["Example"]
        for ann in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            for c in ast.walk(ann) if ann is not None else ():
                if isinstance(c, ast.Constant) and isinstance(c.value, str):
                    used |= {n.id for n in ast.walk(ast.parse(c.value, mode="eval")) if isinstance(n, ast.Name)}
    return sorted((line, name) for name, line in imported.items() if name not in used)


def test_unused_import_finder_tells_a_used_name_from_a_reexported_one(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from __future__ import annotations\nfrom a import b, c, g\nimport d.e\nimport f\n"
                 "x: 'c' = d.e\ny = g()\n__all__ = ['b']\n")
    assert _unused_imports(p) == [(2, "b"), (4, "f")]


def test_no_module_imports_a_name_it_does_not_use():
    """No re-exports: outside a package's ``__init__.py`` every imported name is used where it is imported."""
    bad = [f"{p.relative_to(SRC)}:{line}: {name}" for p in MODULES.values() if p.name != "__init__.py"
           for line, name in _unused_imports(p)]
    assert not bad, "imported names the module does not use (import them from where they are defined):\n" + "\n".join(bad)


def test_readme_layout_names_every_package_and_nothing_else():
    """README's layout section lists each package of src/latentreason (nested ones under their parent)."""
    readme = (SRC.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    listed, parent = set(), ""
    for line in block.splitlines():
        name = line.strip().split(" ", 1)[0]
        if not name.endswith("/") or line.startswith(" " * 6):
            continue
        if line.startswith("    "):
            listed.add(f"{parent}/{name.rstrip('/')}")
        elif line.startswith("  "):
            parent = name.rstrip("/")
            listed.add(parent)
    packages = {str(p.parent.relative_to(SRC / PKG)) for p in (SRC / PKG).rglob("__init__.py") if p.parent != SRC / PKG}
    assert listed == packages
