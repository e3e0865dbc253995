"""The stylize claims of the scratch stylizer over 9 seeds: the default run's seeds 0-2
(`metrics/stylize_scratch.json`) and seeds 3-8 (`stylize_scratch_seeds_3-8.json`, same params
otherwise), against the identity of `metrics/stylize.json`. Run from the repository root:

    python studies/stylize_seeds/claims.py   # writes results/stylize_seeds/claims.{json,md}
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.claims import markdown, stylize_claims
from pipeline.io import atomic_file, write_json

HERE = Path("results/stylize_seeds")  # its results; run from the repository root


def main() -> None:
    default = json.loads(Path("metrics/stylize_scratch.json").read_text())
    extra = json.loads((HERE / "stylize_scratch_seeds_3-8.json").read_text())
    both = {**default["per_seed"], **extra["per_seed"]}
    if len(both) != len(default["per_seed"]) + len(extra["per_seed"]):
        raise SystemExit("the two runs share a seed")
    table = json.loads(Path("metrics/stylize.json").read_text())
    stylize = {k: table[k] for k in ("identity", "palette")} | {"scratch": {"per_seed": both}}
    claims = stylize_claims({"stylize": stylize}, "default")
    write_json(HERE / "claims.json", {"profile": "default", "claims": claims})
    with atomic_file(HERE / "claims.md") as tmp:
        tmp.write_text(markdown(claims))
    print(markdown(claims))


if __name__ == "__main__":
    main()
