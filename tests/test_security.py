"""Security rules: keys only from the environment and never written out; servers on this
machine only unless told; result files read as JSON only; commands run without a shell.

RELIABILITY.md ("Security") lists each rule with the test that checks it.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pytest_llmperf import cli
from pytest_llmperf.engines.base import EngineConfig
from pytest_llmperf.engines.llamacpp.server import LlamaCppServerEngine
from pytest_llmperf.engines.openai.engine import OpenAIEngine
from pytest_llmperf.engines.vllm.server import server_argv
from pytest_llmperf.plugin import options
from pytest_llmperf.procs.servers import ManagedServer, ServerError
from pytest_llmperf.report.dashboard import streamlit_argv
from tests.instrument_server import InstrumentServer
from tests.suite_run import REPO, make_project, run_project

PACKAGE = REPO / "pytest_llmperf"
KEY_VAR = "LLMPERF_SECURITY_TEST_KEY"
KEY = "sk-llmperf-SECRET-7f3a9c1e5b"


# --- API keys -------------------------------------------------------------------------------


def _option_names() -> list[str]:
    names: list[str] = []

    def record(*flags: str, **_: Any) -> None:
        names.extend(flags)

    for add in (
        options.add_engine_options,
        options.add_server_options,
        options.add_threshold_options,
        options.add_run_options,
        options.add_compare_options,
    ):
        add(record)
    names += [name for name, _, _ in options.INI_OPTIONS]
    parsers = [cli._parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            names += action.option_strings
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
    return names


def test_no_option_takes_a_key_itself() -> None:
    names = _option_names()
    assert "--api-key-env" in names and "--engine" in names and "--results-dir" in names
    secret_words = ("key", "token", "secret", "password", "auth")
    takes_secret = [n for n in names if any(w in n.lower() for w in secret_words)]
    assert sorted(set(takes_secret)) == ["--api-key-env", "llmperf_api_key_env"]


class KeyQuotingServer(InstrumentServer):
    """Refuses requests for 3 tokens the way some servers refuse a key: quoting it."""

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if 3 in (body.get("max_tokens"), body.get("max_completion_tokens")):
            auth = request.headers.get("Authorization", "")
            message = f"Incorrect API key provided: {auth}"
            return web.json_response({"error": {"message": message}}, status=401)
        return await super()._completions(request)


KEY_SUITE = """
from pytest_llmperf import SyntheticWorkload

def test_answered(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=2, input_tokens=4, output_tokens=2),
                    rounds=1, warmup_rounds=0)

def test_refused(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=2, input_tokens=4, output_tokens=3),
                    rounds=1, warmup_rounds=0)
"""


def test_api_key_is_in_no_result_file_log_or_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path, KEY_SUITE)
    monkeypatch.setenv(KEY_VAR, KEY)  # the child pytest inherits it
    with KeyQuotingServer() as server:
        out = run_project(
            project,
            *("--engine", "openai", "--base-url", server.base_url, "--api-key-env", KEY_VAR),
            *("-vv", "-rA", "--log-level=DEBUG", "--log-file=run.log", "--junitxml=junit.xml"),
            *("-o", "log_cli=true", "--log-cli-level=DEBUG"),
        )
    output = out.stdout + out.stderr
    # The key was in use and a server quoted it back on failed requests ...
    assert any(h.get("Authorization") == f"Bearer {KEY}" for h in server.headers), output
    requests = "".join(p.read_text() for p in (project / "results").rglob("requests*.jsonl"))
    assert "HTTP 401" in requests and "[redacted]" in requests, requests[-2000:]
    # ... and it is in none of what the run left behind.
    written = [p for p in project.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert any(p.name == "summary.json" for p in written) and (project / "run.log").exists()
    leaked = [str(p) for p in written if KEY.encode() in p.read_bytes()]
    assert leaked == []
    assert KEY not in output


def test_server_error_text_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, KEY)
    engine = OpenAIEngine(EngineConfig.make("openai", "tiny", {"api_key_env": KEY_VAR}))
    assert engine._redact(f"bad key {KEY}!") == "bad key [redacted]!"
    assert engine._redact(None) is None


# --- addresses -------------------------------------------------------------------------------


def test_servers_and_dashboard_bind_this_machine_by_default() -> None:
    vllm = server_argv("model", 8000, {}, on_gpu=False)
    assert vllm[vllm.index("--host") + 1] == "127.0.0.1"
    llamacpp = LlamaCppServerEngine(EngineConfig.make("llamacpp-server", "tiny", {}))
    argv = llamacpp.server_command("model.gguf", 8000).argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert cli._parser().parse_args(["dashboard"]).host == "127.0.0.1"
    streamlit = streamlit_argv(Path("results"), "127.0.0.1", 8501)
    assert streamlit[streamlit.index("--server.address") + 1] == "127.0.0.1"
    client = OpenAIEngine(EngineConfig.make("openai", "tiny", {}))
    assert client.base_url == "http://127.0.0.1:8000"


# --- result files are data ----------------------------------------------------------------------


class _Touch:
    """Unpickling this would create the file `pwned`."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned",))


EXECUTABLE_CONTENT = {
    "yaml_python_tag": b'!!python/object/apply:os.system ["touch pwned"]\n',
    "pickle": pickle.dumps(_Touch()),
}


@pytest.mark.parametrize("content", list(EXECUTABLE_CONTENT), ids=list(EXECUTABLE_CONTENT))
@pytest.mark.parametrize("name", ["summary.json", "tests.jsonl"])
def test_result_files_are_read_as_json_only(tmp_path: Path, content: str, name: str) -> None:
    project = make_project(tmp_path, "def test_x():\n    pass\n")
    run = project / "results" / "20260101-000000-aaaaaa"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run_id": run.name}))
    (run / name).write_bytes(
        EXECUTABLE_CONTENT[content] + (b"\n" if name != "summary.json" else b"")
    )
    shown = subprocess.run(
        [sys.executable, "-m", "pytest_llmperf", "show", str(run)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 2
    assert "cannot be read" in shown.stderr and "Traceback" not in shown.stderr
    compared = run_project(project, "--collect-only", "--llmperf-compare", str(run))
    assert compared.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--llmperf-compare:" in compared.stderr and "cannot be read" in compared.stderr
    assert not (project / "pwned").exists()


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """Every call with its dotted name (`subprocess.Popen`, `yaml.load`, `eval`)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func, parts = node.func, []
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            # A method of an expression (`model.to(device).eval()`) is not a module function.
            parts.append(func.id if isinstance(func, ast.Name) else "<expression>")
            found.append((".".join(reversed(parts)), node))
    return found


def _package_calls() -> list[tuple[Path, str, ast.Call]]:
    return [
        (path, name, call)
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, call in _calls(ast.parse(path.read_text(), str(path)))
    ]


def test_nothing_unpickles_evaluates_or_loads_unsafe_yaml() -> None:
    banned = {"eval", "exec", "compile", "pickle.load", "pickle.loads", "marshal.loads"}
    banned |= {"yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "torch.load"}
    found = [f"{p.name}:{c.lineno} {n}" for p, n, c in _package_calls() if n in banned]
    assert found == []
    imports = [
        f"{path.name}: {alias.name}"
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if {alias.name, getattr(node, "module", None)} & {"pickle", "marshal", "shelve", "dill"}
    ]
    assert imports == []


# --- no shell -------------------------------------------------------------------------------------


def test_no_command_goes_through_a_shell() -> None:
    calls = _package_calls()
    starts = [(p, n, c) for p, n, c in calls if n.startswith("subprocess.")]
    assert any(n == "subprocess.Popen" for _, n, _ in starts)  # the scan sees the servers
    with_shell = [
        f"{p.name}:{c.lineno}"
        for p, _, c in starts
        if any(k.arg == "shell" and not _is_false(k.value) for k in c.keywords)
    ]
    shells = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"}
    shells |= {"os.execl", "os.execlp", "os.spawnl", "asyncio.create_subprocess_shell"}
    direct = [f"{p.name}:{c.lineno} {n}" for p, n, c in calls if n in shells]
    assert with_shell == [] and direct == []


def _is_false(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


RECORDER = """
import json, sys
with open(sys.argv[1], "w") as f:
    json.dump(sys.argv[2:], f)
sys.exit(3)
"""


def test_model_path_with_shell_metacharacters_is_one_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = "$(touch pwned); `touch pwned2` | touch pwned3 && echo 'x\" y"
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    seen = tmp_path / "argv.json"
    llamacpp = LlamaCppServerEngine(EngineConfig.make("llamacpp-server", "tiny", {}))
    for argv in (server_argv(model, 8000, {}, False), llamacpp.server_command(model, 8000).argv):
        # The engine's command line as it builds it, with the program swapped for one that
        # records its arguments; run as the engines run their servers.
        recorded = [sys.executable, str(recorder), str(seen), *argv[3:]]
        server = ManagedServer(recorded, "http://127.0.0.1:9/health", start_timeout_s=30)
        monkeypatch.chdir(tmp_path)  # where `touch` would leave its files
        with pytest.raises(ServerError, match="exited with status 3"):
            server.start()
        assert json.loads(seen.read_text())[1] == model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["argv.json", "recorder.py"]
