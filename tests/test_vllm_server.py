"""Serving benchmarks against a real vLLM OpenAI server (CPU build) on loopback.

Both paths the README promises: `--engine openai --base-url URL` against a server someone
else started, and `--engine vllm-server`, which starts and stops the server itself.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.cli import main
from pytest_llmperf.models.names import tiny_model_path
from pytest_llmperf.tables import format_number
from tests.cpu_vllm_server import cpu_vllm_server
from tests.suite_run import run_suite


def vllm_server_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [
        line for line in out.stdout.splitlines() if "vllm.entrypoints.openai.api_server" in line
    ]


@pytest.fixture(scope="module")
def vllm_server() -> Iterator[str]:
    """One server for the module, prefix caching on (the hit-rate test needs it; every other
    test here sends prompts the cache cannot serve, or does not read the hit rate)."""
    with cpu_vllm_server(tiny_model_path(), max_model_len=512, enable_prefix_caching=True) as url:
        yield url


def run_smoke(tmp_path: Path, *args: str) -> dict[str, Any]:
    run = run_suite(tmp_path, "-m", "smoke", *args, target="suites/test_smoke.py")
    assert run.out.returncode == 0, run.output
    return run.summary()


def server_reads(tmp_path: Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's server_metrics.jsonl: one line per read of the server's metrics."""
    path = tmp_path / "results" / summary["run_id"] / "server_metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_server_metrics(
    tests: list[dict[str, Any]], reads: list[dict[str, Any]], *, caching: bool
) -> None:
    """What the server saw, beside what we measured: it counted every request we sent and
    no other, its TTFT lies inside ours, and every test's reads were kept in order. With
    `caching`, it looked every prompt up and found nothing: the CPU build caches whole
    blocks of 128 tokens, never a prompt's last token, and the smoke suite's prompts are at
    most 128 tokens long; without, it looked nothing up (null, not 0)."""
    for test in tests:
        metrics = test["metrics"]
        assert metrics["server_requests"] == metrics["requests"], test["test_id"]
        assert 0 < metrics["server_ttft_ms_mean"] <= metrics["ttft_ms"]["mean"], test["test_id"]
        hit_rate = metrics["server_prefix_cache_hit_rate"]
        assert hit_rate == (0.0 if caching else None), (test["test_id"], hit_rate)
        series = [r for r in reads if r["test_id"] == test["test_id"]]
        assert len(series) >= 2 and {r["server"] for r in series} == {"vllm"}
        assert all(a["t_s"] < b["t_s"] for a, b in itertools.pairwise(series))
        peak = max(r["values"]["running"] for r in series)
        assert peak == metrics["server_running_peak"]


def test_smoke_suite_through_the_openai_client(vllm_server: str, tmp_path: Path) -> None:
    summary = run_smoke(
        tmp_path,
        "--engine",
        "openai",
        "--base-url",
        vllm_server,
        "--llmperf-metrics-url",
        f"{vllm_server}/metrics",
        "--llmperf-metrics-interval",
        "0.1",
    )
    tests = summary["tests"]
    assert len(tests) == 4 and {t["engine"] for t in tests} == {"openai"}
    for test in tests:
        assert test["metrics"]["failures"] == 0
        assert test["engine_info"]["details"]["base_url"] == vllm_server
    check_server_metrics(tests, server_reads(tmp_path, summary), caching=True)
    decode = next(t for t in tests if "batch8" in t["test_id"])
    assert decode["metrics"]["ttft_ms"]["count"] == 48
    requests = [
        json.loads(line)
        for line in (tmp_path / "results" / summary["run_id"] / "requests.jsonl")
        .read_text()
        .splitlines()
    ]
    fixed = [r for r in requests if "decode_throughput" in r["test_id"]]
    assert all(r["output_tokens"] == 32 and r["prompt_tokens"] == 64 for r in fixed)
    assert {r["token_count_source"] for r in fixed} == {"usage"}


PREFIX_SUITE = """
    import pytest
    from pytest_llmperf import SharedPrefixWorkload

    # Eight prompts of 416 tokens a round either way. Shared: two groups of four behind a
    # prefix of 384 tokens (three whole 128-token blocks), the same every round. Fresh:
    # eight prompts of their own, never sent before, every round.
    WORK = {
        "shared": SharedPrefixWorkload(groups=2, prompts_per_group=4, prefix_tokens=384,
                                       suffix_tokens=32, output_tokens=4),
        "fresh": SharedPrefixWorkload(groups=8, prompts_per_group=1, prefix_tokens=384,
                                      suffix_tokens=32, output_tokens=4,
                                      fresh_each_round=True),
    }

    @pytest.mark.parametrize("kind", WORK)
    def test_prefix(llmperf, kind):
        llmperf.measure(workload=WORK[kind], rounds=2, warmup_rounds=1)
"""


def test_prefix_cache_hit_rate_of_shared_and_fresh_prefixes(
    vllm_server: str, pytester: pytest.Pytester
) -> None:
    """Issue 28: with caching on, the server finds a shared prefix in its cache and finds
    nothing of prompts it has never seen, as its own Prometheus counters say."""
    pytester.makepyfile(test_prefix=PREFIX_SUITE)
    result = pytester.runpytest(
        "--engine",
        "openai",
        "--base-url",
        vllm_server,
        "--llmperf-metrics-url",
        f"{vllm_server}/metrics",
        "--gpus",
        "cpu",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=2)
    run_dir = next(p for p in (pytester.path / "results").iterdir() if p.is_dir())
    tests = json.loads((run_dir / "summary.json").read_text())["tests"]
    rate = {t["test_id"].split("[")[-1].rstrip("]"): t["metrics"] for t in tests}
    for metrics in rate.values():
        assert metrics["server_requests"] == metrics["requests"] == 16
    # Shared: the warm-up round left each group's three prefix blocks in the cache, so every
    # measured prompt finds 384 of its 416 tokens (0.92); above 0.5 even if the first prompt
    # of each group missed in every round (0.69). Fresh: no prompt shares a whole block
    # with any other, so nothing is found (0); below 0.2 all the same.
    assert rate["shared"]["server_prefix_cache_hit_rate"] > 0.5
    assert rate["fresh"]["server_prefix_cache_hit_rate"] < 0.2
    result.stdout.no_fnmatch_line("*the server finished*")


def test_smoke_suite_through_a_managed_vllm_server(tmp_path: Path) -> None:
    summary = run_smoke(tmp_path, "--engine", "vllm-server", "--llmperf-metrics-interval", "0.1")
    tests = summary["tests"]
    assert len(tests) == 4 and {t["engine"] for t in tests} == {"vllm-server"}
    assert all(t["metrics"]["failures"] == 0 for t in tests)
    argv = tests[0]["engine_info"]["details"]["server_argv"]
    assert "--no-enable-prefix-caching" in argv and "127.0.0.1" in argv
    # Every server the run started is gone (servers of other runs may come and go: ours are
    # told by their ports).
    argvs = [t["engine_info"]["details"]["server_argv"] for t in tests]
    ports = {argv[argv.index("--port") + 1] for argv in argvs}
    assert not [p for p in vllm_server_processes() if any(f"--port {n} " in f"{p} " for n in ports)]
    # Each server's own metrics, read at its own /metrics, rise with the load: one request
    # at a time, against sixteen at once on a server of one place (fifteen wait) and of
    # eight (eight run, eight wait).
    check_server_metrics(tests, server_reads(tmp_path, summary), caching=False)
    by_name = {t["test_id"].split("::")[-1]: t["metrics"] for t in tests}
    single = by_name["test_single_request_latency"]
    batch1 = next(m for name, m in by_name.items() if "batch1-" in name or name.endswith("batch1]"))
    batch8 = next(m for name, m in by_name.items() if "batch8" in name)
    # A server of one place never runs two. (Whether a read lands while one runs is chance:
    # the server answers /metrics most readily between two requests, when it runs none; CI
    # once read 0 in every sample of batch1 while fifteen waited.)
    assert single["server_running_peak"] <= 1 and batch1["server_running_peak"] <= 1
    assert 1 < batch8["server_running_peak"] <= 8
    assert single["server_waiting_peak"] < batch8["server_waiting_peak"] <= 8
    assert batch8["server_waiting_peak"] < batch1["server_waiting_peak"] <= 15
    assert single["server_kv_cache_usage_peak"] < batch8["server_kv_cache_usage_peak"]
    # The report plots each test's series beside the client's figures.
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "results" / summary["run_id"]), "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    title = "Server metrics over the measured rounds"
    section = html[html.index(f"<h3>{title}</h3>") :].split("</section>")[0]
    assert section.count("<svg") == 1 and f"<title>{title}</title>" in section
    assert "test_single_request_latency" in section and "requests waiting" in section


def test_xdist_workers_share_one_managed_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_shared="""
        import pytest
        from pytest_llmperf import Config, SyntheticWorkload
        C = Config.make("c", {"max_model_len": 256})
        @pytest.mark.parametrize("i", range(4))
        def test_s(llmperf, i):
            llmperf.measure(C, SyntheticWorkload(num_requests=2, input_tokens=8,
                                                 output_tokens=4), rounds=1, warmup_rounds=0)
    """
    )
    before = vllm_server_processes()
    result = pytester.runpytest("-n", "2", "--engine", "vllm-server", "--gpus", "cpu")
    result.assert_outcomes(passed=4)
    run_dir = next(p for p in (pytester.path / "results").iterdir() if p.is_dir())
    tests = json.loads((run_dir / "summary.json").read_text())["tests"]
    assert {t["worker"] for t in tests} == {"gw0", "gw1"}
    urls = {t["engine_info"]["details"]["base_url"] for t in tests}
    assert len(urls) == 1  # one server for the configuration, used by both workers
    owners = {t["worker"] for t in tests if t["engine_info"]["details"]["server_owner"]}
    assert len(owners) == 1
    assert vllm_server_processes() == before
    # The server's own counts are of both workers' requests: said once, never a warning
    # that another client took it (nor compared with each test's own count).
    assert all(t["engine_info"]["details"]["shared_server"] for t in tests)
    assert all(t["metrics"]["server_requests"] is not None for t in tests)
    result.stdout.no_fnmatch_line("*the server finished*")
    result.stdout.fnmatch_lines(
        ["*note: 4 tests read a server that xdist workers shared*server_requests is not*"]
    )


def test_vllm_args_and_server_args_become_the_servers_flags() -> None:
    from pytest_llmperf.engines.base import EngineConfig
    from pytest_llmperf.engines.vllm.server import VLLMServerEngine

    settings = {
        "max_num_seqs": 4,
        "vllm_args": {
            "block_size": 32,
            "enable_chunked_prefill": False,
            "compilation_config": {"mode": 0},
        },
        "server_args": ["--max-num-batched-tokens", "512"],
    }
    engine = VLLMServerEngine(EngineConfig.make("vllm-server", "tiny", settings))
    argv = list(engine.server_command("/models/m", 8000).argv)
    ours = argv.index("--no-enable-prefix-caching")
    assert argv[argv.index("--max-num-seqs") + 1] == "4"
    # vLLM's own arguments after ours, then the raw flags as they were given.
    assert argv[ours + 1 :] == [
        "--block-size",
        "32",
        "--no-enable-chunked-prefill",
        "--compilation-config",
        '{"mode": 0}',
        "--max-num-batched-tokens",
        "512",
    ]


def test_an_unknown_server_flag_is_a_usage_error_at_collection(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".yaml",
        grid="""
        schema: 1
        configs:
          a:
            vllm_args: {block_size: 32}
            server_args: [--max-num-batchd-tokens, '512']
        """,
    )
    pytester.makepyfile(
        test_f="""
        import pytest
        from pytest_llmperf import grid_params
        @pytest.mark.parametrize("config", grid_params("grid.yaml"))
        def test_f(llmperf, config):
            pass
    """
    )
    result = pytester.runpytest("--engine", "vllm-server", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: *grid.yaml: line 5: server_args: '--max-num-batchd-tokens' is not one of "
            "the flags of vLLM's OpenAI server for engine 'vllm-server' "
            "(did you mean '--max-num-batched-tokens'*"
        ]
    )


SPLIT_SUITE = """
    import pytest
    from pytest_llmperf import Config, SyntheticWorkload, split_load

    C = Config.make("c", {"max_concurrency": 2})

    @pytest.mark.parametrize("share", split_load("chat", clients=2, barrier_timeout_s=120))
    def test_chat(llmperf, share):
        work = SyntheticWorkload(num_requests=6, input_tokens=16, output_tokens=8)
        llmperf.measure(C, work, rounds=2, warmup_rounds=1, share=share)
"""


def _percentile(values: list[float], q: int) -> float:
    """numpy's default (linear) percentile, by the standard library's own code."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def test_one_load_split_over_two_workers_is_merged_from_every_request(
    vllm_server: str, pytester: pytest.Pytester
) -> None:
    """Two xdist workers each run a share of one closed-loop load on the real server, their
    rounds started together at the controller's barrier; the controller merges the shares'
    request records into one measurement whose percentiles are those of all the records."""
    pytester.makepyfile(test_split=SPLIT_SUITE)
    base = ("--engine", "openai", "--base-url", vllm_server, "--gpus", "cpu", "-p", "no:randomly")
    result = pytester.runpytest_subprocess(*base, "-n", "2", timeout=300)
    result.assert_outcomes(passed=2)
    run_dir = next(p for p in (pytester.path / "results").iterdir() if p.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    (load,) = summary["split_loads"]
    assert (load["load"], load["clients"], load["missing_shares"]) == ("chat", 2, [])
    assert {s["worker"] for s in load["shares"]} == {"gw0", "gw1"}
    ids = {s["test_id"] for s in load["shares"]}
    rows = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["test_id"] in ids and r["error"] is None]
    assert len(mine) == 2 * 6 * 2  # both shares, every measured round, no warm-up round
    merged = load["metrics"]
    assert merged["requests"] == len(mine)
    for metric in ("ttft_ms", "e2e_ms", "tpot_ms"):
        values = [r[metric] for r in mine]
        assert merged[metric]["count"] == len(values)
        for q in (50, 90, 95, 99):
            assert merged[metric][f"p{q}"] == pytest.approx(_percentile(values, q), rel=1e-9)
    # Each round of the load lasts as long as its slowest share's: they started together.
    shares = [t for t in summary["tests"] if t["test_id"] in ids]
    per_share = [t["samples"]["duration_s"] for t in shares]
    assert load["round_durations_s"] == [max(d) for d in zip(*per_share, strict=True)]
    tokens = sum(r["output_tokens"] for r in mine)
    assert merged["output_tok_per_s"] == pytest.approx(tokens / sum(load["round_durations_s"]))
    # The client self-check of every share decides whether more client hosts were needed.
    bound = [t["test_id"] for t in shares if t["metrics_flat"].get("client_bound")]
    assert load["client_bound_shares"] == bound
    assert load["more_client_hosts_needed"] is bool(bound)
    result.stdout.fnmatch_lines(["split load chat: 2 of 2 client(s) on *; 24 requests merged*"])
    # The HTML report shows the merged load, with its shares' workers.
    out = pytester.path / "report.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    section = out.read_text().split('<h2 id="split">', 1)[1].split("</table>", 1)[0]
    assert '<span class="id">chat</span>' in section and "gw0" in section and "gw1" in section
    shown = re.findall(r'<td class="num">(.*?)</td>', section)
    expected = [merged["requests"], merged["output_tok_per_s"], merged["ttft_ms"]["p50"]]
    assert shown[:3] == [format_number(v) for v in expected]

    # Without xdist the shares would run one after the other: the first fails at once.
    result = pytester.runpytest_subprocess(*base, "-k", "1of2", timeout=120)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*split load 'chat': its 2 shares run at once on xdist*-n 2*"])


def test_trace_replay_and_a_conversation_on_the_real_server(vllm_server: str) -> None:
    """Issue 28: a trace replayed and a conversation run against vLLM itself (timing
    against the trace is checked on the instrument server: `test_workload_replay.py`)."""
    from pytest_llmperf import ConversationWorkload, TraceWorkload
    from pytest_llmperf.engines.base import EngineConfig
    from pytest_llmperf.engines.openai.engine import OpenAIEngine
    from pytest_llmperf.measure.harness import run_round

    trace = Path(__file__).resolve().parent.parent / "suites" / "data" / "trace_block16.jsonl"
    lines = [json.loads(x) for x in trace.read_text().splitlines()][:8]
    engine = OpenAIEngine(EngineConfig.make("openai", "tiny", {"base_url": vllm_server}))
    engine.start()
    try:
        replay = TraceWorkload(trace, block_size=16, speedup=4, limit=8)
        replayed, _ = run_round(engine, replay.build(engine.tokenizer), 0)
        conversation = ConversationWorkload(sessions=2, turns=3, user_tokens=8, output_tokens=4)
        turns, _ = run_round(engine, conversation.build(engine.tokenizer), 0)
    finally:
        engine.close()
    assert [r.error for r in replayed + turns] == [None] * 14
    # The server's own counts: the trace's lengths exactly, in the model's tokens.
    assert [r.prompt_tokens for r in replayed] == [x["input_length"] for x in lines]
    assert [r.output_tokens for r in replayed] == [x["output_length"] for x in lines]
    by_id = {r.custom_id: r for r in turns}
    for s in (0, 1):
        grown = [by_id[f"conv{s}-turn{k}"].prompt_tokens or 0 for k in (1, 2, 3)]
        # Each turn adds a user turn (8) and an answer (4), plus the chat template's tokens.
        assert grown[0] + 12 <= grown[1] and grown[1] + 12 <= grown[2], grown
        assert all(by_id[f"conv{s}-turn{k}"].output_tokens == 4 for k in (1, 2, 3))


SLO_SEARCH_SUITE = """
from pytest_llmperf import SLO, SyntheticWorkload


def test_search(llmperf):
    found = llmperf.max_load_under_slo(
        workload=SyntheticWorkload(num_requests=32, input_tokens=16, output_tokens=8),
        slo=SLO(ttft_ms=250, tpot_ms=100), start_rate_per_s=32, step_per_s=32,
        max_rate_per_s=1024, min_rounds=2, max_rounds=3, warmup_rounds=1,
    )
    print("FOUND", found.max_rate_per_s, "|", found.note)
"""


def test_an_slo_search_on_the_real_server(vllm_server: str, tmp_path: Path) -> None:
    """Issue 28: the highest load under an SLO, searched on vLLM itself through the openai
    client (the search's accuracy is checked on the instrument server: test_slo_search.py)."""
    from pytest_llmperf.report.html import render_report
    from pytest_llmperf.results.runs import open_run
    from tests.suite_run import make_project, run_project

    project = make_project(tmp_path, SLO_SEARCH_SUITE)
    out = run_project(project, "--engine", "openai", "--base-url", vllm_server, "-s")
    assert "1 passed" in out.stdout, out.stdout[-4000:]
    run = open_run("latest", project / "results")
    (test,) = run.tests
    search = test.slo_search or {}
    steps = search["steps"]
    # On two cores the CPU server and the client share the CPUs: at the higher rates the
    # client may fall behind its schedule, and the search then stops saying so.
    assert len(steps) >= 2 and search["stopped"] != "no_pass", search["note"]
    if search["stopped"] == "client_bound":
        last = steps[-1]
        assert last["achieved_send_rate_per_s"] < 0.9 * last["asked_send_rate_per_s"]
        assert "the load generator, not the server, was the bottleneck" in search["note"]
    found = test.metric("max_rate_under_slo_req_per_s")
    assert found is not None and found == search["max_rate_per_s"] >= 32
    chosen = steps[search["chosen"]]
    assert chosen["decision"] == "pass" and chosen["rate_per_s"] == found
    # The chosen point's throughput and latencies are the test's metrics.
    assert test.metric("output_tok_per_s") == pytest.approx(chosen["output_tok_per_s"])
    assert 0 < test.metric("ttft_ms.p90") <= 250  # type: ignore[operator]
    assert test.metric("goodput_fraction") >= 0.9  # type: ignore[operator]
    assert f"FOUND {found} | {search['note']}" in out.stdout
    report = render_report([run])
    assert "SLO search: output tok/s per user vs per server" in report
    assert report.count("<td>sweep</td>") >= 1 and report.count("(chosen)</td>") == 1
