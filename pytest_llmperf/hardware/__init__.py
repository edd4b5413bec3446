"""The machine: GPUs and their host-wide leases, NVML telemetry, machine facts."""
