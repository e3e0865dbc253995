"""The one storage URI of a run on a cluster: what Ray workers read and write lives under it.

``PIPELINE_STORAGE_URI`` (``s3://bucket/study``, ``gs://...``, or a folder every node mounts) holds

- ``data/<digest>/<set>/``: the prepared shards a run reads, uploaded by the driver on first use
  and named by their content digest, so a worker never reads a stale or a driver-local copy;
- ``checkpoints/<stage>/``: Ray Train run checkpoints (resume reads them back from there);
- ``sweeps/``: Ray Tune results.

Unset (the default), everything stays on local paths, as on one machine. DVC outputs (models,
metrics, plots) are always local. Credentials and endpoints come from the usual environment of
pyarrow's file systems (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``...).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from pathlib import Path

from pipeline.fingerprint import data_fingerprint

ENV = "PIPELINE_STORAGE_URI"
COMPLETE = "_COMPLETE"


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def join(root: str | Path, *parts: str) -> str | Path:
    """``root / parts`` for a local path, ``root/parts`` for a URI (``Path`` would fold ``s3://`` to ``s3:/``)."""
    if is_uri(root):
        return posixpath.join(str(root).rstrip("/"), *parts)
    return Path(root).joinpath(*parts)


def storage_uri() -> str | None:
    """``PIPELINE_STORAGE_URI`` without a trailing slash, or None."""
    uri = os.environ.get(ENV, "").strip()
    return uri.rstrip("/") or None


def filesystem(uri: str | Path):  # -> tuple[pyarrow.fs.FileSystem, str]
    """The pyarrow file system of ``uri`` and the path inside it (a local path: the local file
    system and the absolute path)."""
    import pyarrow.fs as pafs

    from pipeline.errors import UserError

    if not is_uri(uri):
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise UserError(f"{ENV}: cannot open {uri}: {str(exc).splitlines()[0]}") from None


def list_files(folder: str | Path, pattern: str):  # -> tuple[pyarrow.fs.FileSystem, list[str]]
    """The file system of ``folder`` (a URI or a local path) and the sorted paths (in it) of the
    files directly in ``folder`` whose name matches ``pattern`` (fnmatch); none for a missing folder."""
    import fnmatch

    import pyarrow.fs as pafs

    fs, path = filesystem(folder)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return fs, sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.base_name, pattern))


def publish_data(data_root: str | Path, sets: Iterable[str]) -> str:
    """Where Ray workers read the prepared ``sets`` of ``data_root``: the local folder (absolute)
    without a storage URI; with one, ``<uri>/data/<digest of the sets' files>``, uploaded once."""
    uri = storage_uri()
    sets = list(sets)
    if uri is None:
        return str(Path(data_root).resolve())
    import pyarrow.fs as pafs

    digest = data_fingerprint([Path(data_root) / s for s in sets])[:16]
    remote = f"{uri}/data/{digest}"
    fs, path = filesystem(remote)
    if fs.get_file_info(f"{path}/{COMPLETE}").type == pafs.FileType.NotFound:
        for s in sets:
            pafs.copy_files(str((Path(data_root) / s).resolve()), f"{path}/{s}", destination_filesystem=fs)
        with fs.open_output_stream(f"{path}/{COMPLETE}") as out:  # written last: a half upload is redone
            out.write(" ".join(sets).encode())
    return remote


def sweep_storage(local: str | Path) -> str:
    """Where Ray Tune writes a sweep's results: ``<uri>/sweeps`` with a storage URI, else ``local`` (absolute)."""
    uri = storage_uri()
    return f"{uri}/sweeps" if uri else str(Path(local).resolve())


def run_storage(local: str | Path) -> str:
    """Where Ray Train keeps a stage's run checkpoints: ``<uri>/checkpoints/<name of local>`` with a
    storage URI; the folder ``PIPELINE_CHECKPOINT_STORAGE`` (a file system every node mounts) when
    that is set; else the local folder (absolute). When they go elsewhere, the local folder (a DVC
    output) still exists and holds ``REMOTE``, where its checkpoints went: resume reads them there."""
    uri, shared = storage_uri(), os.environ.get("PIPELINE_CHECKPOINT_STORAGE")
    local = Path(local)
    if uri is None and not shared:
        return str(local.resolve())
    remote = f"{uri}/checkpoints/{local.name}" if uri else shared
    local.mkdir(parents=True, exist_ok=True)
    (local / "REMOTE").write_text(remote + "\n")
    return remote


def publish_results(paths: Iterable[str | Path], dest: str) -> list[str]:
    """Copy the local files and folders ``paths`` (relative to the working directory) under the
    folder or URI ``dest``, keeping their relative paths, and write ``_COMPLETE`` (listing them) last,
    so a reader can tell a finished copy from one cut short. Returns the relative paths copied.
    A missing path is a one-line error before anything is written."""
    from pipeline.errors import UserError

    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"nothing to publish at {', '.join(missing)} (run the study first)")
    fs, root = filesystem(dest)
    fs.create_dir(root, recursive=True)
    copied = []
    for p in paths:
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            rel = f.as_posix()
            fs.create_dir(posixpath.dirname(f"{root}/{rel}"), recursive=True)
            with fs.open_output_stream(f"{root}/{rel}") as out:
                out.write(f.read_bytes())
            copied.append(rel)
    with fs.open_output_stream(f"{root}/{COMPLETE}") as out:
        out.write("\n".join(copied).encode() + b"\n")
    return copied
