"""Atomic output: a file or folder appears complete under its final name, or not at all.

A stage that fails halfway leaves the previous output untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_torch(path: str | Path, obj: dict[str, Any]) -> None:
    """``torch.save`` atomically; keep ``obj`` to tensors and plain types so it loads with weights_only.

    The same ``obj`` gives the same bytes: saved to a path, torch names the archive's inner folder
    after the (random) temporary file, so a rerun would change the file's hash and DVC would retrain
    every stage downstream of identical weights."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def file_digest(path: str | Path) -> str:
    """First 16 hex digits of the sha256 of a file's bytes (names runs after their inputs)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """First 16 hex digits of the sha256 of a state dict's tensor bytes (names runs after their weights)."""
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in state.values())).hexdigest()[:16]


def load_torch(path: str | Path | BinaryIO) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_torch` (a path or an open binary file), with ``weights_only=True``."""
    return torch.load(path, map_location="cpu", weights_only=True)
