"""How often the A/B gate flags B: the same engine slowed by a known fraction, and not at all.

Issue 26's "Done when" #1, in A/B form: every trial is one test that measures A and B in turns
through `llmperf.compare` (`pytest_llmperf.plugin.ab`) with `rounds="auto"`, A the hf engine
on the built-in tiny model and B the same engine slowed by the instrument of
`bench/slowdown.py` (every interval the harness times stretched by 1 / (1 - f)), each a fresh
engine instance started for the trial. The trial's bound is `speedup: {min: BOUND}` (default
0.98: B may be 2% slower than A before it counts), judged as every bound is (Holm, alpha
spending over the looks of rounds until decided); a trial **flags** B when the bound is missed.

Arms (the issue's targets in brackets):

    A/B, 5% slower    B slowed by `--slowdown` (0.05), `--trials-slow` (50) trials   [>= 95%]
    A/A, unchanged    B not slowed, `--trials-same` (100) trials                     [<= 2%]

Caps per trial: at most `--max-pairs` (10) pairs of turns and `--max-seconds` (60) seconds of
measured turns (`--llmperf-max-rounds` and `--llmperf-max-seconds`, which count pairs in an
A/B test), from `--min-pairs` (3) on. The arms' trials take turns through the run (ABBA, as
`bench/gate_power.py`'s `schedule` spreads them), all in one pytest process (torch is imported
once); `--minutes` skips the trials left when the budget is spent, and the report says how
many ran.

Report (JSON with `--json`, a markdown table on stdout for BENCHMARKS.md): per arm, trials,
flags, rate, its 95% Clopper-Pearson interval (`bench/gate_report.py`), target, inconclusive
and errors, pairs per trial and seconds of measured turns (p10 / median / p90), and the
speedup each arm measured (median of the trials' B/A). The lead runs the long form on a quiet
machine; the short form in `tests/test_ab_power.py` checks the machinery, not the rates.

    .venv/bin/python bench/ab_power.py --json ab_power.json            # the issue's form
    .venv/bin/python bench/ab_power.py --trials-slow 4 --trials-same 4 # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: the project root holds `bench` and the plugin
    sys.path.insert(0, str(REPO))

from bench.gate_power import schedule  # noqa: E402
from bench.gate_report import ArmSpec, Target, clopper_pearson, spread  # noqa: E402
from bench.slowdown import slowed  # noqa: E402
from pytest_llmperf.results.runs import read_run  # noqa: E402

if TYPE_CHECKING:
    from pytest_llmperf.engines.base import Engine, EngineConfig

SLOW, SAME = "A/B, slower", "A/A, unchanged"
#: The workloads a trial may measure: the smoke suite's batch8 decode and single request.
WORKLOADS = {
    "batch8": "SyntheticWorkload(num_requests=16, input_tokens=64, output_tokens=32)",
    "single": "SyntheticWorkload(num_requests=1, input_tokens=128, output_tokens=64)",
    "small": "SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=8)",
}
TRIAL_TEST = """
import json, os, time

import pytest
from pytest_llmperf import SyntheticWorkload
from bench.ab_power import slowed_engine

PLAN = json.loads(os.environ["LLMPERF_AB_PLAN"])
DEADLINE = float(os.environ["LLMPERF_AB_DEADLINE"])
WORKLOAD = {workload}


@pytest.mark.parametrize("trial", range(len(PLAN)))
def test_trial(llmperf, trial):
    if time.time() > DEADLINE:
        pytest.skip("the benchmark's time budget is spent")
    config = llmperf.engine_config()
    a, b = slowed_engine(config, 0.0), slowed_engine(config, PLAN[trial])
    llmperf.compare(a, b, WORKLOAD, rounds="auto", warmup_rounds={warmup})
"""
KEY = "test_ab_trials.py::test_trial*"


def slowed_engine(config: EngineConfig, fraction: float) -> Engine:
    """A new hf engine (not started) whose stream `bench/slowdown.py` slows by `fraction`;
    0 goes through the same wrapper, so that A and B differ only in the fraction."""
    from pytest_llmperf.engines.hf.engine import HFEngine

    engine = HFEngine(config)
    stream = slowed(HFEngine.stream, fraction)
    engine.stream = types.MethodType(stream, engine)  # type: ignore[method-assign]
    return engine


def arms_of(args: argparse.Namespace) -> list[ArmSpec]:
    slower = f"{args.slowdown:.0%} slower"
    return [
        ArmSpec(f"A/B, {slower}", "thresholds", args.slowdown, args.trials_slow,
                Target("at_least", 0.95)),
        ArmSpec(SAME, "thresholds", 0.0, args.trials_same, Target("at_most", 0.02)),
    ]  # fmt: skip


def run_trials(args: argparse.Namespace, plan: Sequence[ArmSpec], work: Path) -> Path:
    """One pytest process that runs every planned trial; returns its run folder."""
    (work / "test_ab_trials.py").write_text(
        textwrap.dedent(TRIAL_TEST).format(workload=WORKLOADS[args.workload], warmup=args.warmup)
    )
    folder = work / "thresholds" / "cpu"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hf.yaml").write_text(
        f'schema: 1\ntests:\n  "{KEY}":\n    speedup: {{min: {args.bound}}}\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "LLMPERF_AB_PLAN": json.dumps([arm.slowdown for arm in plan]),
        "LLMPERF_AB_DEADLINE": str(time.time() + args.minutes * 60),
    }
    command = [
        sys.executable, "-m", "pytest", "test_ab_trials.py", "-p", "no:randomly", "-q",
        "-p", "no:cacheprovider", f"--llmperf-min-rounds={args.min_pairs}",
        f"--llmperf-max-rounds={args.max_pairs}", f"--llmperf-max-seconds={args.max_seconds}",
        f"--llmperf-alpha={args.alpha}", "--gpus", "cpu",
    ]  # fmt: skip
    subprocess.run(command, cwd=work, env=env, check=False, stdout=subprocess.DEVNULL)
    runs = sorted((work / "results").glob("2*"))
    if not runs:
        raise SystemExit(f"the trials left no run in {work / 'results'}")
    return runs[-1]


def trial_result(record: Any) -> dict[str, Any]:
    """One trial's verdict on `speedup`, pairs, measured seconds and measured B/A."""
    checks = [c for c in record.thresholds.checked if c.metric == "speedup"]
    verdict = checks[0].verdict if checks else "error"
    stop = record.stop
    seconds = sum(record.metric(f"{side}.duration_s") or 0.0 for side in ("a", "b"))
    return {
        "verdict": {"missed": "flagged", "met": "cleared"}.get(verdict, verdict),
        "pairs": stop.rounds if stop is not None else record.rounds,
        "stop": stop.reason if stop is not None else "fixed",
        "seconds": seconds,
        "speedup": record.metric("speedup"),
    }


def report(plan: Sequence[ArmSpec], arms: Sequence[ArmSpec], run: Path) -> dict[str, Any]:
    ran = read_run(run)
    records = {t.test_id: t for t in ran.tests}
    outcomes = ran.summary.get("outcomes") or {}
    out = []
    for arm in arms:
        keys = [f"test_ab_trials.py::test_trial[{i}]" for i, p in enumerate(plan) if p is arm]
        # A trial ran when it left a record; one pytest failed without a record is an error
        # (an engine that did not start, say); a skipped one (the budget) did not run.
        trials = [
            trial_result(records[key]) if key in records else {"verdict": "error"}
            for key in keys
            if key in records or outcomes.get(key) == "failed"
        ]
        out.append(summarize(arm.name, arm.slowdown, arm.trials, arm.target, trials))
    return {"run": str(run), "arms": out}


def summarize(
    name: str, slowdown: float, planned: int, target: Target | None, trials: list[dict[str, Any]]
) -> dict[str, Any]:
    """One arm's counts, rate with its interval, and spreads, from its trials' results."""
    verdicts = [t["verdict"] for t in trials]
    flags = verdicts.count("flagged")
    rate = flags / len(trials) if trials else None
    speedups = [t["speedup"] for t in trials if t.get("speedup")]
    return {
        "name": name,
        "slowdown": slowdown,
        "planned": planned,
        "trials": len(trials),
        "flags": flags,
        "cleared": verdicts.count("cleared"),
        "inconclusive": verdicts.count("inconclusive"),
        "errors": verdicts.count("error"),
        "rate": rate,
        "ci95": list(clopper_pearson(flags, len(trials))) if trials else None,
        "target": str(target),
        "target_met": target.met(rate) if target and rate is not None else None,
        "pairs": spread([float(t["pairs"]) for t in trials if "pairs" in t]),
        "seconds": spread([t["seconds"] for t in trials if "seconds" in t]),
        "stops": {s: [t.get("stop") for t in trials].count(s) for s in _stops(trials)},
        "speedup_median": statistics.median(speedups) if speedups else None,
        "results": trials,
    }


def merge(parts: Sequence[Path], arms: Sequence[ArmSpec]) -> dict[str, Any]:
    """Several reports (runs of this benchmark side by side, each on cores of its own) as
    one: each arm's trials joined, its rate and interval computed again from all of them."""
    loaded = [json.loads(part.read_text()) for part in parts]
    targets = {arm.name: arm.target for arm in arms}
    out = []
    for name in [arm["name"] for arm in loaded[0]["arms"]]:
        mine = [arm for report in loaded for arm in report["arms"] if arm["name"] == name]
        trials = [t for arm in mine for t in arm["results"]]
        planned = sum(arm["planned"] for arm in mine)
        out.append(summarize(name, mine[0]["slowdown"], planned, targets.get(name), trials))
    return {"run": [report["run"] for report in loaded], "arms": out, "parts": len(loaded)}


def _stops(trials: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({str(t["stop"]) for t in trials if "stop" in t})


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| arm | trials | flagged | rate [95% CI] | target | inconclusive | errors | pairs "
        "p10/p50/p90 | seconds p50 | B/A median |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm in result["arms"]:
        low, high = arm["ci95"] or (None, None)
        rate = "-" if arm["rate"] is None else f"{arm['rate']:.1%} [{low:.1%}, {high:.1%}]"
        pairs = arm["pairs"]
        rows.append(
            f"| {arm['name']} | {arm['trials']}/{arm['planned']} | {arm['flags']} | {rate} | "
            f"{arm['target']} | {arm['inconclusive']} | {arm['errors']} | "
            f"{_n(pairs['p10'])}/{_n(pairs['p50'])}/{_n(pairs['p90'])} | "
            f"{_n(arm['seconds']['p50'])} | {_n(arm['speedup_median'], 3)} |"
        )
    return "\n".join(rows)


def _n(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--slowdown", type=float, default=0.05, help="B's slowdown (default: 0.05)")
    add("--trials-slow", type=int, default=50, help="trials with B slowed (default: 50)")
    add("--trials-same", type=int, default=100, help="A/A trials (default: 100)")
    add("--bound", type=float, default=0.98, help="the speedup bound, min (default: 0.98)")
    add("--min-pairs", type=int, default=3, help="pairs before the first look (default: 3)")
    add("--max-pairs", type=int, default=10, help="pairs at most per trial (default: 10)")
    add("--max-seconds", type=float, default=60.0, help="measured s per trial (default: 60)")
    add("--warmup", type=int, default=2, help="warm-up rounds of each side (default: 2)")
    add("--alpha", type=float, default=0.01, help="the gate's error rate (default: 0.01)")
    add("--workload", choices=sorted(WORKLOADS), default="batch8", help="(default: batch8)")
    add("--minutes", type=float, default=240.0, help="time budget (default: 240)")
    add("--work", type=Path, help="folder for the trials' project (default: a temporary one)")
    add("--json", type=Path, help="write the report here as JSON")
    add(
        "--merge",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="join reports of runs made side by side (each --json) into one, and stop",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.slowdown < 1:
        raise SystemExit(f"--slowdown {args.slowdown}: expected a fraction in [0, 1)")
    arms = arms_of(args)
    if args.merge:
        result = merge(args.merge, arms)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(markdown(result))
        return 0
    plan = schedule([arm for arm in arms if arm.trials > 0])
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="ab_power_") as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        run = run_trials(args, plan, work)
        result = report(plan, arms, run)
    result["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result["wall_s"] = time.time() - started
    result["finished_all"] = all(a["trials"] == a["planned"] for a in result["arms"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
