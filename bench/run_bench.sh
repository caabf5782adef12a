#!/usr/bin/env bash
# antenna-tw against the nginx floor with a load harness (wrk plus its payload maker)
# whose path is given with --harness DIR or $BENCH_HARNESS; not run by CI.
#   bench/run_bench.sh [matrix] --harness DIR [--blocks ...] [--rounds 3] [--secs 10] [--workers 2]
#   bench/run_bench.sh profile --harness DIR [--payloads 400k 400k_gz] [--conc 32] [--duration 15]
# Full usage: bench/run_bench.sh --help, and the top of bench/run_bench.py.
set -euo pipefail
exec python3 "$(dirname "$0")/run_bench.py" "$@"
