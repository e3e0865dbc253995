"""What a fresh process pays to import a stage's code, with and without torchvision.

Every stage driver and every Ray Train worker is a new Python process that imports the library.
``pipeline.data.augment`` imports ``torchvision.ops`` only inside the one function that needs it
(pretraining's crops); torchvision pulls in ``torch._dynamo`` on import. This times, side by side
and alternating so that load on the machine hits both alike, a fresh interpreter that imports

    lazy    the modules as they are (``import <module>``)
    eager   the same after ``import torchvision.ops`` (what every process paid before)

and writes the medians to ``benchmarks/results/import_cost_cpu.json``:

    lazy_s, eager_s       median wall seconds of one fresh process
    saved_s               eager_s - lazy_s, per process
    lazy_over_eager       lazy_s / eager_s

    python benchmarks/import_cost.py                     # stages.translate, 7 rounds
    python benchmarks/import_cost.py --module pipeline.invariance.classify --rounds 11
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pipeline.io import write_json


def one_process(code: str) -> float:
    """Wall seconds of ``python -c code`` in a fresh interpreter."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", default="stages.translate")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    code = {"lazy": f"import {args.module}", "eager": f"import torchvision.ops, {args.module}"}
    one_process(code["lazy"])  # warm the file cache
    times: dict[str, list[float]] = {"lazy": [], "eager": []}
    for i in range(args.rounds):
        for way in ("lazy", "eager") if i % 2 == 0 else ("eager", "lazy"):
            times[way].append(one_process(code[way]))
    lazy, eager = statistics.median(times["lazy"]), statistics.median(times["eager"])
    result = {
        "module": args.module,
        "rounds": args.rounds,
        "lazy_s": round(lazy, 3),
        "eager_s": round(eager, 3),
        "saved_s": round(eager - lazy, 3),
        "lazy_over_eager": round(lazy / eager, 3),
        "times_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "device": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    out = Path(args.out) / "import_cost_cpu.json"
    write_json(out, result)
    print(
        f"import {args.module}: {lazy:.2f} s, with torchvision.ops first {eager:.2f} s ({lazy / eager:.2f}x); wrote {out}"
    )


if __name__ == "__main__":
    main()
