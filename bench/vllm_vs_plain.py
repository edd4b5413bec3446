"""vLLM through the plugin vs a plain `LLM.generate` script, side by side in one run.

One configuration (built-in tiny model, CPU build of vLLM) is measured two ways:

- "plain": a subprocess running this file with `--plain-worker`: `vllm.LLM(...)`, the
  same prompts the plugin builds (`SyntheticWorkload.build` over vLLM's tokenizer,
  `encode` without special tokens), one warm-up round, then R measured rounds of
  `llm.generate(prompts, params, use_tqdm=False)`, each timed with
  `time.perf_counter()` around the call alone.
- "plugin": a subprocess running pytest on a generated test module that calls
  `llmperf.measure(...)` with `--engine vllm`; the number is `output_tok_per_s` from
  the run's `summary.json`. It includes everything the plugin adds to a round: the
  engine's child process, requests and chunks crossing a pipe, per-request records.

The arms take turns for `--trials` pairs so that machine drift hits both. The default
order is ABBA (plain, plugin, plugin, plain, ...): with plain-then-plugin in every pair,
anything that favours odd or even places in the sequence (another tenant's periodic
job on a shared machine did, while this was written) favours one arm in every pair;
`--order alternate` gives that plain order. The report gives each arm's median over
trials, the ratio of medians (plugin / plain), the median of the per-pair ratios and
the ratio of the median rounds.

Two smaller measurements say where the plugin's time goes, free of most of that noise:
"outside decode ms/round" is the part of each round not spent between the call into
`LLM.generate` and the batch's last token (vLLM's own timestamps: for the plain script,
vLLM's tail; for the plugin, that plus pipe, sampling parameters and records), and
`--pipe-reps` times the pipe alone: a round's requests out and its chunks back through
a spawn `Pipe`, as `engines.isolated` sends them, with no engine behind it.

    .venv/bin/python bench/vllm_vs_plain.py --json bench-out.json

output tok/s = output tokens of the measured rounds / their summed wall time, in both
arms (the plugin's definition, `pytest_llmperf.measure.metrics`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOAL_RATIO = 0.97
#: The same KV-cache size the plugin's vllm engine picks on a CPU (GiB).
KVCACHE_SPACE_GIB = "1"


@dataclass(frozen=True)
class Settings:
    """The one configuration both arms run."""

    requests: int = 64
    input_tokens: int = 64
    output_tokens: int = 128
    max_num_seqs: int = 16
    max_model_len: int = 512
    rounds: int = 5
    warmup_rounds: int = 1

    def worker_args(self) -> list[str]:
        return [f"--{k.replace('_', '-')}={v}" for k, v in asdict(self).items()]


@dataclass(frozen=True)
class ArmResult:
    """One trial of one arm."""

    arm: str
    trial: int
    output_tok_per_s: float
    round_tok_per_s: tuple[float, ...]
    output_tokens: int
    prompt_tokens: int
    engine_start_s: float | None
    process_wall_s: float
    #: Per round: wall time not spent between the call into `LLM.generate` and the last
    #: token (`engine_timings`), in ms: the plain script's is vLLM's own tail (outputs
    #: after the last token); the plugin's adds everything the plugin does in a round.
    outside_ms: tuple[float, ...]


@dataclass(frozen=True)
class Report:
    """Every trial of a run, and the ratios drawn from them."""

    settings: Settings
    trials: tuple[ArmResult, ...]
    pipe_overhead_ms: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def arm(self, name: str) -> list[ArmResult]:
        return [t for t in self.trials if t.arm == name]

    def median(self, name: str, attr: str) -> float | None:
        values = [getattr(t, attr) for t in self.arm(name) if getattr(t, attr) is not None]
        return statistics.median(values) if values else None

    def rounds(self, name: str) -> list[float]:
        """Every measured round's output tok/s of one arm, over all its trials."""
        return [v for t in self.arm(name) for v in t.round_tok_per_s]

    def outside_ms(self, name: str) -> float:
        """Median over every round of one arm of `ArmResult.outside_ms`."""
        return statistics.median(v for t in self.arm(name) for v in t.outside_ms)

    @property
    def round_ratio(self) -> float:
        """Median round of the plugin / median round of the plain script."""
        return statistics.median(self.rounds("plugin")) / statistics.median(self.rounds("plain"))

    @property
    def best_round_ratio(self) -> float:
        """Fastest round of the plugin / fastest round of the plain script.

        Other tenants of a shared machine only ever slow a round down, so the fastest
        rounds are the ones they disturbed least (`timeit` reports its minimum for the
        same reason).
        """
        return max(self.rounds("plugin")) / max(self.rounds("plain"))

    @property
    def ratio_of_medians(self) -> float:
        """The headline: median trial of the plugin / median trial of the plain script."""
        plain = self.median("plain", "output_tok_per_s")
        plugin = self.median("plugin", "output_tok_per_s")
        if plain is None or plugin is None:
            raise ValueError("both arms need at least one trial")
        return plugin / plain

    @property
    def pair_ratios(self) -> list[float]:
        """Plugin / plain within each trial (the two arms ran next to each other)."""
        plain = {t.trial: t.output_tok_per_s for t in self.arm("plain")}
        return [t.output_tok_per_s / plain[t.trial] for t in self.arm("plugin") if t.trial in plain]

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "settings": asdict(self.settings),
            "trials": [asdict(t) for t in self.trials],
            "median_output_tok_per_s": {
                arm: self.median(arm, "output_tok_per_s") for arm in ("plain", "plugin")
            },
            "median_engine_start_s": {
                arm: self.median(arm, "engine_start_s") for arm in ("plain", "plugin")
            },
            "median_round_tok_per_s": {
                arm: statistics.median(self.rounds(arm)) for arm in ("plain", "plugin")
            },
            "median_outside_decode_ms": {arm: self.outside_ms(arm) for arm in ("plain", "plugin")},
            "ratio_of_medians": self.ratio_of_medians,
            "ratio_of_median_rounds": self.round_ratio,
            "ratio_of_best_rounds": self.best_round_ratio,
            "median_of_pair_ratios": statistics.median(self.pair_ratios),
            "pair_ratios": self.pair_ratios,
            "goal_ratio": GOAL_RATIO,
            "pipe_overhead_ms_per_round": self.pipe_overhead_ms,
            **self.extra,
        }


# --- plain arm --------------------------------------------------------------------


def plain_worker(settings: Settings, out: Path) -> None:
    """The plain script: `LLM.generate` timed around the call alone; JSON to `out`."""
    started = time.perf_counter()
    import vllm

    from pytest_llmperf import SyntheticWorkload
    from pytest_llmperf.engines.vllm.offline import _VLLMTokenizer  # the engine's own wrapper
    from pytest_llmperf.models.names import tiny_model_path

    llm = vllm.LLM(
        model=str(tiny_model_path()),
        dtype="bfloat16",
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        enforce_eager=True,
        enable_prefix_caching=False,
        seed=0,
        disable_log_stats=False,
    )
    engine_start_s = time.perf_counter() - started
    workload = SyntheticWorkload(
        num_requests=settings.requests,
        input_tokens=settings.input_tokens,
        output_tokens=settings.output_tokens,
    )
    requests = workload.build(_VLLMTokenizer(llm.get_tokenizer()))
    prompts = [r.prompt for r in requests if r.prompt is not None]
    if len(prompts) != len(requests):
        raise TypeError("SyntheticWorkload was expected to build text prompts")
    n = settings.output_tokens
    params = [
        vllm.SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0)
    ] * len(prompts)
    for _ in range(settings.warmup_rounds):
        llm.generate(prompts, params, use_tqdm=False)
    tokens: list[int] = []
    seconds: list[float] = []
    outside_ms: list[float] = []
    prompt_tokens = 0
    for _ in range(settings.rounds):
        t0 = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds.append(time.perf_counter() - t0)
        # vLLM's timestamps are time.monotonic(), perf_counter's clock on Linux.
        outside_ms.append((time.monotonic() - _last_token_ts(outputs)) * 1e3)
        tokens.append(sum(len(o.outputs[0].token_ids) for o in outputs))
        prompt_tokens += sum(len(o.prompt_token_ids or ()) for o in outputs)
    result = {
        "output_tok_per_s": sum(tokens) / sum(seconds),
        "round_tok_per_s": [k / s for k, s in zip(tokens, seconds, strict=True)],
        "output_tokens": sum(tokens),
        "prompt_tokens": prompt_tokens,
        "engine_start_s": engine_start_s,
        "outside_ms": outside_ms,
    }
    out.write_text(json.dumps(result), encoding="utf-8")


def _last_token_ts(outputs: Sequence[Any]) -> float:
    """The last token of a batch, from vLLM's per-request stats (`disable_log_stats=False`)."""
    stamps = [o.metrics.last_token_ts for o in outputs if o.metrics is not None]
    if len(stamps) != len(outputs):
        raise RuntimeError("vLLM returned no per-request stats: is disable_log_stats off?")
    return float(max(stamps))


def _env() -> dict[str, str]:
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": KVCACHE_SPACE_GIB}


def _run_logged(command: list[str], log: Path, cwd: Path) -> float:
    started = time.perf_counter()
    with open(log, "wb") as handle:
        code = subprocess.call(
            command, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, env=_env()
        )
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{command[:4]} exited with {code}; log {log}:\n{tail}")
    return time.perf_counter() - started


def run_plain(settings: Settings, workdir: Path, trial: int) -> ArmResult:
    out = workdir / f"plain-{trial}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--plain-worker", f"--out={out}"]
    wall = _run_logged(command + settings.worker_args(), workdir / f"plain-{trial}.log", REPO)
    data = json.loads(out.read_text(encoding="utf-8"))
    return ArmResult(
        "plain",
        trial,
        data["output_tok_per_s"],
        tuple(data["round_tok_per_s"]),
        data["output_tokens"],
        data["prompt_tokens"],
        data["engine_start_s"],
        wall,
        tuple(data["outside_ms"]),
    )


# --- plugin arm -------------------------------------------------------------------

_TEST_MODULE = """\
from pytest_llmperf import Config, SyntheticWorkload


def test_vllm_vs_plain(llmperf):
    config = Config.make(
        "bench",
        {{
            "max_model_len": {max_model_len},
            "max_num_seqs": {max_num_seqs},
            "dtype": "bfloat16",
            "enforce_eager": True,
            "enable_prefix_caching": False,
            "seed": 0,
        }},
    )
    workload = SyntheticWorkload(
        num_requests={requests}, input_tokens={input_tokens}, output_tokens={output_tokens}
    )
    result = llmperf.measure(
        config, workload, rounds={rounds}, warmup_rounds={warmup_rounds}
    )
    assert result.metrics.failures == 0
"""


def run_plugin(settings: Settings, workdir: Path, trial: int) -> ArmResult:
    trial_dir = workdir / f"plugin-{trial}"
    results = trial_dir / "results"
    results.mkdir(parents=True)
    test_file = trial_dir / "test_vllm_vs_plain.py"
    test_file.write_text(_TEST_MODULE.format(**asdict(settings)), encoding="utf-8")
    bench_json = trial_dir / "benchmark.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(test_file),
        "--engine=vllm",
        f"--llmperf-results-dir={results}",
        f"--benchmark-json={bench_json}",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    # cwd is the trial folder: no ini file and no thresholds apply, only the options above.
    wall = _run_logged(command, trial_dir / "pytest.log", trial_dir)
    (summary_path,) = results.glob("*/summary.json")
    test = json.loads(summary_path.read_text(encoding="utf-8"))["tests"][0]
    # pytest-benchmark's time of each measured round (our `one_round`, run_round inside).
    round_s = json.loads(bench_json.read_text(encoding="utf-8"))["benchmarks"][0]["stats"]["data"]
    rounds = _rounds(results)
    if sorted(rounds) != list(range(len(round_s))):
        raise RuntimeError(f"{results}: rounds {sorted(rounds)} vs {len(round_s)} timed")
    return ArmResult(
        "plugin",
        trial,
        test["metrics"]["output_tok_per_s"],
        tuple(rounds[i].output_tokens / s for i, s in enumerate(round_s)),
        sum(r.output_tokens for r in rounds.values()),
        sum(r.prompt_tokens for r in rounds.values()),
        test["engine_load_s"],
        wall,
        tuple((s - rounds[i].max_e2e_ms / 1e3) * 1e3 for i, s in enumerate(round_s)),
    )


@dataclass
class _Round:
    output_tokens: int = 0
    prompt_tokens: int = 0
    max_e2e_ms: float = 0.0


def _rounds(results: Path) -> dict[int, _Round]:
    """Per measured round, from the run's requests.jsonl: tokens and the last token."""
    rounds: dict[int, _Round] = {}
    for path in results.glob("*/requests*.jsonl"):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = json.loads(line)
                r = rounds.setdefault(record["round"], _Round())
                r.output_tokens += record["output_tokens"]
                r.prompt_tokens += record["prompt_tokens"] or 0
                # e2e_ms runs from just before `LLM.generate` to the request's last token.
                r.max_e2e_ms = max(r.max_e2e_ms, record["e2e_ms"] or 0.0)
    return rounds


# --- the pipe alone ---------------------------------------------------------------


def _echo_child(conn: Connection, output_tokens: int) -> None:
    """Answers ("stream", requests) with one chunk per request, as isolated_child does."""
    from pytest_llmperf import StreamChunk

    while True:
        message = conn.recv()
        if message[0] == "close":
            return
        for index, _request in enumerate(message[1]):
            ids = tuple(range(7, 7 + output_tokens))
            chunk = StreamChunk(index, ids, "length", prompt_tokens=64, text="word " * len(ids))
            conn.send(("chunk", chunk))
        conn.send(("done",))


def pipe_overhead_ms(settings: Settings, reps: int) -> float:
    """Median ms for one round's requests out and chunks back over a spawn `Pipe`."""
    import multiprocessing

    from pytest_llmperf import GenerationRequest, SamplingParams

    requests = [
        GenerationRequest(
            custom_id=f"synthetic-{i}",
            prompt="word " * settings.input_tokens,
            sampling=SamplingParams.fixed_length(settings.output_tokens, seed=i),
        )
        for i in range(settings.requests)
    ]
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_echo_child, args=(child, settings.output_tokens))
    process.start()
    child.close()
    times: list[float] = []
    try:
        for rep in range(reps + 1):  # the first, untimed, waits for the child to start
            t0 = time.perf_counter()
            parent.send(("stream", requests))
            while parent.recv()[0] != "done":
                pass
            if rep:
                times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        parent.send(("close",))
        process.join(timeout=10)
    return statistics.median(times)


# --- report -----------------------------------------------------------------------


def markdown(report: Report) -> str:
    s = report.settings
    lines = [
        f"{s.requests} requests x {s.input_tokens} in / {s.output_tokens} out tokens, "
        f"max_num_seqs {s.max_num_seqs}, max_model_len {s.max_model_len}, "
        f"{s.warmup_rounds} warm-up + {s.rounds} measured rounds per trial, "
        f"arms in {report.extra.get('order', 'abba')} order (rows in run order)",
        "",
        "| trial | arm | output tok/s | per round tok/s | outside decode ms/round "
        "| engine start s | process wall s |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for t in report.trials:
        rounds = ", ".join(f"{v:,.0f}" for v in t.round_tok_per_s)
        start = f"{t.engine_start_s:.1f}" if t.engine_start_s is not None else "-"
        lines.append(
            f"| {t.trial} | {t.arm} | {t.output_tok_per_s:,.0f} | {rounds} "
            f"| {statistics.median(t.outside_ms):.1f} | {start} | {t.process_wall_s:.1f} |"
        )
    for arm in ("plain", "plugin"):
        tok = report.median(arm, "output_tok_per_s")
        start_s = report.median(arm, "engine_start_s")
        wall = report.median(arm, "process_wall_s")
        lines.append(
            f"| median | {arm} | {tok or 0:,.0f} | {statistics.median(report.rounds(arm)):,.0f} "
            f"(all rounds) | {report.outside_ms(arm):.1f} | {start_s or 0:.1f} "
            f"| {wall or 0:.1f} |"
        )
    pairs = ", ".join(f"{r:.3f}" for r in report.pair_ratios)
    counts = {(t.output_tokens, t.prompt_tokens) for t in report.trials}
    same = (
        "the same in every trial of both arms"
        if len(counts) == 1
        else "DIFFER between trials: the arms did not run the same work"
    )
    added_ms = report.outside_ms("plugin") - report.outside_ms("plain")
    round_ms = s.requests * s.output_tokens / statistics.median(report.rounds("plain")) * 1e3
    lines += [
        "",
        f"plugin / plain, ratio of medians: **{report.ratio_of_medians:.3f}** "
        f"(goal >= {GOAL_RATIO}); median of pair ratios: "
        f"{statistics.median(report.pair_ratios):.3f} (pairs: {pairs}); "
        f"ratio of the medians of all rounds: {report.round_ratio:.3f}; "
        f"of the best rounds: {report.best_round_ratio:.3f}",
        f"measured output / prompt tokens per trial: "
        f"{', '.join(f'{o:,} / {p:,}' for o, p in sorted(counts))}, {same}",
        f"plugin's time per round outside vLLM's decoding, above the plain script's: "
        f"{added_ms:.1f} ms of a {round_ms:,.0f} ms round ({added_ms / round_ms:.1%})",
    ]
    if report.pipe_overhead_ms is not None:
        lines.append(
            f"pipe alone (a round's requests out, its chunks back): "
            f"{report.pipe_overhead_ms:.2f} ms per round"
        )
    return "\n".join(lines)


_SETTING_HELP = {
    "requests": "requests per round, all sent at once",
    "input_tokens": "prompt length in the model's tokens",
    "output_tokens": "output tokens per request, exactly (EOS ignored)",
    "max_num_seqs": "vLLM's max_num_seqs",
    "max_model_len": "vLLM's max_model_len",
    "rounds": "measured rounds per trial and arm",
    "warmup_rounds": "discarded rounds before them",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    for name, value in asdict(Settings()).items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=value,
            help=f"{_SETTING_HELP[name]} (default: {value})",
        )
    parser.add_argument("--trials", type=int, default=4, help="pairs of arms (default: 4)")
    parser.add_argument(
        "--order",
        choices=("abba", "alternate"),
        default="abba",
        help="abba: plain, plugin, plugin, plain, ...; alternate: plain, plugin, plain, "
        "plugin, ... (default: abba)",
    )
    parser.add_argument(
        "--pipe-reps", type=int, default=20, help="pipe-alone repetitions, 0 skips (default: 20)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep every arm's logs and results in this folder (default: a temporary one)",
    )
    parser.add_argument("--plain-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings(**{k: getattr(args, k) for k in asdict(Settings())})
    if args.plain_worker:
        if args.out is None:
            raise SystemExit("--plain-worker needs --out")
        plain_worker(settings, args.out)
        return 0
    trials: list[ArmResult] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vllm-vs-plain-") as tmp:
        workdir = Path(tmp) if args.keep is None else args.keep
        if workdir.exists() and any(workdir.iterdir()):
            raise SystemExit(f"--keep: {workdir} is not empty")
        workdir.mkdir(parents=True, exist_ok=True)
        for trial in range(1, args.trials + 1):
            pair = (run_plain, run_plugin)
            for run in pair if args.order == "alternate" or trial % 2 else pair[::-1]:
                result = run(settings, workdir, trial)
                print(
                    f"trial {trial} {result.arm:>6}: {result.output_tok_per_s:,.0f} out tok/s "
                    f"(engine start {result.engine_start_s or 0:.1f} s, "
                    f"process {result.process_wall_s:.1f} s)",
                    flush=True,
                )
                trials.append(result)
    pipe = pipe_overhead_ms(settings, args.pipe_reps) if args.pipe_reps > 0 else None
    report = Report(
        settings,
        tuple(trials),
        pipe,
        {
            "order": args.order,
            "bench_wall_s": time.perf_counter() - started,
            "command": sys.argv,
        },
    )
    print()
    print(markdown(report))
    if args.json is not None:
        text = json.dumps(report.as_dict(), indent=2, allow_nan=False)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
