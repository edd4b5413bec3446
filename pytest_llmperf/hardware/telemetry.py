"""GPU telemetry during every measured phase, from NVML, in a sampling thread.

Sampled every `interval_s` (default 0.1 s) on the test's GPUs, summed over GPUs where
a sum is meaningful:
    peak_gpu_mem_bytes   highest memory in use (sum over the GPUs) in any sample.
    mean_gpu_mem_bytes   mean of that sum.
    gpu_util_mean_pct    mean GPU utilisation (NVML's "percent of time a kernel ran"),
    gpu_util_max_pct     and its maximum, over GPUs and samples.
    power_mean_w         mean board power, summed over the GPUs.
    energy_j             energy over the phase: the card's total-energy counter (mJ,
                         Volta and newer) read at start and end; where it is missing,
                         mean power times duration.
    temp_max_c           hottest reading.
    sm_clock_mean_mhz, mem_clock_mean_mhz   mean clocks.
    output_tok_per_j     output tokens / energy_j.
Without NVML (a CPU machine, no driver, no `nvidia-ml-py`) every one of these is null
and nothing else changes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

NULL_TELEMETRY: dict[str, float | None] = {
    "peak_gpu_mem_bytes": None,
    "mean_gpu_mem_bytes": None,
    "gpu_util_mean_pct": None,
    "gpu_util_max_pct": None,
    "power_mean_w": None,
    "energy_j": None,
    "temp_max_c": None,
    "sm_clock_mean_mhz": None,
    "mem_clock_mean_mhz": None,
    "output_tok_per_j": None,
}


class Sampler:
    """Samples NVML on `physical` GPUs from `start()` to `stop()`; inert without NVML."""

    def __init__(self, physical: tuple[int, ...], interval_s: float = 0.1) -> None:
        self.physical = physical
        self.interval_s = interval_s
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy_start: float | None = None
        self._t0 = 0.0
        self._t1 = 0.0
        if physical:
            try:
                import pynvml  # type: ignore[import-not-found, unused-ignore]

                pynvml.nvmlInit()
                self._nvml = pynvml
                self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in physical]
            except Exception:
                self._nvml = None

    def _energy_mj(self) -> float | None:
        try:
            return float(
                sum(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles)
            )
        except Exception:
            return None

    def _sample(self) -> dict[str, float]:
        nv = self._nvml
        mem = util = power = 0.0
        util_max = temp = sm = memclk = 0.0
        for h in self._handles:
            mem += nv.nvmlDeviceGetMemoryInfo(h).used
            u = nv.nvmlDeviceGetUtilizationRates(h).gpu
            util += u
            util_max = max(util_max, u)
            power += nv.nvmlDeviceGetPowerUsage(h) / 1000.0
            temp = max(temp, nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
            sm += nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)
            memclk += nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)
        n = len(self._handles)
        return {
            "mem": mem,
            "util": util / n,
            "util_max": util_max,
            "power": power,
            "temp": temp,
            "sm": sm / n,
            "memclk": memclk / n,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._samples.append(self._sample())
            except Exception:
                pass  # one failed read is a missing sample, not a failed test
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self._nvml is None or self._thread is not None:
            return
        self._energy_start = self._energy_mj()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="llmperf-nvml", daemon=True)
        self._thread.start()

    def stop(self, output_tokens: int) -> dict[str, float | None]:
        if self._nvml is None or self._thread is None:
            return dict(NULL_TELEMETRY)
        self._stop.set()
        self._thread.join(timeout=5)
        self._t1 = time.perf_counter()
        end = self._energy_mj()
        samples = self._samples or [self._sample()]
        self._nvml.nvmlShutdown()

        def mean(key: str) -> float:
            return sum(s[key] for s in samples) / len(samples)

        power_mean = mean("power")
        if self._energy_start is not None and end is not None and end >= self._energy_start:
            energy = (end - self._energy_start) / 1000.0
        else:
            energy = power_mean * (self._t1 - self._t0)
        return {
            "peak_gpu_mem_bytes": max(s["mem"] for s in samples),
            "mean_gpu_mem_bytes": mean("mem"),
            "gpu_util_mean_pct": mean("util"),
            "gpu_util_max_pct": max(s["util_max"] for s in samples),
            "power_mean_w": power_mean,
            "energy_j": energy,
            "temp_max_c": max(s["temp"] for s in samples),
            "sm_clock_mean_mhz": mean("sm"),
            "mem_clock_mean_mhz": mean("memclk"),
            "output_tok_per_j": output_tokens / energy if energy > 0 else None,
        }
