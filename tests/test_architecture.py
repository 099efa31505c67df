"""The package's shape: no import cycles, data flowing one way through rl/, the core
independent of rl/, and no test helpers shipped in src/.

Imports are read from the source (ast), at module level, leaving out those under
``if TYPE_CHECKING:`` (annotations only); imports inside functions are lazy and are
checked separately for the layering rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "natgrad"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, *, lazy: bool) -> set[str]:
    """natgrad modules imported by ``path`` at module level (or, with ``lazy``, anywhere
    but under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = (
        _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    )

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("natgrad"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                if base.startswith("natgrad"):
                    for a in node.names:
                        sub = f"{base}.{a.name}"
                        found.add(sub if (SRC / Path(*sub.split("."))).with_suffix(".py").exists()
                                  or (SRC / Path(*sub.split(".")) / "__init__.py").exists() else base)  # fmt: skip
            for child in ("body", "orelse", "handlers", "finalbody"):
                if lazy and hasattr(node, child) and not isinstance(node, ast.If):
                    visit(getattr(node, child))
                elif lazy and isinstance(node, ast.If) and child in ("body", "orelse"):
                    visit(getattr(node, child))
            if lazy and isinstance(node, ast.ExceptHandler):
                visit(node.body)

    visit(tree.body)
    return found


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}
GRAPH = {name: {m for m in _imports(p, lazy=False) if m in MODULES} for name, p in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


LAZY = {name: {m for m in _imports(p, lazy=True) if m in MODULES} for name, p in MODULES.items()}


@pytest.mark.parametrize("graph", [GRAPH, LAZY], ids=["module-level", "with-lazy-imports"])
def test_no_import_cycles_between_modules(graph):
    """Not even through a function-level import (the old agent ↔ ray_backend cycle)."""
    assert _cycle(graph) is None, " → ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert "natgrad.rl.rollout.ray" in LAZY["natgrad.rl.rollout.backends"]  # lazy imports seen


RL_ORDER = ["envs", "rollout", "policies", "algos", "callbacks"]
"""rl/'s stages, in the direction data flows; config/ and errors are shared leaves."""


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["natgrad", "rl"] else None


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "anywhere"])
def test_rl_stages_import_only_earlier_stages(lazy):
    bad = []
    allowed_back = {("algos", "callbacks")}  # learn() runs the callbacks: algos → callbacks
    for name, path in MODULES.items():
        stage = _stage(name)
        if stage not in RL_ORDER:
            continue
        for dep in _imports(path, lazy=lazy):
            dep_stage = _stage(dep)
            if dep_stage not in RL_ORDER or dep_stage == stage:
                continue
            later = RL_ORDER.index(dep_stage) > RL_ORDER.index(stage)
            if later and (stage, dep_stage) not in allowed_back:
                bad.append(f"{name} imports {dep}")
    assert not bad, "\n".join(bad)


def test_callbacks_never_import_the_algorithms():
    bad = [f"{n} imports {d}" for n, p in MODULES.items() if _stage(n) == "callbacks"
           for d in _imports(p, lazy=True) if _stage(d) == "algos"]  # fmt: skip
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("core", ["distributions", "fisher", "linalg", "params", "mlp"])
def test_the_core_does_not_depend_on_rl_optim_or_vi(core):
    bad = []
    for name, path in MODULES.items():
        if name.split(".")[1:2] == [core]:
            for dep in _imports(path, lazy=True):
                if dep.split(".")[1:2] and dep.split(".")[1] in ("rl", "optim", "vi", "cli"):
                    bad.append(f"{name} imports {dep}")
    assert not bad, "\n".join(bad)


def test_no_test_helpers_in_src():
    names = [n for n in MODULES if any(w in n.split(".")[-1] for w in ("testing", "fault", "mock"))]
    assert not names, names
