"""Parquet shards with one schema for every data set.

A set lives in a folder ``<root>/<set>/`` of files ``<split>-<nnnnn>.parquet``. Every row is
one image, stored as PNG bytes with its shape, label (-1 when none), domain, split and
source. Sets with a nuisance transform (``digits_lt``) also keep the clean image, the
transform parameters as JSON and the seed of the draw; other sets leave those null.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline import storage
from pipeline.errors import UserError

SCHEMA = pa.schema(
    [
        pa.field("image", pa.binary(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("channels", pa.int8(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("clean", pa.binary(), nullable=True),
        pa.field("transform", pa.string(), nullable=True),
        pa.field("transform_seed", pa.int64(), nullable=True),
    ]
)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image, (H, W) or (H, W, 3)."""
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png wants uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """uint8 array (H, W) or (H, W, 3) from PNG bytes."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


@dataclass
class Record:
    """One row of a shard; ``image`` and ``clean`` are uint8 arrays (H, W) or (H, W, 3)."""

    image: np.ndarray
    domain: str
    split: str
    source: str
    label: int = -1
    clean: np.ndarray | None = None
    transform: dict[str, Any] | None = None
    transform_seed: int | None = None

    def to_row(self) -> dict[str, Any]:
        img = self.image
        return {
            "image": encode_png(img),
            "height": int(img.shape[0]),
            "width": int(img.shape[1]),
            "channels": 1 if img.ndim == 2 else int(img.shape[2]),
            "label": int(self.label),
            "domain": self.domain,
            "split": self.split,
            "source": self.source,
            "clean": None if self.clean is None else encode_png(self.clean),
            "transform": None if self.transform is None else json.dumps(self.transform, sort_keys=True),
            "transform_seed": self.transform_seed,
        }


def write_set(folder: Path, records: Iterable[Record], rows_per_shard: int = 4096) -> dict[str, int]:
    """Write records to ``folder`` as ``<split>-<nnnnn>.parquet``; return rows per split.

    ``folder`` should be a fresh (temporary) folder: the caller makes the write atomic.
    """
    folder.mkdir(parents=True, exist_ok=True)
    buffers: dict[str, list[dict[str, Any]]] = {}
    shard_index: dict[str, int] = {}
    counts: dict[str, int] = {}

    def flush(split: str) -> None:
        rows = buffers.pop(split, [])
        if not rows:
            return
        n = shard_index.get(split, 0)
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        pq.write_table(table, folder / f"{split}-{n:05d}.parquet", compression="zstd")
        shard_index[split] = n + 1

    for rec in records:
        buffers.setdefault(rec.split, []).append(rec.to_row())
        counts[rec.split] = counts.get(rec.split, 0) + 1
        if len(buffers[rec.split]) >= rows_per_shard:
            flush(rec.split)
    for split in list(buffers):
        flush(split)
    return counts


def shard_files(folder: str | Path, split: str | None = None) -> tuple[Any, list[str]]:
    """The file system and the sorted shards of a set (of one split); one line when there are none.
    ``folder`` is a local path or a storage URI (``s3://...``, read through pyarrow's file systems)."""
    fs, files = storage.list_files(folder, f"{split}-*.parquet" if split else "*.parquet")
    if not files:
        what = f"split '{split}' of " if split else ""
        raise UserError(f"no shards for {what}{folder} (run the 'prepare' stage first)")
    return fs, files


def read_table(folder: str | Path, split: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """All rows of a set (optionally one split) as one Arrow table (see :func:`shard_files`)."""
    fs, files = shard_files(folder, split)
    return pa.concat_tables(pq.read_table(f, columns=columns, schema=SCHEMA, filesystem=fs) for f in files)


def read_rows(folder: str | Path, split: str, rows: np.ndarray, columns: list[str]) -> pa.Table:
    """Rows ``rows`` (sorted indices into the split, in shard order) of a set, reading one record
    batch at a time, so a few rows of a large set never hold the whole set in memory."""
    fs, files = shard_files(folder, split)
    rows = np.asarray(rows, dtype=np.int64)
    parts, start = [], 0
    for f in files:
        with fs.open_input_file(f) as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=1024, columns=columns):
                local = rows[(rows >= start) & (rows < start + len(batch))] - start
                if len(local):
                    parts.append(pa.Table.from_batches([batch]).take(pa.array(local)))
                start += len(batch)
    if len(rows) and (rows.min() < 0 or rows.max() >= start):
        raise IndexError(f"rows outside the {start} rows of split '{split}' of {folder}")
    return pa.concat_tables(parts) if parts else SCHEMA.empty_table().select(columns)


def read_images(folder: str | Path, split: str) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Decoded images, labels (N,) and sources of one split of a set."""
    table = read_table(folder, split, columns=["image", "label", "source"])
    images = [decode_png(b) for b in table.column("image").to_pylist()]
    labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)
    return images, labels, table.column("source").to_pylist()
