#!/usr/bin/env bash
# Build llama.cpp's own `llama-bench` and `llama-server` from the llama.cpp that the pinned
# llama-cpp-python vendors (the same C++ code our llamacpp engine runs), for
# bench/llamacpp_vs_llama_bench.py and the llamacpp-server engine. Takes about 10 minutes
# on 2 cores; the binaries land in .cache/llama.cpp-tools/build/bin (not tracked), beside the
# shared libraries they link.
#   scripts/build_llama_cpp_tools.sh            CPU build
#   CMAKE_ARGS=-DGGML_CUDA=on scripts/build_llama_cpp_tools.sh   on a CUDA machine
# The CPU build targets x86-64-v3 (AVX2, FMA, F16C), as scripts/setup.sh builds
# llama-cpp-python: a -march=native build dies with SIGILL where the CPU reports AMX that
# the virtual machine does not enable.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36
work=.cache/llama.cpp-tools
mkdir -p "$work"
if [ ! -d "$work/src" ]; then
    .venv/bin/pip download --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version"
    tar xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
    mv "$work/llama_cpp_python-$version/vendor/llama.cpp" "$work/src"
    rm -rf "$work/llama_cpp_python-$version" "$work/llama_cpp_python-$version.tar.gz"
fi
# shellcheck disable=SC2086  # CMAKE_ARGS is a list of flags
cmake -S "$work/src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    ${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}
cmake --build "$work/build" --target llama-bench llama-server -j "$(nproc)"
echo "built: $work/build/bin/llama-bench $work/build/bin/llama-server"
