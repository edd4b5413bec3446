#!/usr/bin/env bash
# Issue 25's GPU measurements, for a lent H100 with torch and transformers, in calls of at
# most 9 minutes each (a lent machine's call is limited to 600 s; BENCHMARKS.md says what
# each figure is):
#   bench/gpu_decode_run.sh OUT_DIR PART [SECONDS]
# PART is one call:
#   fast   (call 1) the Triton kernel checks compiled on the GPU (tests/kernel_checks, the
#          four cache-rounding cases included), hf-fast through the plugin at batch 1 and 32
#          (suites/test_decode_speed.py: 128-token prompts, 256 new tokens, mbu and the
#          weights-only bound), then bench/hf_generate_ab.py at batch 1 and 32 (a plain
#          script's generate against the plugin's hf with a static cache compiled, A B B A).
#   hf     (call 2) hf with seed 004's options at batch 1, 8 and 32 through the plugin
#          (suites/test_hf_options.py: bf16; sdpa, eager, flash_attention_2 where installed;
#          static cache compiled first, then the dynamic cache uncompiled).
#   tests  (optional third call) the GPU tests: tests/test_hf_generate.py (hf's tokens equal
#          batched generate's per setting, on cuda), tests/test_hf_graph.py and
#          tests/test_triton_decode.py (hf-fast's graph path and kernels).
# SECONDS (default 530) bounds the call: each step's own limit is cut to what is left, the
# steps most needed first; a step cut short keeps what it finished (results are written per
# test). Compiling costs 24-35 s per shape (hf's generate and hf-fast's graphs alike), paid
# in each configuration's warm-up round and in the A/B's warm-up calls; the step limits
# below include it.
# OUT_DIR/all.tgz gets (refreshed after every step, so a call cut short keeps what it did):
# clocks.txt (SM/memory clocks, power, temperature between steps), times.txt (seconds per
# step), and per PART: fast: checks.txt, suite-fast.txt, ab.jsonl and ab.txt; hf:
# suite-hf.txt; tests: tests.txt; and results/ (the plugin's run folders).
# The 1B-shaped random Llama is built once into /tmp/llama1b (kept while the machine is).
set -u
cd "$(dirname "$0")/.."
out="${1:?usage: bench/gpu_decode_run.sh OUT_DIR fast|hf|tests [SECONDS]}"
part="${2:?usage: bench/gpu_decode_run.sh OUT_DIR fast|hf|tests [SECONDS]}"
deadline=$((SECONDS + ${3:-530}))
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
    clocks
    pack
}
keep_results() { rm -rf "$stage/results"; cp -r results "$stage/results" 2>/dev/null; pack; }
clocks
python3 -m pip install -q --no-build-isolation --no-deps -e . > "$stage/install.txt" 2>&1
model=/tmp/llama1b
builder=
if [[ $part != tests && ! -f $model/config.json ]]; then
    python3 bench/build_random_llama.py --shape llama-3.2-1b --out $model > "$stage/build.txt" 2>&1 &
    builder=$!
fi
built() { [[ -z $builder ]] || wait "$builder"; }
plugin=(--model $model --gpus 0 -p no:cacheprovider)
case "$part" in
fast)
    step 100 checks.txt python3 -m pytest -q -p no:cacheprovider tests/kernel_checks/check_triton_decode.py
    built
    step 210 suite-fast.txt python3 -m pytest suites/test_decode_speed.py -m smoke --engine hf-fast "${plugin[@]}"
    keep_results
    step 210 ab.txt python3 bench/hf_generate_ab.py --model $model --batch 1 32 --blocks 5 --json "$stage/ab.jsonl"
    ;;
hf)
    built
    step 520 suite-hf.txt python3 -m pytest suites/test_hf_options.py --engine hf -rs "${plugin[@]}"
    keep_results
    ;;
tests)
    step 520 tests.txt python3 -m pytest -q -rs -p no:cacheprovider tests/test_hf_generate.py \
        tests/test_hf_graph.py tests/test_triton_decode.py
    ;;
*)
    echo "unknown PART '$part': fast, hf or tests" >&2
    exit 2
    ;;
esac
pack
