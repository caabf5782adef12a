"""
What ``METRICS_CLASS=prometheus`` adds to each metric a crash emits (not
run by CI; about ten seconds).

A ``Metrics`` with the Prometheus backend in ``prometheus_client``'s
multi-process mode (its files in a temporary directory, as a worker has
them) against a ``Metrics`` with no backend, in alternating rounds of
``--calls`` calls each: one counter increment (``incoming_crash``), one
labelled increment (``throttle`` with ``result:accept``) and one timing
(``on_post.time``, a histogram observation). Prints per-call medians of the
rounds in microseconds and what the backend adds.

    .venv/bin/python bench/prometheus_micro.py [--calls 100000] [--rounds 11]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Before prometheus_client is imported, as `twistd antenna` sets it.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-micro-")
atexit.register(shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], True)

from antenna_tw import metricnames  # noqa: E402
from antenna_tw.metrics import Metrics, build_metrics  # noqa: E402
from antenna_tw.config import AppSettings  # noqa: E402

CALLS = {
    "incr": lambda m: m.incr(metricnames.INCOMING_CRASH),
    "incr+label": lambda m: m.incr(metricnames.THROTTLE, tags=["result:accept"]),
    "timing": lambda m: m.timing(metricnames.ON_POST_TIME, 12.5),
}


def per_call(metrics, call, calls):
    start = time.perf_counter()
    for _ in range(calls):
        call(metrics)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    prometheus = build_metrics(AppSettings(metrics_class="prometheus"))
    bare = Metrics([])
    for name, call in CALLS.items():
        with_backend, without = [], []
        for _ in range(args.rounds):  # alternating pairs
            with_backend.append(per_call(prometheus, call, args.calls))
            without.append(per_call(bare, call, args.calls))
        ratios = [a / b for a, b in zip(with_backend, without, strict=True)]
        print(f"{name:11} prometheus {statistics.median(with_backend):6.2f} us  "
              f"no backend {statistics.median(without):6.2f} us  "
              f"added {statistics.median(with_backend) - statistics.median(without):6.2f} us  "
              f"ratio {statistics.median(ratios):5.1f}")


if __name__ == "__main__":
    main()
