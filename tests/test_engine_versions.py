"""Engine versions: an isolated engine under another interpreter (its `python` setting).

The A/B of one run: the hf engine under this environment's transformers and under another
release, in a virtual environment this module makes (only that transformers in its own
site-packages, this environment's after it, so torch is not installed twice; cached in
pytest's cache folder by version, so a rerun takes no time to make it).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.results.runs import read_test_records
from pytest_llmperf.suite.config import Config, fit
from tests.conftest import only_run

INSTALLED = metadata.version("transformers")
#: Another release that works with the installed torch, tokenizers and huggingface_hub.
OTHER = "5.18.0" if INSTALLED != "5.18.0" else "5.19.0"


def make_venv(folder: Path, *, base_site: bool) -> Path:
    """A virtual environment without pip (fast); with `base_site` this environment's
    site-packages follow its own on its path."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    if base_site:
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # A plain folder line: added after the venv's own site-packages, its .pth files
        # (this checkout's editable install among them) not run.
        Path(site, "zz-base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture(scope="module")
def other_transformers(request: pytest.FixtureRequest) -> Path:
    """The python of a virtual environment whose transformers is release OTHER."""
    folder = request.config.cache.mkdir("llmperf-venvs") / f"transformers-{OTHER}"
    python = folder / "bin" / "python"
    done = folder / "llmperf-ready"
    if done.exists():
        return python
    if folder.exists():  # a make that did not finish
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    make_venv(folder, base_site=True)
    site = next(folder.glob("lib/python*/site-packages"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    out = subprocess.run([*pip, f"transformers=={OTHER}"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"pip could not install transformers=={OTHER}:\n{out.stdout}{out.stderr}")
    done.write_text(OTHER)
    return python


GRID = """\
schema: 1
configs:
  installed:
    max_num_seqs: 2
    python: {a}
  other:
    max_num_seqs: 2
    python: {b}
"""

SUITE = textwrap.dedent(
    """
    from pytest_llmperf import SyntheticWorkload, grid_params
    import pytest

    @pytest.mark.parametrize("config", grid_params("grid.yaml"))
    def test_versions(llmperf, config):
        llmperf.measure(config, SyntheticWorkload(num_requests=2), rounds=1)
    """
)

AB = textwrap.dedent(
    """
    from pathlib import Path
    from pytest_llmperf import Grid, SyntheticWorkload

    INSTALLED, OTHER = Grid.from_yaml(Path(__file__).parent / "grid.yaml")

    def test_versions(llmperf):
        result = llmperf.compare(
            INSTALLED, OTHER, SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4),
            rounds=2, warmup_rounds=1,
        )
        assert result.mode == "interleaved" and result.order == "ABBA"
        assert result.speedup is not None and result.speedup.n == 2 and result.speedup.centre > 0
    """
)


def test_one_test_measures_two_transformers_releases_in_turns(
    pytester: pytest.Pytester, other_transformers: Path
) -> None:
    pytester.makefile(".yaml", grid=GRID.format(a=sys.executable, b=other_transformers))
    pytester.makepyfile(test_versions=AB)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    (record,) = read_test_records(only_run(pytester))
    assert record.ab is not None
    for side, python, version in [
        ("a", sys.executable, INSTALLED),
        ("b", str(other_transformers), OTHER),
    ]:
        interpreter = record.ab[side]["engine_info"]["interpreter"]
        assert interpreter["python"] == python
        assert interpreter["packages"]["transformers"] == version
        # torch is the same build on both sides: only transformers differs.
        assert interpreter["packages"]["torch"] == metadata.version("torch")
        # Both import this checkout's pytest_llmperf, installed there or not.
        assert interpreter["pytest_llmperf"] == str(Path(__file__).parents[1] / "pytest_llmperf")
        assert record.ab[side]["engine_config"]["settings"]["python"] == python
    assert record.engine_info.details["interpreter"]["python"] == sys.executable
    assert record.metric("a.output_tok_per_s") and record.metric("b.output_tok_per_s")
    assert len(record.samples_of("speedup")) == 2  # one B/A per pair of turns


def _fit_error(python: str) -> str:
    config = Config.make("c", {"python": python}, sources={"python": "grid.yaml: line 4"})
    with pytest.raises(LLMPerfUsageError) as info:
        fit(config, "hf")
    return str(info.value)


def test_an_interpreter_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "venv" / "bin" / "python"
    assert _fit_error(str(missing)) == (
        f"grid.yaml: line 4: setting 'python': {missing}: no such file"
    )
    assert "absolute path" in _fit_error("venv/bin/python")
    assert "is a folder" in _fit_error(str(tmp_path))
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n")
    assert _fit_error(str(script)).endswith(f"{script}: is not executable")
    script.chmod(0o755)  # runs, exits 0, says nothing: not a Python
    assert "is not a Python that can run the engine" in _fit_error(str(script))


def test_an_interpreter_without_the_engines_library_is_a_usage_error(tmp_path: Path) -> None:
    # A bare virtual environment: not even pytest_llmperf's own requirements (pytest, yaml).
    bare = make_venv(tmp_path / "bare", base_site=False)
    error = _fit_error(str(bare))
    assert error.startswith(f"grid.yaml: line 4: setting 'python': {bare}: ")
    assert "cannot import pytest_llmperf from" in error and "ModuleNotFoundError" in error
    # The base interpreter of this environment, where it has pytest but no transformers.
    base = Path(sys.base_prefix, "bin", "python3")
    probe = subprocess.run([str(base), "-c", "import pytest, yaml, torch"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{base} has torch: no interpreter here lacks only the engine's library")
    error = _fit_error(str(base))
    assert "cannot import 'torch', which the engine needs (ModuleNotFoundError" in error


def test_a_grid_with_a_missing_interpreter_stops_the_run(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", grid=GRID.format(a="/nowhere/bin/python", b=sys.executable))
    pytester.makepyfile(test_versions=SUITE)
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    grid = pytester.path / "grid.yaml"
    result.stderr.fnmatch_lines(
        [f"*{grid}: line 5: setting 'python': /nowhere/bin/python: no such file*"]
    )
