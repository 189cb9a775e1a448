#!/usr/bin/env bash
# Run the whole suite N times (default 20) in random order and in parallel, as
# `make pytest` does, and print how many runs failed, with the seed of each
# failed run so it can be replayed: pytest -p randomly --randomly-seed=SEED.
#
#   scripts/flake_check.sh 20
set -u
runs=${1:-20}
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || { echo "no .venv: run 'make test' once first" >&2; exit 2; }
logs=$(mktemp -d)
failures=0
for i in $(seq 1 "$runs"); do
    seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    start=$(date +%s%N)
    if env -u PYTHONDONTWRITEBYTECODE "$python" -m pytest -q -p randomly --randomly-seed="$seed" \
        -n $(($(nproc) + 1)) --dist worksteal tests >"$logs/run$i.log" 2>&1; then
        outcome=ok
    else
        outcome=FAILED
        failures=$((failures + 1))
    fi
    ms=$((($(date +%s%N) - start) / 1000000))
    echo "run $i/$runs: $outcome (seed $seed, $((ms / 1000)).$((ms % 1000 / 100)) s) $(tail -1 "$logs/run$i.log")"
done
echo "failures: $failures / $runs (logs in $logs)"
[ "$failures" -eq 0 ]
