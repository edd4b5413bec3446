"""One load from several client hosts: a closed loop split into shares run by xdist workers.

A server one client cannot saturate needs load from several machines at once. xdist
schedules whole tests, so one load is written as one test per client, its shares:

    @pytest.mark.parametrize("share", split_load("chat", clients=2))
    def test_chat_load(llmperf, share):
        llmperf.measure(CONFIG, WORKLOAD, rounds=1, share=share)

Each share runs the whole workload at the configuration's `max_concurrency` (the load is
`clients` times it) and waits, before each measured round, at a barrier that the xdist
controller holds (`procs.rendezvous`) until every share of the load has reached it, so the
shares' rounds start together. Every share is a test of its own (its record, its bounds);
at the run's end the controller merges the shares' per-request records into one measurement
of the load (`results.readback.split`): latency percentiles from the merged samples, never
averaged, throughput over the rounds' common windows, and the client self-check of every
share (a client-bound share says more client hosts were needed).

The shares must run at the same time, on different workers: run a split load with at least
`clients` xdist workers and nothing else queued before it on them (xdist sends fewer than two
tests per worker round-robin, one to each; `-k`/`-m` select the load), workers on other hosts
through `--tx ssh=...`. A share that fails lets the others go at once (`abandon`: they fail,
naming it); a share that waits longer than `barrier_timeout_s` for the others fails, saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_llmperf.procs.rendezvous import (
    RENDEZVOUS_KEY,
    BarrierAborted,
    BarrierError,
    abort,
    wait,
)
from pytest_llmperf.suite.arguments import bad, number, text, whole


@dataclass(frozen=True)
class LoadShare:
    """Share `index` (from 1) of the load `load`, split over `clients` client workers."""

    load: str
    index: int
    clients: int
    barrier_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        text("LoadShare", "load", self.load)
        whole("LoadShare", "clients", self.clients, minimum=1)
        whole("LoadShare", "index", self.index, minimum=1)
        if self.index > self.clients:
            raise bad("LoadShare", "index", self.index, f"must be at most clients={self.clients}")
        number("LoadShare", "barrier_timeout_s", self.barrier_timeout_s, positive=True)

    def __str__(self) -> str:
        return f"{self.load}-{self.index}of{self.clients}"

    def describe(self) -> dict[str, Any]:
        return {"load": self.load, "index": self.index, "clients": self.clients}


def split_load(load: str, clients: int, barrier_timeout_s: float = 300.0) -> list[Any]:
    """The shares of `load` as `pytest.param`s (ids `load-1of2`, ...) for `parametrize`."""
    whole("split_load", "clients", clients, minimum=1)
    return [
        pytest.param(share, id=str(share))
        for share in (
            LoadShare(load, index, clients, barrier_timeout_s) for index in range(1, clients + 1)
        )
    ]


def barrier(
    share: LoadShare | None, workerinput: Mapping[str, Any] | None, adaptive: bool = False
) -> Callable[[int], None]:
    """What a measured round of `share` waits for: every share of its load at that round,
    at the controller's barrier (`procs.rendezvous`, its address in the xdist worker's
    `workerinput`); nothing without a share. Run outside xdist, a load of more than one
    share fails at once: its shares would run one after the other; so does one whose rounds
    are `adaptive` (rounds until decided): each share would stop on its own, leaving the
    others at a barrier."""
    if share is None:
        return lambda index: None
    if adaptive:
        pytest.fail(
            f"split load {share.load!r}: rounds='auto' (or --llmperf-rounds auto) lets each "
            "share stop on its own; a split load measures a fixed number of rounds",
            pytrace=False,
        )
    address = (workerinput or {}).get(RENDEZVOUS_KEY)
    if address is None and share.clients > 1:
        pytest.fail(
            f"split load {share.load!r}: its {share.clients} shares run at once on xdist "
            f"workers: run with at least -n {share.clients}",
            pytrace=False,
        )

    def wait_for_all(index: int) -> None:
        if address is None:
            return  # the only share
        hint = ": the shares must run at the same time, each on its own xdist worker"
        try:
            wait(address, f"{share.load}#{index}", share.clients, share.barrier_timeout_s)
            return
        except BarrierAborted as exc:
            problem, hint = str(exc), ""
        except BarrierError as exc:
            problem = f"waited for the others: {exc}"
        except OSError as exc:
            problem = f"the controller's barrier at {address} cannot be reached ({exc})"
        pytest.fail(
            f"split load {share.load!r}: share {share.index} of {share.clients} at round "
            f"{index + 1}: {problem}{hint} (see suite.split)",
            pytrace=False,
        )

    return wait_for_all


def abandon(params: Mapping[str, object], workerinput: Mapping[str, Any] | None, why: str) -> None:
    """A failed test's shares (`params`: its parameters) will not come to their barrier: the
    other shares of each load are let go, failing with `why`, rather than waiting for it until
    their timeout. Harmless after the share's last round: every share has passed it then."""
    address = (workerinput or {}).get(RENDEZVOUS_KEY)
    for share in params.values():
        if isinstance(share, LoadShare) and address is not None:
            try:
                abort(address, share.load, why)
            except OSError:
                pass  # the controller is gone: the others time out
