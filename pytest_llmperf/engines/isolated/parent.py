"""Isolated engines: each engine configuration in a child process of its own.

Why: GPU memory held by one configuration (a vLLM engine, its CUDA context, a leaked
tensor) must not survive into the next, and a crash, hang or out-of-memory in one
configuration must fail only its own tests. So the parent never imports the engine:
it starts a child with `CUDA_VISIBLE_DEVICES` set before anything can start CUDA,
talks to it over a pipe (`isolated.child`), and on close ends the child's whole
process group, then waits until the GPUs' memory is back to where it was before the
engine started (NVML), or on a CPU machine until every process of the group is gone.

Every wait is bounded: start (`start_timeout_s`), silence while streaming
(`stream_timeout_s`), and the hand-over (`release_timeout_s`). A child that dies or
goes silent raises `EngineDied`, whose message carries the cause and the end of the
child's log. `terminate` ends the child from another thread (the per-test bound's
watchdog): a native call that hangs in the child cannot stop the parent from ending it.
The reaper (`pytest_llmperf.procs.reaper`) ends the child's group if the parent dies first.

The child runs under pytest's interpreter, or the one the engine's `python` setting names
(`isolated.interpreter`: checked before it starts, its package versions recorded in the
engine's info, `details["interpreter"]`). It is a plain subprocess rather than
multiprocessing's spawn, which would hand the child this process's `sys.path`, and so this
environment's packages, whatever the interpreter.

The child's log is deleted when the engine closes cleanly, and kept when the engine
died (the error message names it).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

from pytest_llmperf.engines.base import (
    EngineConfig,
    EngineInfo,
    GenerationRequest,
    ScoreRequest,
    ScoreResult,
    StreamChunk,
)
from pytest_llmperf.engines.isolated.child import Start
from pytest_llmperf.engines.isolated.interpreter import check_interpreter, child_env
from pytest_llmperf.engines.spec import EngineSpec
from pytest_llmperf.hardware.gpus import gpu_memory_used, physical_indices
from pytest_llmperf.procs.reaper import end_group, group_alive, reaper

DEFAULT_START_TIMEOUT_S = 600.0
DEFAULT_STREAM_TIMEOUT_S = 1800.0
DEFAULT_RELEASE_TIMEOUT_S = 120.0
#: GPU memory above the pre-start baseline still counted as "back" (other tenants drift).
RELEASE_SLACK_BYTES = 512 * 1024**2
LOG_TAIL_CHARS = 3000


class EngineDied(RuntimeError):
    """The engine's process died, hung past its bound, or could not start."""


class _Child:
    """The child process, with the few calls of `multiprocessing.Process` this module uses."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def exitcode(self) -> int | None:
        """As multiprocessing says it: negative for the signal that ended the child."""
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


class _RemoteTokenizer:
    def __init__(self, engine: IsolatedEngine) -> None:
        self._engine = engine

    def encode(self, text: str) -> list[int]:
        result: list[int] = self._engine._call("encode", text)
        return result

    def decode(self, token_ids: Sequence[int]) -> str:
        result: str = self._engine._call("decode", list(token_ids))
        return result


class IsolatedEngine:
    """Runs the engine of `spec` (its class, `spec.target`) in a child process."""

    name: ClassVar[str] = "isolated"

    def __init__(
        self,
        spec: EngineSpec,
        config: EngineConfig,
        *,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        stream_timeout_s: float = DEFAULT_STREAM_TIMEOUT_S,
        release_timeout_s: float = DEFAULT_RELEASE_TIMEOUT_S,
    ) -> None:
        self.spec = spec
        self.config = config
        self.start_timeout_s = start_timeout_s
        self.stream_timeout_s = stream_timeout_s
        self.release_timeout_s = release_timeout_s
        self._process: _Child | None = None
        self._conn: Connection | None = None
        self._physical = physical_indices(config.gpus)
        self._baseline: dict[int, int] | None = None
        self._log_path = Path(tempfile.mkstemp(prefix="llmperf-engine-", suffix=".log")[1])
        self.released: dict[str, Any] | None = None
        #: Why the child died, once it has; None while it is healthy.
        self.death_cause: str | None = None
        #: Why `terminate` ended the child (it takes precedence over what the parent saw).
        self._terminated_because: str | None = None
        #: A stream is open: the child is busy and will not read a polite ("close",).
        self._streaming = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def tokenizer(self) -> _RemoteTokenizer:
        return _RemoteTokenizer(self)

    def log_tail(self) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-LOG_TAIL_CHARS:]

    def log_errors(self, limit: int = 5) -> str:
        """The last lines of the child's log that name an error, and where the log is."""
        lines = [
            line.strip()[:400]
            for line in self.log_tail_lines()
            if ("Error" in line or "error" in line) and "Traceback" not in line
        ]
        shown = "\n".join(lines[-limit:])
        return (
            f"{shown}\n(engine log: {self._log_path})"
            if shown
            else f"(engine log: {self._log_path})"
        )

    def log_tail_lines(self, max_bytes: int = 200_000) -> list[str]:
        try:
            with open(self._log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - max_bytes))
                return handle.read().decode(errors="replace").splitlines()
        except OSError:
            return []

    def start(self) -> EngineInfo:
        self._baseline = gpu_memory_used(self._physical)
        # The child numbers its GPUs from 0, as CUDA will once the mask is set.
        child_config = EngineConfig(
            self.config.engine,
            self.config.model,
            self.config.settings,
            tuple(range(len(self.config.gpus))),
            self.config.not_applied,
        )
        visible = ",".join(str(i) for i in self._physical)
        python = self.config.setting("python")
        if python is not None:
            check_interpreter(python, self.spec.packages, f"engine {self.config.engine!r}")
        parent_conn, child_conn = multiprocessing.Pipe()
        with open(self._log_path, "ab") as log:
            popen = subprocess.Popen(
                [python or sys.executable, "-m", __package__ + ".child", str(child_conn.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(child_conn.fileno(),),
                env=child_env(python or sys.executable, visible),
                process_group=0,  # a group of its own, so that ending it ends what it starts
            )
        self._process = _Child(popen)
        reaper.watch(popen.pid)
        child_conn.close()
        self._conn = parent_conn
        self._send(("start", self._start_message(child_config, visible, python)))
        message = self._receive(self.start_timeout_s, "starting")
        if message[0] == "error":
            self.death_cause = "engine failed to start"  # keeps the log its message names
            self.close()
            raise EngineDied(
                f"engine failed to start: {_last_line(message[1])}\n{self.log_errors()}"
            )
        info: EngineInfo = message[1]
        return info

    def _start_message(self, config: EngineConfig, visible: str, python: str | None) -> Start:
        # Under another interpreter only the parent's project folders travel (this
        # environment's packages would shadow the child's own); under ours all of its
        # path, as multiprocessing's spawn gave it.
        ours = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        project = tuple(
            p for p in sys.path if p and not any(Path(p).resolve().is_relative_to(o) for o in ours)
        )
        return Start(
            target=self.spec.target,
            streams_tokens=self.spec.traits.streams_tokens,
            config=config,
            visible=visible,
            log_path=str(self._log_path),
            sys_path=tuple(sys.path) if python is None else project,
            replace_path=python is None,
        )

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
        self._send(("stream", list(requests)))
        self._streaming = True
        while True:
            message = self._receive(self.stream_timeout_s, "generating")
            if message[0] == "chunk":
                yield message[1]
            elif message[0] == "chunks":
                yield from message[1]
            elif message[0] == "done":
                self._streaming = False
                return
            else:
                self._streaming = False
                raise EngineDied(f"engine raised: {_last_line(message[1])}\n{message[1]}")

    def terminate(self, reason: str) -> None:
        """End the child's process group now, from any thread; the call waiting on the
        child (a stream, a start) then raises `EngineDied` with `reason`."""
        process = self._process
        if process is None or process.pid is None:
            return
        self._terminated_because = reason
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.killpg(process.pid, sig)
            except (ProcessLookupError, PermissionError):
                break

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """The child engine's `score` (for engines whose spec says `scores`)."""
        results: list[ScoreResult] = self._call("score", list(requests))
        return results

    def _call(self, kind: str, value: Any) -> Any:
        self._send((kind, value))
        message = self._receive(self.stream_timeout_s, kind)
        if message[0] != "ok":
            raise EngineDied(f"engine raised: {_last_line(message[1])}")
        return message[1]

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._conn is None:
            raise EngineDied("engine is not running")
        try:
            self._conn.send(message)
        except (BrokenPipeError, OSError) as exc:
            raise self._died(f"pipe to the engine broke ({exc})") from None

    def _receive(self, timeout_s: float, doing: str) -> tuple[Any, ...]:
        assert self._conn is not None and self._process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            # Poll in short slices so that a dead child is noticed at once.
            if self._conn.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                try:
                    message: tuple[Any, ...] = self._conn.recv()
                    return message
                except (EOFError, OSError):
                    raise self._died(f"engine process closed its pipe while {doing}") from None
            if not self._process.is_alive():
                raise self._died(f"engine process died while {doing}")
            if time.monotonic() >= deadline:
                raise self._died(f"engine gave no sign of life for {timeout_s:.0f} s while {doing}")

    def _died(self, what: str) -> EngineDied:
        what = self._terminated_because or what
        self._streaming = False
        self._stop_process()
        code = self._process.exitcode if self._process is not None else None
        cause = (
            f"killed by signal {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exit code {code}"
        )
        self.death_cause = f"{what} ({cause})"
        return EngineDied(f"{self.death_cause}\n{self.log_errors()}")

    def _stop_process(self) -> None:
        process = self._process
        if process is None:
            return
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        process.join(timeout=0.1)
        # The child leads its own process group: end it and everything it started.
        end_group(process.pid, 10.0, lambda seconds: process.join(timeout=seconds))
        process.join(timeout=1.0)
        if not group_alive(process.pid):
            reaper.forget(process.pid)

    def close(self) -> None:
        """Stop the child and wait until its GPUs' memory is back (bounded)."""
        if self._process is None:
            return
        # A child still streaming (the run was interrupted mid-round) would read the
        # ("close",) only after its round: end its group at once instead.
        if self._conn is not None and self._process.is_alive() and not self._streaming:
            try:
                self._conn.send(("close",))
                self._process.join(timeout=30.0)
            except (BrokenPipeError, OSError):
                pass
        self._stop_process()
        self.released = self._wait_for_release()
        self._process = None
        if self.death_cause is None:  # no message names the log: it goes with the engine
            self._log_path.unlink(missing_ok=True)

    def _wait_for_release(self) -> dict[str, Any]:
        started = time.monotonic()
        deadline = started + self.release_timeout_s
        baseline = self._baseline or {}
        used = gpu_memory_used(self._physical)
        while (
            used is not None
            and time.monotonic() < deadline
            and any(used[i] > baseline.get(i, 0) + RELEASE_SLACK_BYTES for i in used)
        ):
            time.sleep(0.2)
            used = gpu_memory_used(self._physical)
        return {
            "gpus": list(self._physical),
            "baseline_bytes": baseline,
            "after_bytes": used,
            "waited_s": time.monotonic() - started,
        }


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def _last_line(text: str, limit: int = 2000) -> str:
    """The final exception of a traceback: its type and its whole message.

    Not just the last line: pydantic's ValidationError (vLLM's config errors) ends with
    a link, and the cause is in the lines before it.
    """
    lines = [line for line in text.strip().splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    if not starts:
        return lines[-1] if lines else text
    return "\n".join(lines[starts[-1] :])[:limit]
