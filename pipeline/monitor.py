"""GPU use of a training worker, sampled in the background while it trains (solo-learn-style monitor).

:class:`GpuMonitor` samples its worker's GPU through NVML (``nvidia-ml-py``) every ``interval_s``
seconds on a daemon thread; :meth:`GpuMonitor.epoch` returns the epoch's mean utilisation and peak
memory and starts the next epoch's window. Without a GPU, or without NVML, there is no monitor and
the rows carry no GPU keys.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

Sample = tuple[float, float]  # (utilisation %, memory used in GiB)


def nvml_sampler(device: torch.device) -> Callable[[], Sample] | None:
    """A function that reads CUDA ``device``'s utilisation and memory, or None without NVML.

    The GPU is found by its UUID: NVML numbers the machine's GPUs, CUDA only the visible ones."""
    try:
        import pynvml

        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:  # no driver, no GPU, no library: no monitor
        return None

    def sample() -> Sample:
        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**30
        return float(util), float(mem)

    return sample


class GpuMonitor:
    """Samples ``sample()`` every ``interval_s`` on a daemon thread until :meth:`stop`."""

    def __init__(self, sample: Callable[[], Sample], interval_s: float = 1.0) -> None:
        self.sample, self.interval_s = sample, interval_s
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="gpu-monitor")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.sample()
            except Exception:  # a failed read (e.g. the driver resetting) skips one sample
                value = None
            if value is not None:
                with self._lock:
                    self._samples.append(value)
            self._stop.wait(self.interval_s)

    def epoch(self) -> dict[str, float]:
        """{'gpu_util': mean %, 'gpu_mem_gb': peak GiB} over the samples since the last call (empty if none)."""
        with self._lock:
            samples, self._samples = self._samples, []
        if not samples:
            return {}
        return {"gpu_util": sum(u for u, _ in samples) / len(samples), "gpu_mem_gb": max(m for _, m in samples)}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def gpu_monitor(device: torch.device, interval_s: float = 1.0) -> GpuMonitor | None:
    """A monitor of a CUDA ``device``; None for a CPU worker or where NVML cannot read the GPU."""
    if device.type != "cuda":
        return None
    sample = nvml_sampler(device)
    return None if sample is None else GpuMonitor(sample, interval_s)
