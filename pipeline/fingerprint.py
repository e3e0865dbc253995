"""Fingerprints of code and data: what a run's name is made of, so that a run resumes only its own
checkpoints. :func:`run_name` hashes a config with the code its loop imports (as syntax trees:
comments, layout and docstrings do not count) and the bytes of the data it reads."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from pipeline.io import file_digest, state_digest


def _module_file(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _code_tree(source: str) -> str:
    """The syntax tree of ``source`` without docstrings: comments, layout and docs do not count."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):  # fmt: skip
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def imported_files(module: str, root: str | Path | None = None, packages: tuple[str, ...] = ()) -> dict[str, Path]:
    """``module`` and every module of its own package (and of ``packages``) it imports, transitively
    (parent packages' ``__init__`` included), by name -> source file. ``root`` is the folder
    holding the packages (default: the one holding ``pipeline``)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    top = {module.split(".")[0], *packages}
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts) + 1):  # the module and its parent packages
            sub = ".".join(parts[:k])
            f = _module_file(sub, root)
            if sub in seen or f is None:
                continue
            seen[sub] = f
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    todo += [a.name for a in node.names if a.name.split(".")[0] in top]
                elif (
                    isinstance(node, ast.ImportFrom)
                    and node.module
                    and node.level == 0
                    and node.module.split(".")[0] in top
                ):
                    todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return seen


def code_fingerprint(module: str = "pipeline", root: str | Path | None = None) -> str:
    """sha256 of the code ``module`` runs (:func:`imported_files`), as syntax trees: a comment or
    docstring edit, or an edit of a module it does not import, leaves the fingerprint as it is."""
    h = hashlib.sha256()
    for name, f in sorted(imported_files(module, root).items()):
        h.update(name.encode())
        h.update(_code_tree(f.read_text()).encode())
    return h.hexdigest()


def data_fingerprint(paths: Iterable[str | Path]) -> str:
    """sha256 over every file under ``paths`` (folders walked, names and bytes): what a run reads."""
    h = hashlib.sha256()
    for path in map(Path, paths):
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(f.name.encode())
            h.update(file_digest(f).encode())
    return h.hexdigest()


def plain(obj: Any) -> Any:
    """``obj`` as JSON data for a run name: a job (a dataclass) and its params sections (pydantic) as
    mappings, a state dict (a mapping of tensors) as the digest of its weights."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, BaseModel):
        return obj.model_dump()
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {"state_sha": state_digest(obj)}
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def run_name(
    prefix: str, config: Any, loop: Callable[..., Any] | None = None, inputs: Iterable[str | Path] = ()
) -> str:
    """``<prefix>-<hash of config (a job, or jobs: see :func:`plain`), the loop's code and its input data>``.

    The same config, code and data resume (or return) the same run; a changed config, a change
    in the code the loop imports (see :func:`code_fingerprint`; the whole library without
    ``loop``) or changed ``inputs`` (files or folders the loop reads) start fresh, so a finished
    checkpoint is never reused for other code or other data.
    """
    code = code_fingerprint(loop.__module__ if loop is not None else "pipeline")
    payload = json.dumps(plain(config), sort_keys=True, default=str) + code + data_fingerprint(inputs)
    return f"{prefix}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"
