#!/usr/bin/env bash
# bench/ab_power.py on a machine with many cores, as several 2-core machines side by side:
# SLICES runs, each pinned to two cores of its own (taskset; torch's threads set to 2), the
# last two cores left to the system; their reports joined (`--merge`) into OUT/ab_power.json.
#   SLICES=7 SLOW=8 SAME=15 MINUTES=8 bash bench/ab_power_slices.sh OUT [ab_power.py's options]
# Each slice shares the machine's memory bandwidth and caches with the others: quieter than a
# shared VM, not the same as a machine of its own (BENCHMARKS.md says which figures came how).
set -u
cd "$(dirname "$0")/.."
out="${1:?usage: bench/ab_power_slices.sh OUT [options of ab_power.py]}"
shift
slices="${SLICES:-7}"
python="${PYTHON:-python3}"
mkdir -p "$out"
nproc > "$out/cores.txt"
for ((i = 0; i < slices; i++)); do
    OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 taskset -c "$((2 * i)),$((2 * i + 1))" \
        "$python" bench/ab_power.py --trials-slow "${SLOW:-8}" --trials-same "${SAME:-15}" \
        --minutes "${MINUTES:-8}" --json "$out/part$i.json" "$@" > "$out/part$i.txt" 2>&1 &
done
wait
"$python" bench/ab_power.py --merge "$out"/part*.json --json "$out/ab_power.json" "$@" \
    | tee "$out/ab_power.md"
