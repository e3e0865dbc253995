"""``python -m stages.with_ray -- CMD [ARGS...]``: run CMD (``dvc repro``, ``dvc exp run ...``) beside
one private Ray instance that every stage it runs joins, instead of each stage starting its own.

The instance is local and listens on 127.0.0.1 only (:func:`pipeline.ray_cluster.init_ray`); CMD
gets its address in ``RAY_ADDRESS``. It stops when CMD ends: after success, a failing stage, Ctrl-C
or SIGTERM; the exit status is CMD's (130 after Ctrl-C). With ``RAY_ADDRESS`` already set (a
cluster, ``ray job submit``) CMD runs as it is. ``make repro`` runs through it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from pipeline import ray_cluster
from pipeline.errors import UserError, run_cli

NUM_CPUS = 4  # logical: room for a stage's 2 workers + driver, or a sweep trial, on a 2-core machine


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0 if argv else 2)
    if os.environ.get("RAY_ADDRESS"):
        os.execvp(argv[0], argv)
    import ray

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    child: subprocess.Popen | None = None
    try:
        ray_cluster.init_ray(num_cpus=max(os.cpu_count() or 1, NUM_CPUS))
        context = ray.get_runtime_context()
        env = {**os.environ, "RAY_ADDRESS": context.gcs_address,
               "RAY_API_SERVER_ADDRESS": f"http://{ray._private.worker.global_worker.node.address_info['webui_url']}"}  # fmt: skip
        print(
            f"with_ray: a local Ray instance at {context.gcs_address} for: {' '.join(argv)}",
            file=sys.stderr,
            flush=True,
        )
        try:
            child = subprocess.Popen(argv, env=env)
        except FileNotFoundError:
            raise UserError(f"{argv[0]}: command not found") from None
        code = child.wait()
    except KeyboardInterrupt:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)  # Ctrl-C reached it too from the terminal; SIGTERM did not
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        code = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ray.shutdown()
    raise SystemExit(code)


if __name__ == "__main__":
    run_cli(main)
