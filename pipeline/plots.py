"""Plots people would rather look at than read; every curve beside its baselines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.io import atomic_file


def plot_history(
    history: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    path: str | Path,
    title: str,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """One panel per key of per-epoch ``history``; ``baselines[key]`` adds labelled dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
