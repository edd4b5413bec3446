"""How often the gate fails a test: unchanged, and with the hf engine slowed by a known amount.

Issue 22's "Done when", measured on the real hf engine with the built-in tiny model, on the
shipped `suites/test_smoke.py::test_decode_throughput[batch8]` and
`::test_single_request_latency` (`--tests` for others), with whatever thresholds the tree
holds. The instrument is `bench/slowdown.py`: it wraps `HFEngine.stream` so that every
interval the harness times stretches by 1 / (1 - f), throughput falling by the fraction f.

Arms (each a CLI option; the issue's targets in brackets):

    baseline, unchanged         judged against a baseline run (`--llmperf-compare`)  [<= 2%]
    baseline, 20% / 10% slower  the same, engine slowed (`--slowdowns`)    [>= 95% / >= 80%]
    thresholds, unchanged       judged against the shipped thresholds, no baseline   [<= 2%]
    thresholds, 30% slower      the same, slowed (`--threshold-slowdowns`)          [>= 95%]
    thresholds, unchanged, fresh process: the baseline runs themselves, each its own pytest
                                process, judged against the thresholds (no extra cost)

A trial runs every chosen test once and fails when the arm's gate says so in the test's
record in the run's tests.jsonl: a regression against the baseline (baseline arms) or a
missed bound (threshold arms), with pytest failing the test. Inconclusive trials (no
failure, something undecided) and errors (a test without its record) are counted apart, and
so are tests that pytest failed while the gate did not (the test's own assertions after
`measure()`): the gate's verdict stands for them. Rounds: `--llmperf-rounds auto` by
default, as a user would run the gate (`--rounds fixed` keeps the tests' own 3 and 5 rounds,
`--rounds N` sets N).

Method. One pytest process per trial would spend most of the hour importing torch, so the
trials run in blocks of `--block` trials. Each block is two pytest processes, one after the
other: a baseline run (the unchanged tests, measured as a user's run would be, no
`--llmperf-compare`), then a trial session with `--llmperf-compare <that run>` in which the
plugin `bench/gate_trials.py` runs the block's trials: every trial runs each test through
pytest's own protocol, judged under the test's own key, at the trial's slowdown, and with
the baseline set aside in threshold arms. So every baseline arm trial is judged against a
baseline measured in another process seconds to minutes before (as the issue's "a baseline
measured minutes before on the same machine"), and each block has a fresh one; `--pool N`
judges against the newest N baseline runs pooled (`--llmperf-compare RUN,RUN,...`, newest
first, as `latest:N` would give a user), whose spread measures the drift between runs
instead of assuming `--llmperf-drift`. Trials of one block share their baseline, so they are
not quite independent: the report's intervals take them as if they were. The trials'
order is balanced across arms: each arm's trials are spread evenly over the whole
schedule (trial j of an arm of n at (j + 0.5) / n, ties in arm order, reversed on every
other tie: ABBA when arms have equal counts), so every arm has the same mean place in the
run and a drift of the machine lands on all arms alike. The budget (`--minutes`): a block
starts only while a typical one (the median so far) fits, and no trial starts past the budget
less the longest trial so far, so a run stopped early has done about the same share of each
arm's trials and says so.

Report (JSON with `--json`, and markdown tables on stdout for BENCHMARKS.md): per arm,
trials, failures, rate, its 95% Clopper-Pearson interval (`bench/gate_report.py`), the
target, inconclusive and errors, seconds to a verdict per trial (the tests' calls, less
engine loading: warm-up, rounds and judging) and rounds per test (`record.stop`), p10 /
median / p90, and the slowdown each arm measured (throughput against the unchanged arms');
the drift between successive baseline runs; wall time.

    .venv/bin/python bench/gate_power.py --json gate_power.json          # the issue's form
    .venv/bin/python bench/gate_power.py --trials-unchanged 10 --trials-slow 10 \\
        --slowdowns 0.2 --threshold-trials-unchanged 0 --threshold-trials-slow 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: the project root holds `bench` and the plugin
    sys.path.insert(0, str(REPO))

from bench.gate_report import (  # noqa: E402
    ArmReport,
    ArmSpec,
    Target,
    TestResult,
    Trial,
    drift,
    markdown,
)
from pytest_llmperf.results.record import TestRecord  # noqa: E402
from pytest_llmperf.results.runs import read_run  # noqa: E402

TESTS = (
    "suites/test_smoke.py::test_decode_throughput[batch8]",
    "suites/test_smoke.py::test_single_request_latency",
)
#: The issue's targets, by (gate, slowdown).
TARGETS = {
    ("baseline", 0.0): Target("at_most", 0.02),
    ("baseline", 0.2): Target("at_least", 0.95),
    ("baseline", 0.1): Target("at_least", 0.80),
    ("thresholds", 0.0): Target("at_most", 0.02),
    ("thresholds", 0.3): Target("at_least", 0.95),
}
FRESH = "thresholds, unchanged, fresh process"


def arm_name(gate: str, slowdown: float) -> str:
    return f"{gate}, {'unchanged' if slowdown == 0 else f'{slowdown:.0%} slower'}"


def arms_of(args: argparse.Namespace) -> list[ArmSpec]:
    """The arms the options ask for, with the issue's target where it sets one."""
    on_baseline = [(0.0, args.trials_unchanged)]
    on_baseline += [(f, args.trials_slow) for f in args.slowdowns]
    on_thresholds = [(0.0, args.threshold_trials_unchanged)]
    on_thresholds += [(f, args.threshold_trials_slow) for f in args.threshold_slowdowns]
    arms = [
        ArmSpec(arm_name("baseline", f), "baseline", f, n, TARGETS.get(("baseline", f)))
        for f, n in on_baseline
    ]
    arms += [
        ArmSpec(arm_name("thresholds", f), "thresholds", f, n, TARGETS.get(("thresholds", f)))
        for f, n in on_thresholds
    ]
    return [arm for arm in arms if arm.trials > 0]


def schedule(arms: Sequence[ArmSpec]) -> list[ArmSpec]:
    """One entry per trial, each arm's trials spread evenly (the module docstring)."""
    places = [
        ((j + 0.5) / arm.trials, index if j % 2 == 0 else -index, arm)
        for index, arm in enumerate(arms)
        for j in range(arm.trials)
    ]
    return [arm for _, _, arm in sorted(places, key=lambda p: (p[0], p[1]))]


@dataclass(frozen=True)
class Options:
    tests: tuple[str, ...]
    rounds: list[str]
    pytest_args: list[str]
    work: Path


def pytest_run(
    options: Options,
    folder: Path,
    trials: list[dict[str, Any]],
    deadline: float,
    compare: Sequence[Path],
) -> tuple[Path, Path]:
    """One pytest process running `trials` (bench/gate_trials.py); its run folder and log."""
    folder.mkdir(parents=True)
    plan, steps = folder / "plan.json", folder / "steps.jsonl"
    plan.write_text(json.dumps({"trials": trials, "deadline": deadline, "log": str(steps)}))
    command = [sys.executable, "-m", "pytest", *options.tests, "-q", "-p", "no:cacheprovider"]
    command += ["-p", "bench.gate_trials", "--llmperf-results-dir", str(folder / "results")]
    if compare:  # newest first: its values are the ones shown
        command += ["--llmperf-compare", ",".join(str(run) for run in compare)]
    command += options.rounds
    command += options.pytest_args
    env = dict(os.environ, LLMPERF_GATE_TRIALS=str(plan))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("LLMPERF_SLOWDOWN", None)  # the trials set the instrument themselves
    log = folder / "pytest.log"
    with log.open("w", encoding="utf-8") as out:
        code = subprocess.run(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
    runs = sorted((folder / "results").glob("*/summary.json"))
    if code not in (0, 1) or len(runs) != 1:
        tail = "".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-30:])
        raise SystemExit(f"pytest exited {code} in {folder} ({' '.join(command)}):\n{tail}")
    return runs[0].parent, steps


@dataclass(frozen=True)
class Said:
    """What an arm's gate said of one test in its record."""

    #: Regressed against the baseline (baseline arms) or missed bounds (threshold arms).
    bad: tuple[str, ...] = ()
    inconclusive: bool = False
    #: Bounds missed in a baseline arm, where the thresholds are judged too.
    also_missed: tuple[str, ...] = ()
    #: The verdicts fail the test (pytest's failure is the gate's).
    explains: bool = False
    error: str | None = None


def judged(record: TestRecord, gate: str, strict: bool) -> Said:
    """What the arm's `gate` said in `record` (`strict`: --llmperf-strict was on)."""
    checked = record.thresholds.checked
    missed = tuple(c.metric for c in checked if c.verdict == "missed")
    if gate == "thresholds":
        undecided = any(c.verdict == "inconclusive" for c in checked)
        return Said(missed, undecided, explains=bool(missed) or (strict and undecided))
    if record.baseline is None or not record.baseline.found:
        return Said(error="no baseline verdict in the record")
    changes = record.baseline.judged
    regressed = tuple(j.metric for j in changes if j.verdict == "regressed")
    undecided = any(j.verdict == "inconclusive" for j in changes)
    fails = bool(regressed or missed) or (strict and undecided)
    return Said(regressed, undecided, missed, explains=fails)


def result_of(
    step: Mapping[str, Any], records: Sequence[TestRecord], gate: str, strict: bool
) -> TestResult:
    """One test of one trial from its step line and the records it appended."""
    if len(records) != 1 or records[0].test_id != step["test"]:
        missing = f"{len(records)} records for {step['test']} (expected its one)"
        if step.get("failure"):
            missing += f"; {step['failure']}"
        return TestResult(step["test"], step["outcome"], False, False, 0.0, 0, "-", error=missing)
    record = records[0]
    said = judged(record, gate, strict)
    error: str | None = said.error
    failed = step["outcome"] == "failed"
    if said.bad and not failed:
        error = f"the gate said {', '.join(said.bad)} but pytest says {step['outcome']}"
    stop = record.stop
    return TestResult(
        test=step["test"],
        outcome=step["outcome"],
        bad=bool(said.bad) and error is None,
        inconclusive=said.inconclusive,
        seconds=(step["call_s"] or 0.0) - float(record.engine_load_s or 0.0),
        rounds=stop.rounds if stop is not None else record.rounds,
        stop=stop.reason if stop is not None else "fixed",
        bad_metrics=said.bad,
        also_missed=said.also_missed,
        error=error,
        other_failure=step.get("failure") if failed and not said.explains else None,
        output_tok_per_s=record.metric("output_tok_per_s"),
    )


def trials_of(
    run_dir: Path, steps_path: Path, gates: Mapping[str, str], block: int
) -> tuple[list[Trial], list[TestRecord]]:
    """The trials a session ran, paired with their records in its tests.jsonl."""
    run = read_run(run_dir)
    records = list(run.tests)
    strict = bool(run.summary.get("settings", {}).get("gate", {}).get("strict"))
    steps = [json.loads(line) for line in steps_path.read_text(encoding="utf-8").splitlines()]
    by_trial: dict[int, list[TestResult]] = {}
    names: dict[int, str] = {}
    before = 0
    for step in steps:
        mine = records[before : step["records"]]
        before = step["records"]
        by_trial.setdefault(step["trial"], []).append(
            result_of(step, mine, gates[step["arm"]], strict)
        )
        names[step["trial"]] = step["arm"]
    trials = [Trial(i, names[i], block, tuple(tests)) for i, tests in by_trial.items()]
    return trials, records


def samples_by_test(records: Sequence[TestRecord]) -> dict[str, dict[str, list[float]]]:
    return {
        r.test_id: {m: [float(v) for v in vs if v is not None] for m, vs in r.samples.items()}
        for r in records
    }


class Bench:
    """The blocks of a benchmark, run one after the other, and what they found."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.arms = arms_of(args)
        rounds = [] if args.rounds == "fixed" else ["--llmperf-rounds", args.rounds]
        work = Path(args.work or tempfile.mkdtemp(prefix="gate-power-"))
        self.options = Options(tuple(args.tests), rounds, list(args.pytest_arg), work)
        self.fresh = ArmSpec(FRESH, "thresholds", 0.0, 0, TARGETS[("thresholds", 0.0)], True)
        self.reports = {a.name: ArmReport(a) for a in [*self.arms, self.fresh]}
        self.gates = {a.name: a.gate for a in [*self.arms, self.fresh]}
        self.baseline_samples: list[dict[str, dict[str, list[float]]]] = []
        #: Every baseline run so far, oldest first; a block compares with the newest `--pool`.
        self.baseline_runs: list[Path] = []
        self.records: list[TestRecord] = []
        self.metadata: dict[str, Any] = {}
        self.finished_all = False

    def run(self) -> None:
        """Block after block until the schedule or the budget (`--minutes`) ends."""
        order, size = schedule(self.arms), self.args.block
        blocks = [order[i : i + size] for i in range(0, len(order), size)]
        started, budget = time.monotonic(), self.args.minutes * 60
        self.started = started
        block_s: list[float] = []
        longest_trial = 30.0  # until measured: a guess, kept out of the budget
        for number, block in enumerate(blocks):
            left = budget - (time.monotonic() - started)
            # A typical block must fit; the trial session's deadline stops a longer one.
            if left <= (statistics.median(block_s) if block_s else 0.0):
                return
            block_started = time.monotonic()
            done = self.block(number, number * size, block, time.time() + left - longest_trial)
            longest_trial = max([longest_trial, *(t.seconds for t in done)])
            if len(done) < len(block):
                return  # the budget ended inside the block
            block_s.append(time.monotonic() - block_started)
            print(
                f"block {number + 1}/{len(blocks)}: {len(done)} trials, {block_s[-1]:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        self.finished_all = True

    def block(
        self, number: int, first: int, arms: Sequence[ArmSpec], deadline: float
    ) -> list[Trial]:
        """A fresh baseline run (when some arm needs one), then the block's trials."""
        folder = self.options.work / f"block{number:03d}"
        if any(a.gate == "baseline" for a in arms):
            plan = [{"trial": -1 - number, "arm": FRESH, "slowdown": 0.0, "compare": False}]
            base_dir, steps = pytest_run(self.options, folder / "baseline", plan, deadline, ())
            self.baseline_runs.append(base_dir)
            done, records = trials_of(base_dir, steps, self.gates, number)
            self.reports[FRESH].trials += done
            self.baseline_samples.append(samples_by_test(records))
            self.records += records
        plan = [
            {
                "trial": first + i,
                "arm": a.name,
                "slowdown": a.slowdown,
                "compare": a.gate == "baseline",
            }
            for i, a in enumerate(arms)
        ]
        pooled = self.baseline_runs[::-1][: self.args.pool]
        run_dir, steps = pytest_run(self.options, folder / "trials", plan, deadline, pooled)
        done, records = trials_of(run_dir, steps, self.gates, number)
        for trial in done:
            self.reports[trial.arm].trials.append(trial)
        self.records += records
        if not self.metadata:
            self.metadata = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        return done

    def report(self) -> dict[str, Any]:
        args = self.args
        arms = [self.reports[a.name].as_dict() for a in self.arms]
        measured_slowdowns(arms)
        fresh = self.reports[FRESH].as_dict()
        fresh["planned"] = fresh["trials"]  # one per baseline run: as many as blocks ran
        machine = dict(self.metadata.get("machine", {}))
        machine.pop("command_line", None)
        return {
            "schema_version": 1,
            "command": ["bench/gate_power.py", *(args.argv or [])],
            "tests": list(args.tests),
            "rounds": args.rounds,
            "block": args.block,
            "pool": args.pool,
            "pytest_args": list(args.pytest_arg),
            "gate": self.metadata.get("settings", {}).get("gate"),
            "thresholds": thresholds_files(self.records),
            "machine": machine,
            "load_average_at_end": list(os.getloadavg()),
            "budget_s": args.minutes * 60,
            "wall_s": time.monotonic() - self.started,
            "finished_all": self.finished_all,
            "work": str(self.options.work),
            "arms": [*arms, fresh] if fresh["trials"] else arms,
            "drift": drift(self.baseline_samples),
            "trials": [
                {
                    "trial": t.index,
                    "arm": t.arm,
                    "block": t.block,
                    "verdict": t.verdict,
                    "seconds": t.seconds,
                    "tests": [asdict(r) for r in t.tests],
                }
                for report in self.reports.values()
                for t in report.trials
            ],
        }


def measured_slowdowns(arms: Sequence[dict[str, Any]]) -> None:
    """Each arm's slowdown as measured: 1 - its median throughput per test over the unchanged
    arms' (the trial sessions'), so that a run whose instrument did not deliver says so: on a
    loaded machine the load moves throughput more than the instrument does."""
    unchanged = [a for a in arms if a["slowdown"] == 0]
    for arm in arms:
        arm["measured_slowdown"] = {}
        for test, speeds in arm["output_tok_per_s"].items():
            reference = [v for a in unchanged for v in a["output_tok_per_s"].get(test, [])]
            if speeds and reference:
                ratio = statistics.median(speeds) / statistics.median(reference)
                arm["measured_slowdown"][test] = 1 - ratio


def thresholds_files(records: Sequence[TestRecord]) -> dict[str, str]:
    """The thresholds files the records were judged against (the tree's), with their sha256."""
    files = sorted({Path(c.file) for r in records for c in r.thresholds.checked if c.file})
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def _fractions(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if any(not 0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: fractions in (0, 1), comma-separated")
    return values


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a number of trials, 0 or more")
    return int(text)


def _rounds(text: str) -> str:
    if text in ("auto", "fixed") or (text.isdigit() and int(text) >= 2):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: auto, fixed or a number of rounds >= 2")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add(
        "--trials-unchanged",
        type=_count,
        default=100,
        metavar="N",
        help="trials of the unchanged engine against a baseline. Default: 100.",
    )
    add(
        "--slowdowns",
        type=_fractions,
        default=[0.2, 0.1],
        metavar="F,F",
        help="slowdowns judged against a baseline, one arm each. Default: 0.2,0.1.",
    )
    add(
        "--trials-slow",
        type=_count,
        default=50,
        metavar="N",
        help="trials per slowdown against a baseline. Default: 50.",
    )
    add(
        "--threshold-trials-unchanged",
        type=_count,
        default=100,
        metavar="N",
        help="trials of the unchanged engine against the thresholds alone. Default: 100.",
    )
    add(
        "--threshold-slowdowns",
        type=_fractions,
        default=[0.3],
        metavar="F,F",
        help="slowdowns judged against the thresholds alone. Default: 0.3.",
    )
    add(
        "--threshold-trials-slow",
        type=_count,
        default=50,
        metavar="N",
        help="trials per slowdown against the thresholds. Default: 50.",
    )
    add(
        "--rounds",
        type=_rounds,
        default="auto",
        metavar="auto|fixed|N",
        help="--llmperf-rounds of every run; fixed: the tests' own. Default: auto.",
    )
    add(
        "--block",
        type=int,
        default=10,
        metavar="N",
        help="trials per fresh baseline run. Default: 10.",
    )
    add(
        "--pool",
        type=int,
        default=1,
        metavar="N",
        help="judge against the newest N baseline runs pooled. Default: 1.",
    )
    add(
        "--minutes",
        type=float,
        default=60.0,
        help="budget: no block or trial starts past it. Default: 60.",
    )
    add(
        "--tests",
        nargs="+",
        default=list(TESTS),
        metavar="NODEID",
        help="the tests of a trial, from the project root. Default: the two smoke tests.",
    )
    add(
        "--pytest-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for every pytest run (--pytest-arg=--llmperf-alpha=0.05).",
    )
    add(
        "--work",
        type=Path,
        default=None,
        metavar="DIR",
        help="where run folders and logs go, kept. Default: a new temporary folder.",
    )
    add("--json", type=Path, default=None, metavar="PATH", help="write the report here too.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.block < 1 or args.pool < 1:
        _parser().error("--block and --pool: at least 1")
    if args.work is not None and args.work.is_dir() and any(args.work.iterdir()):
        _parser().error(f"--work {args.work}: not empty (a run's blocks would mix with another's)")
    bench = Bench(args)
    bench.run()
    report = bench.report()
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    print(markdown(report))
    print(
        f"\nwall {report['wall_s'] / 60:.1f} min of {args.minutes:g}; "
        f"{'all trials ran' if report['finished_all'] else 'stopped by the budget'}; "
        f"rounds {args.rounds}; run folders in {report['work']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
