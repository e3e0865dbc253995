"""The GPU monitor: what it reports from its samples, and that a CPU worker has none."""

from __future__ import annotations

import time

import torch

from pipeline.monitor import GpuMonitor, gpu_monitor


def test_an_epoch_reports_mean_utilisation_and_peak_memory_then_starts_a_new_window():
    readings = iter([(20.0, 1.0), (60.0, 3.0), (40.0, 2.0)])
    monitor = GpuMonitor(lambda: next(readings, None), interval_s=0.001)
    deadline = time.monotonic() + 10
    while len(monitor._samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert monitor.epoch() == {"gpu_util": 40.0, "gpu_mem_gb": 3.0}
    assert monitor.epoch() == {}  # the readings ran out: nothing new in this window
    monitor.stop()
    assert not monitor._thread.is_alive()


def test_a_failed_reading_skips_one_sample_and_the_monitor_goes_on():
    calls = []

    def flaky() -> tuple[float, float]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("driver resetting")
        return 50.0, 1.5

    monitor = GpuMonitor(flaky, interval_s=0.001)
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    monitor.stop()
    assert monitor.epoch()["gpu_util"] == 50.0


def test_a_cpu_worker_has_no_monitor():
    assert gpu_monitor(torch.device("cpu")) is None
