#!/usr/bin/env bash
# The nightly GPU job (.github/workflows/nightly-gpu.yml runs it on a self-hosted GPU runner):
# run the suites on the machine's GPUs, gate every test on the last green night's results
# (--llmperf-compare) as well as on the thresholds, and write an HTML report beside the run.
#
#   scripts/nightly.sh             the real job
#   scripts/nightly.sh --dry-run   build and check everything, start no engine, on any machine
#
# Environment: LLMPERF_NIGHTLY_RESULTS (default results/nightly), LLMPERF_NIGHTLY_BASELINE
# (a run folder; default baseline/, which the workflow restores from its cache),
# LLMPERF_NIGHTLY_MARKERS (default "smoke or accuracy or longform").
set -euo pipefail
cd "$(dirname "$0")/.."
results="${LLMPERF_NIGHTLY_RESULTS:-results/nightly}"
baseline="${LLMPERF_NIGHTLY_BASELINE:-baseline}"
markers="${LLMPERF_NIGHTLY_MARKERS:-smoke or accuracy or longform}"
args=(suites/ -m "$markers" --llmperf-results-dir "$results" -rs)
case "${1:-}" in
    --dry-run) args+=(--llmperf-dry-run --gpus cpu) ;;
    "") ;;
    *) echo "usage: scripts/nightly.sh [--dry-run]" >&2; exit 2 ;;
esac
if [ -f "$baseline/summary.json" ]; then
    args+=(--llmperf-compare "$baseline")
    echo "nightly: comparing with the baseline in $baseline"
else
    echo "nightly: no baseline in $baseline yet; thresholds only"
fi
status=0
.venv/bin/python -m pytest "${args[@]}" || status=$?
if [ -d "$results" ] && [ -n "$(ls -A "$results")" ]; then
    reports=(latest)
    [ -f "$baseline/summary.json" ] && reports=("$baseline" latest)
    .venv/bin/python -m pytest_llmperf report "${reports[@]}" --results-dir "$results" \
        -o "$results/report.html"
fi
exit "$status"
