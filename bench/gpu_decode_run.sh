#!/usr/bin/env bash
# Issue 25's GPU measurements, for a lent H100 with torch, transformers and triton (no network
# needed), in calls of at most 9 minutes each (a lent machine's call is limited to 600 s;
# BENCHMARKS.md says what each figure is):
#   bash bench/gpu_decode_run.sh OUT_DIR [SECONDS]              # call 1: PART=fast
#   PART=hf bash bench/gpu_decode_run.sh OUT_DIR [SECONDS]      # call 2
#   PART=tests bash bench/gpu_decode_run.sh OUT_DIR [SECONDS]   # optional call 3
# (`bench/gpu_decode_run.sh OUT_DIR PART [SECONDS]` works too.) PART is one call:
#   fast   (default) the Triton kernel checks compiled on the GPU (tests/kernel_checks, the
#          four cache-rounding cases included), hf-fast through the plugin at batch 1 and 32
#          (suites/test_decode_speed.py: 128-token prompts, 256 new tokens, mbu and the
#          weights-only bound), then bench/hf_generate_ab.py at batch 1 and 32 (a plain
#          script's generate against the plugin's hf with a static cache compiled, A B B A).
#   hf     hf with seed 004's options at batch 1, 8 and 32 through the plugin
#          (suites/test_hf_options.py: bf16; sdpa, eager, flash_attention_2 where installed;
#          static cache compiled first, then the dynamic cache uncompiled), then, in the time
#          left, hf's GPU tests (tests/test_hf_generate.py -k cuda: its greedy tokens equal
#          batched generate's per setting, compiled by transformers on the GPU).
#   speedups  seed 004's options as A/B tests (suites/test_hf_speedups.py, issue 26: each
#          pair measured in turns, B/A with its interval), twice, each run its own results
#          folder (results/), from which `llmperf calibrate` writes the GPU's bounds.
#   scaling  seed 003's workers (suites/test_scaling.py: the smoke series, then each worker
#          count as an A/B test against one worker, longform), twice, each run its own results
#          folder, from which `llmperf calibrate` writes the GPU's bounds.
#   tests  the GPU tests of both engines: tests/test_hf_graph.py and
#          tests/test_triton_decode.py (hf-fast's graph path and kernels), then
#          tests/test_hf_generate.py -k cuda (all of it, where call 2 ran out of time).
# SECONDS (default 530) bounds the call: each step's own limit is cut to what is left, the
# steps most needed first; a step cut short keeps what it finished (results are written per
# test). Compiling costs 24-35 s per shape (hf's generate and hf-fast's graphs alike), paid
# in each configuration's warm-up round and in the A/B's warm-up calls; the step limits
# below include it.
# OUT_DIR/all.tgz gets (refreshed after every step, so a call cut short keeps what it did):
# clocks.txt (SM/memory clocks, power, temperature between steps), times.txt (seconds per
# step), install.txt, and per PART: fast: checks.txt, suite-fast.txt, ab.jsonl and ab.txt;
# hf: suite-hf.txt, tests-hf.txt; tests: tests.txt; and results/ (the plugin's run folders).
# The 1B-shaped random Llama is built once into /tmp/llama1b (kept while the machine is).
# For a dry run of the script itself (no GPU: every GPU step skips or fails fast):
# PYTHON=.venv/bin/python INSTALL=0 MODEL=tiny bash bench/gpu_decode_run.sh OUT 20
set -u
cd "$(dirname "$0")/.."
usage="usage: [PART=fast|hf|speedups|scaling|tests] bench/gpu_decode_run.sh OUT_DIR [SECONDS]"
out="${1:?$usage}"
part="${PART:-fast}"
seconds="${2:-530}"
if [[ -n ${2:-} && ! $2 =~ ^[0-9]+$ ]]; then  # the older form: OUT_DIR PART [SECONDS]
    part="$2"
    seconds="${3:-530}"
fi
case "$part" in
fast | hf | speedups | scaling | tests) ;;
*)
    echo "unknown PART '$part': fast, hf, speedups, scaling or tests ($usage)" >&2
    exit 2
    ;;
esac
python="${PYTHON:-python3}"
deadline=$((SECONDS + seconds))
stage="$(mktemp -d)"
mkdir -p "$out"
echo "PART=$part SECONDS=$seconds $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null)" \
    > "$stage/times.txt"
pack() { tar czf "$out/all.tgz" -C "$stage" .; }
clocks() {
    nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,power.draw,temperature.gpu \
        --format=csv,noheader >> "$stage/clocks.txt" 2>&1
}
step() {  # step SECONDS OUTFILE COMMAND...: run (within the deadline), time, pack
    local limit="$1" file="$2" start left=$((deadline - SECONDS))
    shift 2
    ((left < limit)) && limit=$left
    ((limit <= 0)) && { echo "skipped (no time left): $*" >> "$stage/times.txt"; return; }
    start=$(date +%s%N)
    # (killed 20 s after its limit if it ignores the TERM: the call's own limit is near)
    timeout -k 20 "$limit" "$@" >> "$stage/$file" 2>&1
    echo "exit $?, $(( ($(date +%s%N) - start) / 1000000 )) ms (limit $limit s): $*" \
        >> "$stage/times.txt"
    clocks
    pack
}
left() { echo $((deadline - SECONDS)); }
keep_results() { rm -rf "$stage/results"; cp -r results "$stage/results" 2>/dev/null; pack; }
clocks
if [[ ${INSTALL:-1} != 0 ]]; then
    # No network: the build backend (setuptools) must be the machine's own.
    if ! "$python" -m pip install -q --no-build-isolation --no-deps -e . > "$stage/install.txt" 2>&1
    then
        # Run from the checkout instead; the plugin then comes from PYTEST_PLUGINS, not from
        # the installed entry point.
        echo "pip install failed: running from the checkout (PYTHONPATH)" >> "$stage/install.txt"
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTEST_PLUGINS=pytest_llmperf.plugin
    fi
fi
pack
model="${MODEL:-/tmp/llama1b}"
builder=
if [[ $part != tests && -z ${MODEL:-} && ! -f $model/config.json ]]; then
    "$python" bench/build_random_llama.py --shape llama-3.2-1b --out "$model" \
        > "$stage/build.txt" 2>&1 &
    builder=$!
fi
built() { [[ -z $builder ]] || wait "$builder"; builder=; }
plugin=(--model "$model" --gpus 0)
pytest=("$python" -m pytest -p no:cacheprovider)
case "$part" in
fast)
    step 100 checks.txt "${pytest[@]}" -q tests/kernel_checks/check_triton_decode.py
    built
    step 210 suite-fast.txt "${pytest[@]}" suites/test_decode_speed.py -m smoke --engine hf-fast \
        -rs "${plugin[@]}"
    keep_results
    step 210 ab.txt "$python" bench/hf_generate_ab.py --model "$model" --batch 1 32 --blocks 5 \
        --json "$stage/ab.jsonl"
    ;;
hf)
    built
    # The options first (the measurements are the point); hf's GPU tests in what is left,
    # at least 60 s kept for them.
    step $(($(left) - 60)) suite-hf.txt "${pytest[@]}" suites/test_hf_options.py --engine hf \
        -rs "${plugin[@]}"
    keep_results
    step 600 tests-hf.txt "${pytest[@]}" -q -rs tests/test_hf_generate.py -k cuda
    ;;
speedups)
    built
    # Two runs, each in its own pytest process (the drift between processes is what a
    # bound must allow for); the second gets what the first left.
    step $(($(left) / 2)) speedups-1.txt "${pytest[@]}" suites/test_hf_speedups.py --engine hf \
        -rs "${plugin[@]}"
    keep_results
    step $(($(left) - 10)) speedups-2.txt "${pytest[@]}" suites/test_hf_speedups.py --engine hf \
        -rs "${plugin[@]}"
    keep_results
    ;;
scaling)
    built
    for run in 1 2; do
        step $(($(left) / (3 - run) - 5)) "scaling-$run.txt" "${pytest[@]}" \
            suites/test_scaling.py -m "smoke or longform" --engine hf -rs "${plugin[@]}"
        keep_results
    done
    ;;
tests)
    step 300 tests.txt "${pytest[@]}" -q -rs tests/test_hf_graph.py tests/test_triton_decode.py
    step 600 tests.txt "${pytest[@]}" -q -rs tests/test_hf_generate.py -k cuda
    ;;
esac
pack
