"""Photos streamed from the Parquet shards through Ray Data, for sets larger than memory.

The in-memory path decodes every photo of a set into one padded float32 bank per worker
(:class:`pipeline.data.augment.PhotoBank`); its size grows with the set. The streaming path reads
the shards as a Ray Data dataset that Ray Train splits across its workers
(``get_dataset_shard``); a worker decodes one batch of photos at a time and augments it on its
device as the in-memory path does, so its memory stays flat in the set's size.

Order. Each epoch starts a fresh pass over the worker's shard, shuffled through a local buffer
seeded by (seed, epoch, pass); an epoch longer than a pass starts the next pass. A single reader
(one worker, or :func:`pipeline.distributed.run_plain`) therefore reads the same photos in the same
order in a resumed epoch as in the uninterrupted run. With several workers Ray Data hands blocks
to whichever worker asks first, so which photos a worker sees may differ between runs: a resumed
epoch repeats its step count and its augmentation draws, not its exact photos.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.shards import decode_png, shard_files
from pipeline.errors import UserError

MODES = ("auto", "memory", "stream")
MEMORY_LIMIT_BYTES = 2 * 2**30  # ``auto`` streams a set whose in-memory bank would pass this per worker
SHUFFLE_BATCHES = 8  # the local shuffle buffer holds this many batches


def bank_bytes(folder: str | Path, split: str) -> int:
    """Bytes of the float32 bank the in-memory path would hold: N x 3 x H_max x W_max x 4."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fs, files = shard_files(folder, split)
    n, h, w = 0, 0, 0
    for f in files:
        t = pq.read_table(f, columns=["height", "width"], filesystem=fs)
        if len(t):
            n, h, w = n + len(t), max(h, pc.max(t["height"]).as_py()), max(w, pc.max(t["width"]).as_py())
    return n * 3 * h * w * 4


def streams(mode: str, folder: str | Path, split: str) -> bool:
    """Whether ``mode`` (one of :data:`MODES`) reads the set ``folder``/``split`` as a stream:
    ``auto`` streams when its in-memory bank would pass :data:`MEMORY_LIMIT_BYTES`."""
    if mode not in MODES:
        raise UserError(f"unknown data path '{mode}' (allowed: {', '.join(MODES)})")
    return mode == "stream" or (mode == "auto" and bank_bytes(folder, split) > MEMORY_LIMIT_BYTES)


def photo_dataset(folder: str | Path, split: str):  # -> ray.data.Dataset
    """The encoded photos of a split as a Ray Data dataset (column ``image``: PNG bytes), read lazily."""
    import ray.data

    fs, files = shard_files(folder, split)
    return ray.data.read_parquet(files, filesystem=fs).select_columns(["image"])


def photo_batches(data: Any, batch: int, seed: int, epoch: int) -> Iterator[list[np.ndarray]]:
    """Endless batches of ``batch`` decoded photos (uint8 (H, W, 3) or (H, W)) from ``data`` (a
    Ray Data dataset, or a worker's shard of one): this epoch's first pass, then further passes.
    Raises UserError when the data hold fewer photos than one batch."""
    for n_pass in range(1 << 30):
        served = 0
        for b in data.iter_batches(
            batch_size=batch,
            batch_format="pyarrow",
            drop_last=True,
            local_shuffle_buffer_size=SHUFFLE_BATCHES * batch,
            local_shuffle_seed=(seed * 1_000_003 + epoch * 1_009 + n_pass) % 2**31,
        ):
            served += 1
            yield [decode_png(x) for x in b.column("image").to_pylist()]
        if not served:
            raise UserError(f"the streamed photos hold fewer than one batch of {batch} for this worker")
