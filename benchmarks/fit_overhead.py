"""What one Ray Train run costs before its loop does any work, and what the controller's health
check interval changes.

Every training stage is one ``distributed.fit`` (a stage's seeds share it). Before the loop runs,
Ray Train starts a controller, a placement-group cleaner, a synchronisation actor, a dataset
manager and the workers, each a new Python process that imports Ray Train (and torch); the
controller then polls the workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s by default),
and the run ends only on a poll. Side by side in one run, alternating over ``--rounds``, each
setting in a fresh process with its own local Ray instance:

- ``hc2_w2``: the default interval, 2 workers (the tiny test params);
- ``hc0.2_w2``: a 0.2 s interval, 2 workers (what the tests set);
- ``hc0.2_w1``: a 0.2 s interval, 1 worker.

Per setting: ``empty_fit_s`` (wall seconds of a fit whose loop only reports once, after a warm-up
fit), ``empty_fit_cpu_s`` (CPU seconds the whole machine spent meanwhile: run it on a quiet
machine) and ``work_s`` (seconds inside the loop for a fixed amount of torch work, rank 0: the
cost of polling to the training itself). Ratios are to ``hc2_w2``. Writes
``benchmarks/results/fit_overhead_<device>.json``.

    python benchmarks/fit_overhead.py                # 2 rounds
    python benchmarks/fit_overhead.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {"hc2_w2": ("2.0", 2), "hc0.2_w2": ("0.2", 2), "hc0.2_w1": ("0.2", 1)}
WORK_STEPS = 40


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent outside idle and iowait (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _empty_loop(config: dict, session: object) -> None:
    import torch

    w = session.worker()
    session.report({"step": 1}, {"x": torch.zeros(1)}, w)


def _work_loop(config: dict, session: object) -> None:
    import torch

    from pipeline import distributed

    w = session.worker()
    torch.manual_seed(0)
    model = distributed.prepare_model(
        torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256)), w
    )
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(config["steps"]):
        x = torch.randn(512, 256)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    session.report({"step": 1}, {"work_s": torch.tensor(time.perf_counter() - t0)}, w)


def child(workers: int) -> dict:
    from pipeline import distributed, ray_cluster
    from pipeline.config import load_params

    params = load_params().distributed.model_copy(update={"num_workers": workers})
    ray_cluster.init_ray()
    with tempfile.TemporaryDirectory() as storage:
        distributed.fit(_empty_loop, {}, params, "warm", storage)
        t0, c0 = time.perf_counter(), busy_cpu_s()
        distributed.fit(_empty_loop, {}, params, "empty", storage)
        empty_s, empty_cpu_s = time.perf_counter() - t0, busy_cpu_s() - c0
        work_s = float(distributed.fit(_work_loop, {"steps": WORK_STEPS}, params, "work", storage)["work_s"])
    return {"empty_fit_s": empty_s, "empty_fit_cpu_s": empty_cpu_s, "work_s": work_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    root = Path(__file__).resolve().parents[1]
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        for name, (interval, workers) in SETTINGS.items():
            env = {
                **os.environ,
                "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": interval,
                "RAY_ADDRESS": "",
                "PYTHONPATH": str(root),
            }
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(workers)], env=env, cwd=root, capture_output=True, text=True
            )
            if out.returncode != 0:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {name}: {runs[name][-1]}", flush=True)
    med = {name: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for name, rs in runs.items()}
    base = med["hc2_w2"]
    import torch

    result = {
        "rounds": args.rounds, "cores": os.cpu_count(), "torch": torch.__version__, "work_steps": WORK_STEPS,
        "device": platform.processor() or platform.machine(), "runs": runs, "median": med,
        "ratio_to_hc2_w2": {name: {k: m[k] / base[k] for k in m} for name, m in med.items()},
    }  # fmt: skip
    from pipeline.io import write_json

    out = Path(args.out) / "fit_overhead_cpu.json"
    write_json(out, result)
    for name, m in med.items():
        print(
            f"{name}: empty fit {m['empty_fit_s']:.1f} s wall, {m['empty_fit_cpu_s']:.1f} CPU s; work {m['work_s']:.2f} s"
        )
    print(f"-> {out}")


if __name__ == "__main__":
    main()
