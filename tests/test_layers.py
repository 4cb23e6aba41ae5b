"""The package's imports run one way: cli -> steps -> (engines | I/O) -> core, with no cycles.

Every ``import`` and ``from ... import`` in n2sr, at module level or inside a function, is
parsed (not executed), so a lazy import cannot hide a violation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "n2sr"

# layer -> layers it may import. Core: plain settings and errors. Numerics: pure functions on
# arrays. Engines: networks and loops on tensors. I/O: files. Steps: files in, files out. CLI: parsing.
ALLOWED = {
    "core": {"core"},
    "numerics": {"core", "numerics"},
    "engines": {"core", "numerics", "engines"},
    "io": {"core", "numerics", "io"},
    "steps": {"core", "numerics", "engines", "io", "steps"},
    "cli": {"core", "steps", "cli"},
}
CORE = {"n2sr", "n2sr.config", "n2sr.errors"}


def layer(module: str) -> str:
    if module in CORE:
        return "core"
    if module in ("n2sr.cli", "n2sr.options"):  # options: the CLI's options, generated from the config
        return "cli"
    for sub, name in (("n2sr.nn", "engines"), ("n2sr.io", "io"), ("n2sr.steps", "steps")):
        if module == sub or module.startswith(sub + "."):
            return name
    return "numerics"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the n2sr modules it imports (``from n2sr.io import images`` counts as n2sr.io.images)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "n2sr"}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "n2sr":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)
        graph[name] = found - {name}
    return graph


GRAPH = imports()


def test_the_package_has_the_intended_subpackages():
    names = set(GRAPH)
    steps = {"ingest", "reference", "train", "denoise", "bm3d", "evaluate", "summarize", "crops", "synth", "add_noise"}
    assert {f"n2sr.steps.{s}" for s in steps} <= names
    assert {"n2sr.config", "n2sr.nn.training", "n2sr.nn.inference", "n2sr.io.checkpoints", "n2sr.io.atomic"} <= names


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_downward(module):
    upward = {m for m in GRAPH[module] if layer(m) not in ALLOWED[layer(module)]}
    assert not upward, f"{module} ({layer(module)}) imports {sorted(upward)} ({sorted({layer(m) for m in upward})})"


def test_no_import_cycles():
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for dep in sorted(GRAPH.get(module, ())):
            visit(dep, path + [module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


def test_modules_stay_small():
    big = {m: n for m, p in ((module_name(p), p) for p in PACKAGE.rglob("*.py"))
           if (n := len(p.read_text().splitlines())) >= 400}
    assert not big, big


def test_the_checker_would_catch_an_upward_import():
    assert layer("n2sr.nn.training") == "engines" and "io" not in ALLOWED["engines"]
    assert layer("n2sr.io.checkpoints") == "io" and "engines" not in ALLOWED["io"]
    assert "steps" not in ALLOWED["io"] | ALLOWED["engines"] | ALLOWED["numerics"]
