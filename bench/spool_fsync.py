"""
What SPOOL_FSYNC costs per spooled crash (not run by CI).

Writes N crashes into a spool directory with the spool's own write path
(temp file, rename, and with fsync: fsync of the file, then of the
directory), one after another, with SPOOL_FSYNC off and on, for a small and
a large crash, and prints the median and 99th percentile time per write.
The spool directory is made under --dir (default: the current directory),
so run it on the disk the spool will live on.

    .venv/bin/python bench/spool_fsync.py [--crashes 200] [--dir .] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from antenna_tw.crash import Crash  # noqa: E402
from antenna_tw.spool import Spool  # noqa: E402


def crash(sequence, dump_bytes):
    crash_id = f"{sequence:08x}-cbbf-4589-a673-34f800261127"
    return Crash(crash_id, {"ProductName": "Test", "uuid": crash_id},
                 {"upload_file_minidump": os.urandom(dump_bytes)})


def measure(directory, fsync, count, dump_bytes):
    """Milliseconds per write, in order."""
    spool_dir = tempfile.mkdtemp(prefix="bench-spool-", dir=directory)
    try:
        spool = Spool(spool_dir, reactor=None, threadpool=None, fsync=fsync)
        spool.open()
        crashes = [crash(n, dump_bytes) for n in range(count)]
        times = []
        for n, one in enumerate(crashes):
            started = time.perf_counter()
            spool._put(one, f"{n:020d}-{one.crash_id}.crash")
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        shutil.rmtree(spool_dir)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crashes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=".")
    parser.add_argument("--sizes-kb", type=int, nargs="+", default=[50, 1024])
    args = parser.parse_args(argv)
    print(f"{args.crashes} crashes per round, spool under {os.path.abspath(args.dir)}")
    print(f"{'dump':>8} {'SPOOL_FSYNC':>12} {'median ms':>10} {'p99 ms':>8} {'writes/s':>9}")
    for size_kb in args.sizes_kb:
        for round_number in range(args.rounds):
            for fsync in (False, True):
                times = measure(args.dir, fsync, args.crashes, size_kb * 1024)
                print(f"{size_kb:>6}KB {str(fsync).lower():>12} "
                      f"{percentile(times, 0.5):>10.2f} {percentile(times, 0.99):>8.2f} "
                      f"{1000 * len(times) / sum(times):>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
