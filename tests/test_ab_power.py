"""bench/ab_power.py, the A/B gate's power benchmark, in a short run: real trials (hf engine,
tiny model, `llmperf.compare` with B slowed by bench/slowdown.py), checking the machinery,
not the rates: every planned trial ran and was counted once, the intervals are
Clopper-Pearson's, each trial kept its cap of pairs, and the slowed B measured slower."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from bench.ab_power import main


def test_short_run_counts_its_trials_and_catches_a_large_slowdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ab.json"
    code = main(
        [
            "--trials-slow=2",
            "--trials-same=1",
            "--slowdown=0.5",
            "--workload=small",
            "--max-pairs=4",
            "--max-seconds=20",
            f"--work={tmp_path / 'work'}",
            f"--json={out}",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    arms = {arm["name"]: arm for arm in report["arms"]}
    assert list(arms) == ["A/B, 50% slower", "A/A, unchanged"]
    assert report["finished_all"] is True
    for arm in arms.values():
        assert arm["errors"] == 0, arm
        assert arm["flags"] + arm["cleared"] + arm["inconclusive"] == arm["trials"]
        assert arm["trials"] == arm["planned"]
        flags, trials = arm["flags"], arm["trials"]
        low, high = arm["ci95"]
        assert low == pytest.approx(
            0.0 if flags == 0 else stats.beta.ppf(0.025, flags, trials - flags + 1)
        )
        assert high == pytest.approx(
            1.0 if flags == trials else stats.beta.ppf(0.975, flags + 1, trials - flags)
        )
        # Each trial stopped within its cap of pairs, after the first look.
        assert 3 <= arm["pairs"]["p10"] <= arm["pairs"]["p90"] <= 4
    slow = arms["A/B, 50% slower"]
    # The instrument works: B measured at about half A's speed, and no slowed trial cleared
    # (whether each is flagged or inconclusive within 4 pairs is the benchmark's to count).
    assert slow["speedup_median"] < 0.75, slow
    assert slow["cleared"] == 0, slow
    printed = capsys.readouterr().out
    assert "| A/B, 50% slower | 2/2 | " in printed and "| A/A, unchanged | 1/1 | " in printed

    # Runs made side by side (each on cores of its own) join into one report: each arm's
    # trials added up, its rate and interval computed again from all of them.
    merged = tmp_path / "merged.json"
    assert main(["--merge", str(out), str(out), f"--json={merged}"]) == 0
    joined = {arm["name"]: arm for arm in json.loads(merged.read_text())["arms"]}
    for name, arm in arms.items():
        assert joined[name]["trials"] == 2 * arm["trials"]
        assert joined[name]["flags"] == 2 * arm["flags"]
        assert joined[name]["planned"] == 2 * arm["planned"]
        expected_high = stats.beta.ppf(
            0.975, 2 * arm["flags"] + 1, 2 * (arm["trials"] - arm["flags"])
        )
        if arm["flags"] < arm["trials"]:
            assert joined[name]["ci95"][1] == pytest.approx(expected_high)
