"""What torch's intra-op threads cost when processes already fill the cores: the test suite's case.

`make test` runs two pytest workers on a 2-core machine; one of them drives the whole-DAG
``dvc repro``, whose training runs in Ray workers (one torch thread each, at Ray's niceness 15),
while the other runs in-process tests. Each setting here starts that mix at once, every process in
a fresh interpreter doing the same fixed CPU work (forward and backward steps of the ResNet-20
classifier, batch 32, RGB 32 px):

- ``alone_t<cores>``: one process, a thread per core (the floor: nothing competes);
- ``mix_t<cores>``: ``--procs`` processes at niceness 0 and one at niceness 15 (the Ray worker),
  each with a thread per core (torch's default);
- ``mix_t1``: the same mix, one thread each (what ``tests/conftest.py`` sets).

Per setting, over ``--rounds`` alternating rounds: the wall seconds until every process is done,
the CPU seconds the machine spent meanwhile, and the niced process's own wall seconds, all timed
from the moment every process has warmed up and starts its loop. The mix does ``procs + 1`` times
the alone run's work, so ``efficiency`` is that work over the mix's wall time, relative to the
alone run (1.0: the mix wastes nothing to the contention).
Writes ``benchmarks/results/oversubscription_<device>.json``; run it on a quiet machine.

    python benchmarks/oversubscription.py            # 3 rounds of 40 steps per process
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fit_overhead import busy_cpu_s  # this directory: the script's own path entry

from pipeline.io import write_json

WORKER = """
import sys, time, torch
from pipeline.models.classifier import ResNet20
torch.manual_seed(0)
model, x = ResNet20(10, 3, 8), torch.rand(32, 3, 32, 32)
model(x).square().mean().backward()  # warm-up
print("ready", flush=True)
sys.stdin.readline()  # every process starts its loop at once
start = time.perf_counter()
for _ in range(int(sys.argv[1])):
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
print(time.perf_counter() - start)
"""


def run_mix(procs: int, niced: int, threads: int, steps: int) -> dict[str, float]:
    """Start ``procs`` plain and ``niced`` niceness-15 workers, let their loops go at once, wait for all."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-c", WORKER, str(steps)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True, "env": env}
    plain = [subprocess.Popen(cmd, **pipes) for _ in range(procs)]
    nice = [subprocess.Popen(["nice", "-n", "15", *cmd], **pipes) for _ in range(niced)]
    for p in plain + nice:
        assert p.stdout.readline().strip() == "ready"
    cpu0, start = busy_cpu_s(), time.perf_counter()
    for p in plain + nice:
        p.stdin.write("go\n")
        p.stdin.flush()
    loops = [float(p.communicate()[0]) for p in plain + nice]
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "cpu_s": busy_cpu_s() - cpu0,
        "loop_s_plain": max(loops[:procs]),
        "loop_s_niced": max(loops[procs:], default=0.0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--procs", type=int, default=2, help="plain processes in the mix (pytest workers)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    settings = {f"alone_t{cores}": (1, 0, cores), f"mix_t{cores}": (args.procs, 1, cores), "mix_t1": (args.procs, 1, 1)}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in settings}
    for _ in range(args.rounds):
        for name, (procs, niced, threads) in settings.items():
            runs[name].append(run_mix(procs, niced, threads, args.steps))
            print(name, {k: round(v, 2) for k, v in runs[name][-1].items()}, flush=True)
    median = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    alone = median[f"alone_t{cores}"]["wall_s"]
    for name, (procs, niced, _) in settings.items():
        median[name]["efficiency"] = (procs + niced) * alone / median[name]["wall_s"]
    mix = median[f"mix_t{cores}"]
    ratios = {
        name: {"wall_s": m["wall_s"] / mix["wall_s"], "cpu_s": m["cpu_s"] / mix["cpu_s"]}
        for name, m in median.items()
        if name.startswith("mix")
    }
    for name, m in median.items():
        print(
            f"{name}: wall {m['wall_s']:.1f} s, cpu {m['cpu_s']:.1f} s, niced process {m['loop_s_niced']:.1f} s, efficiency {m['efficiency']:.2f}"
        )
    out = {"device": "cpu", "cores": cores, "machine": platform.processor() or platform.machine(), "procs": args.procs, "rounds": args.rounds,
           "steps": args.steps, "median": median, "ratio_to_mix_default_threads": ratios, "runs": runs}  # fmt: skip
    write_json(Path(__file__).parent / "results" / "oversubscription_cpu.json", out)


if __name__ == "__main__":
    main()
