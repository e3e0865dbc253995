"""Statistics over seeds: means of per-seed score dicts, a t interval, and one claim of the study.

A claim is an effect signed so that > 0 means the claim holds, taken per seed (paired where the
seeds pair the runs), with a 95 % interval; it *holds* only when the interval's lower end is > 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def mean_over_seeds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every number (recursively in nested dicts) of per-seed score dicts of one layout;
    other values are taken from the first row."""
    out: dict[str, Any] = {}
    for key, first in rows[0].items():
        values = [r[key] for r in rows]
        if isinstance(first, bool) or not isinstance(first, (int, float, dict)):
            out[key] = first
        elif isinstance(first, dict):
            out[key] = mean_over_seeds(values)
        else:
            out[key] = float(np.mean(values))
    return out


def t_interval(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t interval of the mean of ``values`` (n >= 2; n = 1 gives an unbounded one)."""
    from scipy import stats  # here, not at the top: scipy.stats costs every stage process ~1.5 s of import

    v = np.asarray(values, np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, -math.inf, math.inf
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def claim(
    claim_id: str,
    statement: str,
    effects: list[float],
    baseline: str,
    profile: str,
    seeds: list[int],
    ci_method: str = "t over seeds",
    interval: tuple[float, float] | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One entry of ``metrics/claims.json``. ``effects`` are per seed (> 0 = the claim holds on that
    seed); the interval is the t interval over them unless ``interval`` gives one computed otherwise."""
    value, lo, hi = t_interval(effects)
    if interval is not None:
        lo, hi = interval
    finite = [x if math.isfinite(x) else None for x in (lo, hi)]
    return {
        "id": claim_id, "statement": statement, "profile": profile, "seeds": list(seeds), "value": value,
        "ci95": finite, "ci_method": ci_method, "holds": bool(math.isfinite(lo) and lo > 0), "baseline": baseline,
        "per_seed": [float(x) for x in effects], **({"detail": detail} if detail else {}),
    }  # fmt: skip
