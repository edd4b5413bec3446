"""Tolerances: how much worse a metric may get against a baseline before it regressed.

A change is worse when it goes against the metric's direction (`metrics.spec_for`:
throughput falling, latency rising, accuracy falling). A tolerance says how much worse
is still acceptable, per metric:

    output_tok_per_s:-5%     may fall by 5% of the baseline
    ttft_ms.p90:+10%         may rise by 10%
    accuracy:-0.02           may fall by 0.02 (no %: an absolute amount)
    ttft_ms.*:15%            a glob; the sign may be left out (it is the worsening one)

A sign that contradicts the metric's direction (`output_tok_per_s:+5%`) is an error: a
rise in throughput is never a regression. The first tolerance whose pattern matches a
metric applies; the user's come before `DEFAULT_TOLERANCES`. A metric with no tolerance
is reported, never judged a regression.

The defaults, and why:

    throughput, ttft/tpot/e2e p50 and p90     10%    what a shared GPU runner moves by
                                                     between nights
    call_s (a timed call of your code)        10%    a time like e2e, on the same runner
    speedup (B/A of an A/B test)              10%    paired within each run, so drift between
                                                     runs cancels; what is left is each run's
                                                     own noise, as for throughput
    mbu                                       10%    decode speed over the card's fixed
                                                     bandwidth: it moves with the speeds
    energy_j, output_tok_per_j                15%    energy is power x time: the time's 10%,
                                                     plus power's own drift with the card's
                                                     temperature and boost clocks
    peak_gpu_mem_bytes                        5%     memory does not move with clocks or
                                                     load; what is worth catching (a bigger
                                                     KV cache, weights held twice, a leak)
                                                     moves it by more
    failure_rate                              0      any new failure
    accuracy, accuracy_norm, exact_match,     0.02   absolute: a relative change of a small
    token_f1                                         ratio says nothing

A suite's own declared metrics have no default: give theirs (`--llmperf-tolerance
jobs_per_s:10%`). Power, utilisation, clocks and the other telemetry are shown, not judged:
a faster run may draw more power, and energy per run is what it costs.

A tolerance names a metric as a thresholds file does: a name that is no metric
(`output_tokps`) is an error with the closest names, and a glob must match some metric.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.metrics import Direction, metric_hint, metric_names, spec_for

#: Applied after the user's own (the module docstring says why each amount). Relative for
#: speed, energy and memory; absolute for ratios, where a relative change of a small number
#: (a failure rate of 0.001) says nothing.
DEFAULT_TOLERANCES: tuple[str, ...] = (
    "output_tok_per_s:10%",
    "total_tok_per_s:10%",
    "requests_per_s:10%",
    "questions_per_s:10%",
    "goodput_req_per_s:10%",
    "ttft_ms.p50:10%",
    "ttft_ms.p90:10%",
    "tpot_ms.p50:10%",
    "tpot_ms.p90:10%",
    "e2e_ms.p50:10%",
    "e2e_ms.p90:10%",
    "mbu:10%",
    "call_s:10%",
    "speedup:10%",
    "energy_j:15%",
    "output_tok_per_j:15%",
    "peak_gpu_mem_bytes:5%",
    "failure_rate:0",
    "accuracy:0.02",
    "accuracy_norm:0.02",
    "exact_match:0.02",
    "token_f1:0.02",
)

_TOLERANCE = re.compile(
    r"^(?P<metric>[^:\s]+):(?P<sign>[+-])?(?P<amount>\d+(?:\.\d+)?)(?P<pct>%)?$"
)


@dataclass(frozen=True)
class Tolerance:
    pattern: str
    amount: float
    relative: bool
    #: "+" or "-" as written, None when left out.
    sign: str | None
    text: str

    @classmethod
    def parse(cls, text: str, source: str = "--tolerance") -> Tolerance:
        match = _TOLERANCE.match(text.strip())
        if match is None:
            raise LLMPerfUsageError(
                f"{source}: {text!r} is not METRIC:CHANGE (e.g. output_tok_per_s:-5%, "
                "ttft_ms.p90:+10%, accuracy:-0.02)"
            )
        tolerance = cls(
            pattern=match["metric"],
            amount=float(match["amount"]) / (100.0 if match["pct"] else 1.0),
            relative=bool(match["pct"]),
            sign=match["sign"],
            text=text.strip(),
        )
        _check_metric(tolerance.pattern, text, source)
        spec = spec_for(tolerance.pattern)
        if tolerance.sign and spec is not None and tolerance.sign != _worsening(spec.better):
            fixed = f"{_worsening(spec.better)}{match['amount']}{match['pct'] or ''}"
            raise LLMPerfUsageError(
                f"{source}: {text!r}: {tolerance.pattern} is {spec.better}-is-better, so a "
                f"regression is a {'fall' if spec.better == 'higher' else 'rise'}; write "
                f"{tolerance.pattern}:{fixed}"
            )
        return tolerance

    def matches(self, metric: str) -> bool:
        return self.pattern == metric or fnmatch.fnmatchcase(metric, self.pattern)

    def allows(self, base: float, worsening: float) -> bool:
        """Whether `worsening` (> 0, in the metric's units) is within this tolerance."""
        limit = self.amount * abs(base) if self.relative else self.amount
        return worsening <= limit + 1e-12


def _check_metric(pattern: str, text: str, source: str) -> None:
    """A tolerance's metric is a known one, or a glob that matches one (as a thresholds
    file names metrics): a misspelt name would otherwise judge nothing, silently."""
    if any(ch in pattern for ch in "*?["):
        if not any(fnmatch.fnmatchcase(name, pattern) for name in metric_names()):
            raise LLMPerfUsageError(f"{source}: {text!r}: {pattern!r} matches no metric")
    elif spec_for(pattern) is None:
        raise LLMPerfUsageError(
            f"{source}: {text!r}: unknown metric {pattern!r}{metric_hint(pattern)}"
        )


def _worsening(better: Direction) -> str:
    return "-" if better == "higher" else "+"


def parse_tolerances(texts: Sequence[str], source: str = "--tolerance") -> list[Tolerance]:
    """The user's tolerances, then the defaults."""
    return [Tolerance.parse(t, source) for t in texts] + [
        Tolerance.parse(t, "DEFAULT_TOLERANCES") for t in DEFAULT_TOLERANCES
    ]
