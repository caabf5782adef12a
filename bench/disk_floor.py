#!/usr/bin/env python3
"""
What the kernel charges for writing a crash's dump: CPU per 400 KB file kept
on disk (as a collector must) against one unlinked at once (as the nginx
floor does: its bodies never reach the disk). Not run by CI; bounded by
--files and --rounds; writes only under --dir, and removes what it wrote.

    python3 bench/disk_floor.py [--dir /path/on/the/spool/disk] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_files(directory, pieces, count, keep, start):
    """CPU and wall milliseconds per file for ``count`` files written with one writev each."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    for number in range(start, start + count):
        path = os.path.join(directory, f"{number:08d}.dump")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.writev(fd, pieces)
        finally:
            os.close(fd)
        if not keep:
            os.unlink(path)
    return ((cpu_seconds() - cpu) * 1000 / count, (time.perf_counter() - wall) * 1000 / count)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--size", type=int, default=409_600)
    parser.add_argument("--files", type=int, default=800, help="files per round and mode")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="disk-floor-", dir=args.dir)
    half = args.size // 2
    pieces = [os.urandom(half), os.urandom(args.size - half)]  # as a dump arrives: in pieces
    results = {"kept": [], "unlinked": []}
    try:
        written = 0
        for _ in range(args.rounds):
            for mode in ("kept", "unlinked"):
                results[mode].append(write_files(directory, pieces, args.files,
                                                 mode == "kept", written))
                written += args.files
    finally:
        shutil.rmtree(directory)
    print(f"{args.size} B per file, {args.files} files per round, {args.rounds} rounds "
          f"alternating, in {args.dir or tempfile.gettempdir()}")
    for mode, rounds in results.items():
        cpu = [c for c, _ in rounds]
        print(f"{mode:9s} CPU ms/file: median {statistics.median(cpu):.3f} "
              f"(rounds {' '.join(f'{c:.3f}' for c in cpu)}); "
              f"wall median {statistics.median(w for _, w in rounds):.3f}")


if __name__ == "__main__":
    main()
