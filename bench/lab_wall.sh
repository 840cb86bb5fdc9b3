#!/usr/bin/env bash
# Wall time of a warm `make lab` (venv installed, nothing else cached matters for netns).
#   bash bench/lab_wall.sh [SCENARIO] [N] [ROUNDS] [BACKEND]
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-idle} n=${2:-10000} rounds=${3:-3} backend=${4:-netns}
make install >/dev/null
for i in $(seq 1 "$rounds"); do
    start=$(date +%s.%N)
    make lab SCENARIO="$scenario" N="$n" BACKEND="$backend" >/dev/null 2>&1
    end=$(date +%s.%N)
    printf 'make lab SCENARIO=%s N=%s BACKEND=%s: %.2f s\n' "$scenario" "$n" "$backend" "$(echo "$end - $start" | bc)"
done
