#!/usr/bin/env python3
"""
The per-byte work a collector cannot skip for one crash body, measured in one
process without a server (not run by CI): the SHA-256 of the body as stored
(the uncompressed body) and, for a gzip body, its inflate with the backend the
collector uses (``antenna_tw.intake.inflate.DEFAULT_BACKEND``). Added to the
nginx floor's CPU per request, it is what ``bench/run_bench.py`` compares
the collector's CPU per crash with (docs/performance.rst, *CPU per crash
against the work*).

    .venv/bin/python bench/work_floor.py --payloads DIR [--names 400k 400k_gz 3m] \
        [--rounds 15] [--json]

Each figure is the CPU time (this thread) of one hash or inflate of the whole
body, the median of ``--rounds`` rounds (and the best, printed beside it);
rounds of different payloads and kinds alternate so that other load on the
machine hits them alike.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from antenna_tw.intake import inflate  # noqa: E402
from bench.payloads import header_map, read_payload, require_payloads  # noqa: E402

READ_SIZE = 256 * 1024  # pieces as the collector reads them (UPLOAD_READ_SIZE)


def gunzip(body: bytes) -> bytes:
    """The whole body inflated in READ_SIZE pieces (gzip wrapper)."""
    backend = inflate.BACKENDS[inflate.DEFAULT_BACKEND]
    inflater = backend.decompressobj(wbits=31)
    out = [inflater.decompress(body[i:i + READ_SIZE]) for i in range(0, len(body), READ_SIZE)]
    out.append(inflater.flush())
    return b"".join(out)


def timed(fn: Callable[[bytes], object], arg: bytes) -> float:
    """CPU seconds of ``fn(arg)`` on this thread."""
    start = time.thread_time()
    fn(arg)
    return time.thread_time() - start


def measure(directory: Path, names: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """{name: {sha256_ms, inflate_ms, work_ms, *_best_ms, bytes}} medians over rounds."""
    jobs = []
    for name in names:
        body, headers = read_payload(directory, name)
        gzipped = header_map(headers).get("content-encoding", "").lower() == "gzip"
        plain = gunzip(body) if gzipped else body
        jobs.append((name, "sha256", lambda data: hashlib.sha256(data).digest(), plain))
        if gzipped:
            jobs.append((name, "inflate", gunzip, body))
    times: dict[tuple[str, str], list[float]] = {(n, k): [] for n, k, _f, _a in jobs}
    for _ in range(rounds):
        for name, kind, fn, arg in jobs:
            times[(name, kind)].append(timed(fn, arg))
    out: dict[str, dict[str, float]] = {}
    for (name, kind), values in times.items():
        row = out.setdefault(name, {"sha256_ms": 0.0, "inflate_ms": 0.0})
        row[f"{kind}_ms"] = round(1000 * statistics.median(values), 3)
        row[f"{kind}_best_ms"] = round(1000 * min(values), 3)
    for row in out.values():
        row["work_ms"] = round(row["sha256_ms"] + row["inflate_ms"], 3)
    out["_backend"] = {"inflate": inflate.DEFAULT_BACKEND}  # type: ignore[dict-item]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payloads", type=Path, required=True)
    parser.add_argument("--names", nargs="+", default=["400k", "400k_gz", "3m"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    require_payloads(args.payloads, args.names)
    result = measure(args.payloads, args.names, args.rounds)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"inflate backend: {inflate.DEFAULT_BACKEND}; median (best) of {args.rounds} rounds, "
          "ms of CPU per body")
    for name in args.names:
        row = result[name]
        line = f"{name:10} sha256 {row['sha256_ms']:.3f} ({row['sha256_best_ms']:.3f})"
        if "inflate_best_ms" in row:
            line += f"  inflate {row['inflate_ms']:.3f} ({row['inflate_best_ms']:.3f})"
        print(line + f"  work {row['work_ms']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
