#!/usr/bin/env bash
# Issue 11's GPU measurements in one go, for a lent machine with torch and transformers
# (BENCHMARKS.md says what each figure is):
#   bench/gpu_decode_run.sh OUT_DIR [SECONDS]
# SECONDS (default 570) bounds the whole run: each step's own limit is cut to what is left,
# the steps most needed first (a lent machine's call is limited to 600 s).
# OUT_DIR/all.tgz gets (refreshed after every step, so a run cut short keeps what it did):
# clocks.txt (SM/memory clocks, power, temperature before and after), times.txt (seconds per
# step), checks.txt (tests/kernel_checks compiled on the GPU), kernels.json
# (bench/triton_kernels.py: each batch-1 kernel's time and bandwidth, every candidate tile),
# steps-*.json (bench/hf_graph_steps.py at batch 1: Triton kernels vs the compiled step, A/B
# on the same machine, with kernel profiles), suite.txt and results/ (the plugin's
# suites/test_decode_speed.py, batch 1 and 32), hfgraph.txt (tests/test_hf_graph.py).
set -u
cd "$(dirname "$0")/.."
out="${1:?usage: bench/gpu_decode_run.sh OUT_DIR [SECONDS]}"
deadline=$((SECONDS + ${2:-570}))
stage="$(mktemp -d)"
mkdir -p "$out"
pack() { tar czf "$out/all.tgz" -C "$stage" .; }
clocks() {
    nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,power.draw,temperature.gpu \
        --format=csv,noheader >> "$stage/clocks.txt"
}
step() {  # step SECONDS OUTFILE COMMAND...: run (within the deadline), time, pack
    local limit="$1" file="$2" start left=$((deadline - SECONDS))
    shift 2
    ((left < limit)) && limit=$left
    ((limit <= 0)) && { echo "skipped (no time left): $*" >> "$stage/times.txt"; return; }
    start=$(date +%s%N)
    timeout "$limit" "$@" > "$stage/$file" 2>&1
    echo "exit $?, $(( ($(date +%s%N) - start) / 1000000 )) ms: $*" >> "$stage/times.txt"
    pack
}
clocks
python3 -m pip install -q --no-build-isolation --no-deps -e . > "$stage/install.txt" 2>&1
python3 bench/build_random_llama.py --shape llama-3.2-1b --out /tmp/llama1b > "$stage/build.txt" 2>&1 &
builder=$!
step 100 checks.txt python3 -m pytest -q -p no:cacheprovider tests/kernel_checks/check_triton_decode.py
step 200 kernels.json python3 bench/triton_kernels.py
wait "$builder"
clocks
step 240 suite.txt python3 -m pytest suites/test_decode_speed.py -m smoke --model /tmp/llama1b \
    --gpus 0 -p no:cacheprovider
cp -r results "$stage/results" 2>/dev/null
clocks
model=(--model /tmp/llama1b --batch 1)
step 120 steps-triton.json python3 bench/hf_graph_steps.py "${model[@]}" --profile "$stage/prof-triton"
step 150 steps-compiled.json python3 bench/hf_graph_steps.py "${model[@]}" \
    --settings '{"triton_kernels": false}' --profile "$stage/prof-compiled"
clocks
step 150 hfgraph.txt python3 -m pytest -q -p no:cacheprovider tests/test_hf_graph.py tests/test_triton_decode.py
pack
