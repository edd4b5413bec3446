"""The pieces of a load split over client workers (`suite.split`) that need no engine: the
controller's barrier (`procs.rendezvous`) and the shares' arguments. The load itself, on the
real vLLM server, is in tests/test_vllm_server.py."""

from __future__ import annotations

import threading
import time

import pytest

from pytest_llmperf import LoadShare, split_load
from pytest_llmperf.procs.rendezvous import (
    RENDEZVOUS_KEY,
    BarrierError,
    Rendezvous,
    abort,
    wait,
)
from pytest_llmperf.suite.arguments import ArgumentError
from pytest_llmperf.suite.split import barrier


def test_the_barrier_lets_every_party_go_only_when_the_last_has_come() -> None:
    barrier = Rendezvous(remote=False)
    address = barrier.address(local=True)
    released: dict[str, float] = {}

    def party(name: str) -> None:
        wait(address, "load#0", 3, timeout_s=30)
        released[name] = time.monotonic()

    try:
        early = [threading.Thread(target=party, args=(n,)) for n in ("a", "b")]
        for thread in early:
            thread.start()
        time.sleep(0.5)
        assert released == {}  # two of three: still waiting
        last_came = time.monotonic()
        party("c")
        for thread in early:
            thread.join(timeout=30)
        assert set(released) == {"a", "b", "c"}
        assert min(released.values()) >= last_came
        # Another key is another barrier: one party alone times out, saying so.
        with pytest.raises(BarrierError, match=r"waited 0\.3 s"):
            wait(address, "load#1", 2, timeout_s=0.3)
    finally:
        barrier.close()


def test_a_party_that_gives_up_lets_the_others_of_its_group_go_at_once() -> None:
    barrier = Rendezvous(remote=False)
    address = barrier.address(local=True)
    errors: list[str] = []

    def party() -> None:
        try:
            wait(address, "chat#0", 3, timeout_s=60)
        except BarrierError as exc:
            errors.append(str(exc))

    try:
        waiting = threading.Thread(target=party)
        waiting.start()
        time.sleep(0.3)
        started = time.monotonic()
        abort(address, "chat", "test_chat[chat-2of3] failed (setup)")
        waiting.join(timeout=30)
        party()  # one still to come is let go too, at any step
        assert time.monotonic() - started < 10  # not the 60 s timeout
        assert errors == ["another party gave up: test_chat[chat-2of3] failed (setup)"] * 2
        wait(address, "other#0", 1, timeout_s=5)  # another group is not concerned
    finally:
        barrier.close()


def test_shares_are_named_and_checked_where_they_are_written() -> None:
    params = split_load("chat", clients=3)
    assert [p.id for p in params] == ["chat-1of3", "chat-2of3", "chat-3of3"]
    assert params[1].values[0] == LoadShare("chat", 2, 3)
    with pytest.raises(
        ArgumentError,
        match=r"test_split_load\.py: line \d+: LoadShare: index=4: must be at most clients=3",
    ):
        LoadShare("chat", 4, 3)
    with pytest.raises(ArgumentError, match="split_load: clients=0: must be at least 1"):
        split_load("chat", clients=0)
    # Rounds until decided would let each share stop on its own, the others left waiting.
    with pytest.raises(pytest.fail.Exception, match=r"rounds='auto'.*a fixed number of rounds"):
        barrier(LoadShare("chat", 1, 2), {RENDEZVOUS_KEY: "127.0.0.1:1"}, adaptive=True)


def test_a_share_that_fails_lets_the_other_go_at_once(pytester: pytest.Pytester) -> None:
    """Under xdist, share 2 fails before its round: share 1, waiting at the barrier on the
    other worker, fails at once naming it, not after its timeout (an hour: the run's own
    bound, 240 s, would end it first)."""
    pytester.makepyfile(
        test_s="""
        import pytest
        from pytest_llmperf import SyntheticWorkload, split_load

        @pytest.mark.parametrize("share", split_load("chat", clients=2, barrier_timeout_s=3600))
        def test_chat(llmperf, share):
            if share.index == 2:
                pytest.fail("share 2 broke")
            work = SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4)
            llmperf.measure(workload=work, rounds=1, warmup_rounds=0, share=share)
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--gpus", "cpu", timeout=240)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*split load 'chat': share 1 of 2 at round 1: another party gave up: "
            "test_s.py::test_chat?chat-2of2? failed (call) (see suite.split)*"
        ]
    )
    assert "During handling" not in result.stdout.str()  # the message alone
