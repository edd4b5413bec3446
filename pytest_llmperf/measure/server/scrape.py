"""Reading a server's Prometheus endpoint during the measured rounds, in a thread.

`Scraper.start()` reads the endpoint once (the baseline of every counter), then a thread
reads it every `interval_s` until `stop()`, which reads it once more (the counters' end).
The thread fetches and keeps the lines the table reads (vLLM's text runs to 60 kB, a
few dozen lines of it ours); they are parsed after the rounds (`prometheus_client`'s
parser, `text_string_to_metric_families`), so that parsing does not take the interpreter
from the client while it times requests. Reads go straight to the server, as the client's
requests do, whatever proxy the environment names. A failed read is a missing
sample, not a failed test; an endpoint that never answers gives no samples, and every
server metric is then null.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytest_llmperf.engines.base import ExportsMetrics
from pytest_llmperf.measure.server.names import QUANTITIES, Quantity, server_kind

#: Seconds between reads when nothing else is set (`--llmperf-metrics-interval`).
DEFAULT_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Sample:
    """One read: seconds since the first read (`t_s`), the wall clock (`time`), and each
    quantity the server exported (`names.QUANTITIES`; a histogram as `<name>_sum` and
    `<name>_count`)."""

    t_s: float
    time: float
    values: Mapping[str, float]

    def as_dict(self) -> dict[str, object]:
        return {"t_s": self.t_s, "time": self.time, "values": dict(self.values)}


#: The start of every metric name the table reads (a counter's without `_total`: TGI's
#: text leaves it out).
_OURS = tuple(sorted({n.removesuffix("_total") for q in QUANTITIES for n in q.names()}))


def _ours(line: str) -> bool:
    """Whether a line of the text is about a metric the table reads (or says which)."""
    if line.startswith("#"):
        words = line.split(maxsplit=3)
        return len(words) > 2 and words[2].startswith(_OURS)
    return line.startswith(_OURS)


def ours_only(text: str) -> str:
    """The lines of `text` about the table's metrics; all of it when it has none of ours and
    no comment (not Prometheus text, perhaps: the parser is left to judge it)."""
    kept = [line for line in text.splitlines() if _ours(line)]
    if not kept and "#" not in text:
        return text
    return "\n".join(kept) + "\n"


@dataclass(frozen=True)
class Reads:
    """A test's reads: the samples parsed, in order, which server's names they hold, how
    many reads failed and why (the last reason)."""

    samples: list[Sample]
    server: str | None
    failed: int = 0
    error: str | None = None


def parse(text: str) -> tuple[dict[str, float], str | None]:
    """The quantities in one scraped text, and which server's names it holds.

    Raises ValueError for text that is not the Prometheus exposition format."""
    from prometheus_client.parser import text_string_to_metric_families

    # The parser gets only the lines the table reads: a tenth of the time on vLLM's text.
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(ours_only(text)):
        for sample in family.samples:
            totals.setdefault(sample.name, []).append(float(sample.value))
    return read_quantities(totals, QUANTITIES), server_kind(set(totals))


def read_quantities(
    samples: Mapping[str, list[float]], quantities: Iterable[Quantity]
) -> dict[str, float]:
    """Each quantity from the first of its names present, its label sets combined."""
    values: dict[str, float] = {}
    for quantity in quantities:
        suffixes = ("_sum", "_count") if quantity.kind == "histogram" else ("",)
        for name in quantity.names():
            if f"{name}{suffixes[0]}" not in samples:
                continue
            for suffix in suffixes:
                found = samples.get(f"{name}{suffix}", [])
                combined = max(found) if quantity.combine == "max" else sum(found)
                values[f"{quantity.name}{suffix}"] = combined
            break
    return values


#: An opener without the environment's proxies (`http_proxy` would route loopback reads).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Scraper:
    """Reads `url` from `start()` to `stop()` every `interval_s` seconds."""

    def __init__(self, url: str, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.url = url
        self.interval_s = interval_s
        self._texts: list[tuple[float, float, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        #: Why reads failed (the last reason), for the record; None when all answered.
        self.error: str | None = None
        self.failed_reads = 0

    def _read(self) -> None:
        try:
            # A read that takes longer than a few intervals is a missed sample; the bound
            # keeps `stop()` from waiting long on a server that stopped answering.
            timeout = max(1.0, 4 * self.interval_s)
            with _DIRECT.open(self.url, timeout=timeout) as response:
                text = ours_only(response.read().decode("utf-8", "replace"))
        except Exception as exc:  # a missing sample, not a failed test
            self.failed_reads += 1
            self.error = f"{type(exc).__name__}: {exc}"
            return
        now = time.perf_counter()
        self._texts.append((now - self._t0, time.time(), text))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._t0 = time.perf_counter()
        self._read()
        self._thread = threading.Thread(target=self._run, name="llmperf-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> Reads:
        """The reads, parsed, in order; with what failed."""
        if self._thread is None:
            return Reads([], None, self.failed_reads, self.error)
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        self._read()
        samples: list[Sample] = []
        kind: str | None = None
        for t_s, wall, text in self._texts:
            try:
                values, found = parse(text)
            except ImportError:  # the `openai` extra brings the parser
                self.failed_reads += len(self._texts)
                self.error = "prometheus_client is not installed (pytest-llmperf[openai])"
                samples = []
                break
            except ValueError as exc:
                self.failed_reads += 1
                self.error = f"not Prometheus text: {exc}"
                continue
            kind = kind or found
            samples.append(Sample(t_s, wall, values))
        self._texts.clear()
        return Reads(samples, kind, self.failed_reads, self.error)


def scraper_for(engine: object, interval_s: float) -> Scraper | None:
    """A scraper of `engine`'s server, if it drives one with a known metrics endpoint and
    reads are wanted (`interval_s` > 0)."""
    if interval_s <= 0 or not isinstance(engine, ExportsMetrics):
        return None
    url = engine.metrics_url
    return Scraper(url, interval_s) if url else None
