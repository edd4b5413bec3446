#!/usr/bin/env bash
# The nightly GPU job (.github/workflows/nightly-gpu.yml runs it on a self-hosted GPU runner):
# run the suites on the machine's GPUs, gate every test on the thresholds and on the newest
# kept night (--llmperf-compare), judge tonight's run against the kept nights with
# `llmperf trend` (it fails on a new regression: tonight worse than the nights before it,
# pooled, allow, or worse than the first kept nights beyond the drift between runs, which
# catches a slowdown that creeps in a few percent a night), and write an HTML report of the
# kept nights and tonight beside the run.
#
#   scripts/nightly.sh             the real job
#   scripts/nightly.sh --dry-run   build and check everything, start no engine, on any machine
#                                  (the trend then runs over the kept nights alone)
#   scripts/nightly.sh --keep      add tonight's run to the kept nights and drop the oldest
#                                  past LLMPERF_NIGHTLY_KEEP (the workflow, after a green night)
#   scripts/nightly.sh --shard K/N [--dry-run]
#                                  run shard K of N of the suites (--llmperf-shard), gated as
#                                  the real job is, no trend or report (nightly-gpu-matrix.yml:
#                                  one runner each)
#   scripts/nightly.sh --merge DIR the shards' run folders in DIR joined into tonight's run
#                                  (`llmperf merge`), then the trend and report as the real job
#                                  (a shard's failed tests turned its own runner red already)
#
# Environment: LLMPERF_NIGHTLY_RESULTS (default results/nightly), LLMPERF_NIGHTLY_HISTORY (the
# kept nights' run folders; default history/, which the workflow restores from its cache),
# LLMPERF_NIGHTLY_KEEP (nights kept, default 14: steps are found in 12 runs or more),
# LLMPERF_NIGHTLY_WINDOW (nights tonight is judged against, default 7),
# LLMPERF_NIGHTLY_MARKERS (default "smoke or accuracy or longform").
set -euo pipefail
cd "$(dirname "$0")/.."
results="${LLMPERF_NIGHTLY_RESULTS:-results/nightly}"
history="${LLMPERF_NIGHTLY_HISTORY:-history}"
keep="${LLMPERF_NIGHTLY_KEEP:-14}"
window="${LLMPERF_NIGHTLY_WINDOW:-7}"
markers="${LLMPERF_NIGHTLY_MARKERS:-smoke or accuracy or longform}"
llmperf=(.venv/bin/python -m pytest_llmperf)
usage="usage: scripts/nightly.sh [--dry-run] [--shard K/N | --merge DIR] | --keep"
for number in "$keep" "$window"; do
    [[ "$number" =~ ^[1-9][0-9]*$ ]] || { echo "nightly: not a count: '$number'" >&2; exit 2; }
done

run_folders() {  # the run folders in $1, oldest first (run ids begin with their start time)
    [ -d "$1" ] || return 0
    find "$1" -mindepth 1 -maxdepth 1 -type d | sort
}

shard=""
merge_from=""
dry_run=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --shard) shard="${2:-}"; shift ;;
        --merge) merge_from="${2:-}"; shift ;;
        --keep) [ $# -eq 1 ] && [ -z "$shard$merge_from$dry_run" ] || { echo "$usage" >&2; exit 2; }; break ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
done
[ -z "$shard" ] || [ -z "$merge_from" ] || { echo "$usage" >&2; exit 2; }

case "${1:-}" in
    --keep)
        tonight="$(run_folders "$results" | tail -n 1)"
        [ -n "$tonight" ] || { echo "nightly: no run in $results to keep" >&2; exit 1; }
        mkdir -p "$history"
        rm -rf "${history:?}/$(basename "$tonight")"
        cp -r "$tonight" "$history/"
        run_folders "$history" | head -n -"$keep" | xargs -r rm -rf
        echo "nightly: kept $(basename "$tonight"); $(run_folders "$history" | wc -l) night(s) in $history"
        exit 0
        ;;
esac

mapfile -t past < <(run_folders "$history")
status=0
if [ -n "$merge_from" ]; then
    mapfile -t shards < <(run_folders "$merge_from")
    [ "${#shards[@]}" -gt 0 ] || { echo "nightly: no shard run in $merge_from" >&2; exit 1; }
    # Named for now, so that it sorts after the kept nights as a run's own id does.
    "${llmperf[@]}" merge "${shards[@]}" -o "$results/$(date -u +%Y%m%d-%H%M%S)-merged"
else
    args=(suites/ -m "$markers" --llmperf-results-dir "$results" -rs)
    [ -n "$dry_run" ] && args+=(--llmperf-dry-run --gpus cpu)
    [ -n "$shard" ] && args+=(--llmperf-shard "$shard")
    if [ "${#past[@]}" -gt 0 ]; then
        args+=(--llmperf-compare "${past[-1]}")
        echo "nightly: comparing with the baseline in ${past[-1]} (the newest of ${#past[@]} kept night(s))"
    else
        echo "nightly: no night kept in $history yet; thresholds only"
    fi
    .venv/bin/python -m pytest "${args[@]}" || status=$?
    [ -z "$shard" ] || exit "$status"  # the merge job judges the whole night
fi

tonight="$(run_folders "$results" | tail -n 1)"  # none after a dry run
runs=("${past[@]}")
[ -n "$tonight" ] && runs+=("$tonight")
if [ "${#runs[@]}" -ge 3 ]; then
    echo "nightly: trend over ${#runs[@]} runs; the newest against up to $window before it and against the first kept nights"
    trend=0
    "${llmperf[@]}" trend "${runs[@]}" --window "$window" --fail-on newest || trend=$?
    [ "$status" -ne 0 ] || status=$trend
else
    echo "nightly: ${#runs[@]} run(s) so far; the trend judges the newest from 3 on"
fi
if [ -n "$tonight" ]; then
    "${llmperf[@]}" report "${runs[@]}" -o "$results/report.html"
fi
exit "$status"
