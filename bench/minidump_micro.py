"""
What the console's minidump summary costs, in one process (not run by CI).

Summarizes the real dumps of tests/data/minidumps and a made-up worst case:
a dump that reaches every bound of ``console.minidump.Limits`` at once (the
most modules, each with the longest name read, the most threads with the
crashing one last, the most stack bytes scanned, no word of it in a module).
Each figure is CPU milliseconds per summary (``time.thread_time``), the
median and the largest of ``--runs`` runs.

    .venv/bin/python bench/minidump_micro.py [--runs 21]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from antenna_tw.console.minidump import Limits, summarize  # noqa: E402

DUMPS = ROOT / "tests" / "data" / "minidumps"
REAL = ("test.dmp", "linux-mini.dmp", "pipeline-inlines-macos-segv.dmp", "simple-crashpad.dmp")
STACK_START = 0x7000_0000_0000


def worst_case(limits: Limits) -> bytes:
    """An amd64 Linux dump that reaches every bound of ``limits``."""
    name = ("m" * limits.max_name_chars).encode("utf-16-le")
    sysinfo = struct.pack("<HHHBBIIIII", 9, 6, 0, 4, 1, 0, 0, 0, 0x8201, 0) + b"\0" * 28
    names = struct.pack("<I", len(name)) + name
    context = bytearray(1232)
    struct.pack_into("<Q", context, 0x98, STACK_START)  # Rsp
    struct.pack_into("<Q", context, 0xF8, 0x10000)  # Rip
    stack = b"\x01" * limits.max_stack_bytes  # words far from every module
    offset = 32 + 4 * 12
    sys_rva = offset
    name_rva = sys_rva + len(sysinfo)
    context_rva = name_rva + len(names)
    stack_rva = context_rva + len(context)
    module_rva = stack_rva + len(stack)
    modules = struct.pack("<I", limits.max_modules) + b"".join(
        struct.pack("<QIIII", 0x10000 * (i + 1), 0x1000, 0, 0, name_rva) + b"\0" * 84
        for i in range(limits.max_modules))
    thread_rva = module_rva + len(modules)
    threads = struct.pack("<I", limits.max_threads) + b"".join(
        struct.pack("<IIIIQQIIII", i + 1, 0, 0, 0, 0, STACK_START, len(stack), stack_rva,
                    len(context), context_rva)
        for i in range(limits.max_threads))
    exception_rva = thread_rva + len(threads)
    exception = (struct.pack("<IIIIQQII", limits.max_threads, 0, 11, 0, 0, 0x45, 0, 0)
                 + b"\0" * 120 + struct.pack("<II", len(context), context_rva))
    header = b"MDMP" + struct.pack("<HHIIIIQ", 0xA793, 0, 4, 32, 0, 0, 0)
    directory = b"".join(struct.pack("<III", kind, len(body), rva) for kind, body, rva in (
        (7, sysinfo, sys_rva), (4, modules, module_rva), (3, threads, thread_rva),
        (6, exception, exception_rva)))
    return (header + directory + sysinfo + names + bytes(context) + stack + modules + threads
            + exception)


def cpu_ms(data: bytes, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.thread_time()
        summarize(data)
        times.append((time.thread_time() - start) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    cases = [(name, (DUMPS / name).read_bytes()) for name in REAL]
    worst = worst_case(Limits())
    summary = summarize(worst)
    assert summary.error is None and len(summary.modules) == Limits().max_modules, summary.error
    cases.append(("worst case of Limits()", worst))
    print(f"{'dump':34} {'bytes':>8} {'median ms':>10} {'max ms':>8}")
    for name, data in cases:
        median, most = cpu_ms(data, args.runs)
        print(f"{name:34} {len(data):8d} {median:10.2f} {most:8.2f}")


if __name__ == "__main__":
    main()
