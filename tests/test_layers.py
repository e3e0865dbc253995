"""The library's layering (CONTRIBUTING.md), read from the code: no import cycle, no import from a
lower layer to a higher one, and no job config read by string key."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"

#: a module's layer: the first prefix that matches its dotted name under ``pipeline``
LAYERS = {
    1: ("errors", "io", "color", "collectives", "config", "fingerprint", "ray_cluster"),
    2: ("data", "storage", "models", "metrics", "monitor", "model_files", "plots"),
    3: ("distributed", "loop"),
    4: ("ssl", "translate", "invariance", "ace", "simgan"),
    5: ("predict", "claims", "report"),
    6: ("tracking", "sweep"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    first = module.split(".")[1] if module.count(".") else ""
    return next(n for n, names in LAYERS.items() if first in names)


def module_imports(path: Path) -> set[str]:
    """The ``pipeline`` modules a file imports at module level (what runs when it is imported)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                known = (PIPELINE.parent / (candidate.replace(".", "/") + ".py")).is_file() or (
                    PIPELINE.parent / candidate.replace(".", "/")
                ).is_dir()
                out.add(candidate if known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("pipeline")}
    return {m for m in out if m != "pipeline"}


MODULES = {module_name(p): p for p in PIPELINE.rglob("*.py") if "__pycache__" not in p.parts}
GRAPH = {name: module_imports(path) for name, path in MODULES.items() if name != "pipeline"}


def test_every_library_module_has_a_layer():
    assert all(layer(m) for m in GRAPH)


def test_no_import_reaches_up_a_layer():
    upward = sorted(f"{m} (layer {layer(m)}) imports {i} (layer {layer(i)})" for m, imports in GRAPH.items()
                    for i in imports if layer(i) > layer(m))  # fmt: skip
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    def visit(node: str, stack: list[str], done: set[str]) -> list[str] | None:
        if node in stack:
            return stack[stack.index(node) :] + [node]
        if node in done:
            return None
        for nxt in GRAPH.get(node, ()):
            if nxt != node and not (node.startswith(nxt + ".") and MODULES.get(nxt, Path()).name == "__init__.py"):
                cycle = visit(nxt, [*stack, node], done)
                if cycle:
                    return cycle
        done.add(node)
        return None

    done: set[str] = set()
    for start in GRAPH:
        cycle = visit(start, [], done)
        assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("path", sorted(p for p in PIPELINE.rglob("*.py") if "__pycache__" not in p.parts), ids=str)
def test_no_job_config_is_read_by_string_key(path):
    """Loops read their typed job's attributes; ``config["..."]`` reads (or a section's) are gone."""
    reads = re.findall(r"\b(?:config|cfg|job|tr|cp|mp|ac|pre|cg)(?:\[\"\w+\"\]|\.get\(\"\w+\")", path.read_text())
    assert not reads, reads
