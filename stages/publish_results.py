"""``python -m stages.publish_results``: copy what a study leaves (metrics/, plots/, reports/ with
every stage's MLflow run id in reports/runs.json, models/ with every trained network, and dvc.lock)
to ``<storage>/results/<UTC time>/``, for a cluster job whose own disk dies with it (the KubeRay
RayJob runs it after ``dvc exp run`` and ``python -m stages.push``). A missing path is a one-line
error before anything is written.

``--to`` defaults to ``$PIPELINE_STORAGE_URI/results``; a URI (``s3://``, ``gs://``) or a folder.
Not a DVC stage: it reads the outputs, it makes none.
"""

from __future__ import annotations

import argparse
import time

from pipeline import storage
from pipeline.errors import UserError, run_cli

DEFAULT_PATHS = ["metrics", "plots", "reports", "models", "dvc.lock"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--to", default=None, help=f"results root (default: ${storage.ENV}/results)")
    ap.add_argument(
        "paths", nargs="*", default=DEFAULT_PATHS, help=f"what to copy (default: {' '.join(DEFAULT_PATHS)})"
    )
    args = ap.parse_args()
    root = args.to or (f"{storage.storage_uri()}/results" if storage.storage_uri() else None)
    if root is None:
        raise UserError(f"give --to or set {storage.ENV}: there is nowhere to publish the results")
    dest = str(storage.join(root, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    copied = storage.publish_results(args.paths, dest)
    print(f"published {len(copied)} files to {dest}")


if __name__ == "__main__":
    run_cli(main)
