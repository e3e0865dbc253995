"""Print the ``dvc exp run`` arguments of a profile: ``-S section.key=value`` for every value it sets.

    dvc exp run $(python -m stages.profile gpu)        # what `make repro PROFILE=gpu` runs

A profile is ``infra/profiles/<name>.yaml`` (or a path): a subset of params.yaml's keys. The
merged params are validated first, so an unknown key or a bad value is one line, not a run.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from pipeline.config import load_params, parse_params, read_yaml, set_values
from pipeline.errors import UserError, run_cli

PROFILES = Path("infra/profiles")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out |= flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def profile_args(profile: str, params_path: str = "params.yaml") -> list[str]:
    """``-S key=value`` pairs of ``profile`` after checking params.yaml merged with it."""
    path = Path(profile) if profile.endswith((".yaml", ".yml")) else PROFILES / f"{profile}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml")))
        raise UserError(f"profile not found: {path} (profiles: {names or 'none'})")
    values = read_yaml(path.read_text()) or {}
    load_params(params_path)  # the base itself is valid
    assignments = [f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in flatten(values).items()]
    merged = set_values(read_yaml(Path(params_path).read_text()), assignments)  # each key one of params.yaml's
    parse_params(merged, f"{params_path} + {path}")
    return [a for assignment in assignments for a in ("-S", assignment)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile", help="a name under infra/profiles/ (e.g. gpu) or a YAML path")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    print(" ".join(shlex.quote(a) for a in profile_args(args.profile, args.params)))


if __name__ == "__main__":
    run_cli(main)
