"""Plots people would rather look at than read; every curve beside its baselines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.io import atomic_file


def _pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend (imported lazily: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically and free it."""
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _pyplot().close(fig)
    return Path(path)


def plot_history(
    history: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    path: str | Path,
    title: str,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """One panel per key of per-epoch ``history``; ``baselines[key]`` adds labelled dashed lines."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    epochs = [int(r["epoch"]) + 1 for r in history]
    for ax, key in zip(axes[0], keys):
        ax.plot(epochs, [r[key] for r in history], marker="o", label=key)
        for i, (name, value) in enumerate((baselines or {}).get(key, {}).items()):
            ax.axhline(value, linestyle="--", color=f"C{i + 1}", label=name)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def rgb_images(x: Any) -> list[Any]:
    """A tensor (N, 3, H, W) in [0, 1] -> N uint8 arrays (H, W, 3) for :func:`image_grid`."""
    return [(im.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype("uint8") for im in x.detach().cpu()]


def image_grid(rows: Mapping[str, Sequence[Any]], path: str | Path, title: str = "", scale: float = 1.0) -> Path:
    """A labelled grid: one row per key, its images (uint8 (H, W) or (H, W, 3)) left to right."""
    plt = _pyplot()
    ncols = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(scale * ncols, scale * len(rows) + 0.4), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                img = images[c]
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        axes[r][0].set_title(name, fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def bar_chart(
    values: Mapping[str, float], path: str | Path, title: str, baselines: Mapping[str, float] | None = None
) -> Path:
    """One bar per name, labelled dashed lines for ``baselines``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(values) + 2, 3.4))
    names = list(values)
    ax.bar(range(len(names)), [values[n] for n in names], color=[f"C{i % 10}" for i in range(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, linestyle="--", color="k" if i == 0 else f"C{i}", label=name)
    if baselines:
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, path)


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
    baselines: Mapping[str, float] | None = None,
    logx: bool = False,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """One line per name (x, y), optional error bars, labelled dashed lines for ``baselines``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, (name, (x, y)) in enumerate(series.items()):
        ax.errorbar(x, y, yerr=(errors or {}).get(name), marker="o", capsize=3, label=name, color=f"C{i}")
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, linestyle="--", color="k" if i == 0 else f"C{i + len(series)}", label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
