"""What a run measured: its engine, model and hardware, and where two runs differ in them.

Numbers of two engines, two models or two machines compare setups, not one setup over
time: hf against llama.cpp on the same model is "+1104%" without either having changed.
So `llmperf compare` shows both sides' setup and says when they differ, and
`--llmperf-compare` refuses such a baseline before anything runs unless the user says the
difference is meant (`--llmperf-allow-mismatch`).

A run's setup is its settings as its summary keeps them (`--engine`, `--model`, the
hardware key: `cpu`, `h100-80gb-hbm3`); a summary without settings (a hand-made one) is
read from its tests. A model given as a path is named by its last part, so that the same
model in another folder (another machine's checkout) is the same model. Hardware keys match
as thresholds folders do (`h100` is `h100-80gb-hbm3`). A part one side does not know is no
difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from pytest_llmperf.results.runs import Run

#: The parts of a setup, in the order they are shown.
PARTS = ("engine", "model", "hardware")


def model_name(model: str) -> str:
    """A model as runs are compared by it: a built-in name, or a path's last part."""
    stripped = model.rstrip("/\\")
    if "/" not in stripped and "\\" not in stripped:
        return model
    return PurePath(stripped).name or stripped


@dataclass(frozen=True)
class Setup:
    """One run's engine, model and hardware; None where it is not known."""

    engine: str | None
    model: str | None
    hardware: str | None

    @classmethod
    def of(cls, engine: str | None, model: str | None, hardware: str | None) -> Setup:
        return cls(engine, model_name(model) if model else None, hardware)

    @classmethod
    def of_run(cls, run: Run) -> Setup:
        settings = run.summary.get("settings") or {}
        engine = settings.get("engine")
        model = settings.get("model")
        if not isinstance(engine, str):  # no settings: what its tests ran on
            engine = ",".join(sorted({t.engine for t in run.tests})) or None
        if not isinstance(model, str):
            model = ",".join(sorted({model_name(t.engine_config.model) for t in run.tests})) or None
        hardware = run.summary.get("hardware")
        return cls.of(engine, model, hardware if isinstance(hardware, str) else None)

    def describe(self) -> str:
        """`engine hf, model tiny, hardware cpu`."""
        return ", ".join(f"{part} {getattr(self, part) or '?'}" for part in PARTS)

    def differences(self, other: Setup) -> list[str]:
        """`engine: hf vs llamacpp` for each part both sides know and that differs."""
        found = []
        for part in PARTS:
            mine, theirs = getattr(self, part), getattr(other, part)
            if mine is None or theirs is None or mine == theirs:
                continue
            if part == "hardware" and _same_hardware(mine, theirs):
                continue
            found.append(f"{part}: {mine} vs {theirs}")
        return found


def _same_hardware(one: str, other: str) -> bool:
    """As thresholds folders match: `h100` is `h100-80gb-hbm3` (a "-"-separated prefix)."""
    return one.startswith(other + "-") or other.startswith(one + "-")


@dataclass(frozen=True)
class Machine:
    """The machine a run measured on, as its metadata (`run.json`'s `machine`) records it:
    two runs of one hardware key (`cpu`) may still come from a 2-core VM and a 64-core server.
    None where the run does not say."""

    host: str | None
    cpu: str | None
    cpus: int | None
    memory_gib: float | None
    gpus: tuple[str, ...] | None

    @classmethod
    def of_run(cls, run: Run) -> Machine:
        machine = run.summary.get("machine")
        m = machine if isinstance(machine, dict) else {}
        memory = m.get("memory_total_bytes")
        gpus = m.get("gpus")
        return cls(
            m.get("hostname") if isinstance(m.get("hostname"), str) else None,
            m.get("cpu") if isinstance(m.get("cpu"), str) else None,
            m.get("cpu_count") if isinstance(m.get("cpu_count"), int) else None,
            memory / 2**30 if isinstance(memory, (int, float)) and memory > 0 else None,
            tuple(str(g.get("name")) for g in gpus if isinstance(g, dict))
            if isinstance(gpus, list)
            else None,
        )

    def differences(self, other: Machine) -> list[str]:
        """`cpus: 2 vs 64` for each hardware part both sides know and that differs (memory
        by more than 5%: the kernel's share moves it a little between boots)."""
        found = []
        if self.cpu and other.cpu and self.cpu != other.cpu:
            found.append(f"cpu: {self.cpu} vs {other.cpu}")
        if self.cpus and other.cpus and self.cpus != other.cpus:
            found.append(f"cpus: {self.cpus} vs {other.cpus}")
        mine, theirs = self.memory_gib, other.memory_gib
        if mine and theirs and abs(mine - theirs) > 0.05 * max(mine, theirs):
            found.append(f"memory: {mine:.0f} GiB vs {theirs:.0f} GiB")
        if self.gpus is not None and other.gpus is not None and self.gpus != other.gpus:
            found.append(
                f"gpus: {', '.join(self.gpus) or 'none'} vs {', '.join(other.gpus) or 'none'}"
            )
        return found
