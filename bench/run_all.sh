#!/usr/bin/env bash
# Runs every capguard benchmark and rewrites bench/RESULTS.md (about 25 minutes; QUICK=1: about 5, with fewer
# trials than the figures in RESULTS.md are meant to have). Scratch data goes to bench/.work/ (git-ignored).
#   bash bench/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${CAPGUARD_BENCH_PYTHON:-python}  # the Python capguard is installed in
if [[ "${QUICK:-0}" == 1 ]]; then
  TRIALS=30; K0TRIALS=10; BREAKDOWN=10; SECONDS_IDLE=30; RUNS=20
else
  TRIALS=200; K0TRIALS=50; BREAKDOWN=50; SECONDS_IDLE=60; RUNS=40
fi
rm -f bench/.work/results/enforcement_latency*.json bench/.work/results/idle_cost*.json bench/.work/results/startup_overhead.json

echo "== 1. enforcement latency"
"$PY" bench/enforcement_latency.py --trials "$TRIALS" --breakdown "$BREAKDOWN"
"$PY" bench/enforcement_latency.py --trials "$K0TRIALS" --capguard-arg=--kill-after=0 --name enforcement_latency_kill0

echo "== 2. idle cost"
"$PY" bench/idle_cost.py --seconds "$SECONDS_IDLE"

echo "== 3. start-up overhead"
"$PY" bench/startup_overhead.py --runs "$RUNS"

"$PY" bench/render_results.py
