"""MEMORY_KEEP_BYTES: glibc's thresholds set at start (antenna_tw/memory.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from antenna_tw.config import load_config
from antenna_tw.memory import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MMAP_THRESHOLD,
    glibc_mallopt,
    keep_freed_memory,
)

MiB = 1024 * 1024


def recording_mallopt(calls):
    def mallopt(parameter, value):
        calls.append((parameter, value))
        return 1
    return mallopt


def test_both_thresholds_set():
    calls = []
    done = keep_freed_memory(256 * MiB, {}, recording_mallopt(calls))
    assert calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, 256 * MiB)]
    assert done == {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD,
                    "MALLOC_TRIM_THRESHOLD_": 256 * MiB}


def test_small_budget_caps_the_mmap_threshold():
    calls = []
    keep_freed_memory(2 * MiB, {}, recording_mallopt(calls))
    assert calls == [(M_MMAP_THRESHOLD, 2 * MiB), (M_TRIM_THRESHOLD, 2 * MiB)]


def test_zero_leaves_glibc_alone():
    calls = []
    assert keep_freed_memory(0, {}, recording_mallopt(calls)) == {}
    assert calls == []


def test_the_operators_own_glibc_variable_wins():
    calls = []
    done = keep_freed_memory(256 * MiB, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                             recording_mallopt(calls))
    assert calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD)]
    assert list(done) == ["MALLOC_MMAP_THRESHOLD_"]


def test_refused_by_malloc_is_not_reported():
    assert keep_freed_memory(256 * MiB, {}, lambda parameter, value: 0) == {}


def test_option_default_and_parsing():
    assert load_config({}, None).app.memory_keep_bytes == 16 * MiB
    assert load_config({"MEMORY_KEEP_BYTES": "64m"}, None).app.memory_keep_bytes == 64 * MiB
    assert load_config({"MEMORY_KEEP_BYTES": "0"}, None).app.memory_keep_bytes == 0


# Buffers the size of upload reads, all freed, then taken again: with glibc's
# defaults the freed top of the heap goes back to the kernel and is faulted in
# again each time; kept, it is reused.
CHURN = textwrap.dedent("""
    import resource, sys
    from antenna_tw.memory import keep_freed_memory
    keep_freed_memory(int(sys.argv[1]), {})
    def churn():
        held = [bytearray(256 * 1024) for _ in range(80)]
        del held
    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        churn()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@pytest.mark.skipif(glibc_mallopt() is None, reason="glibc's malloc only")
def test_real_malloc_stops_faulting_freed_buffers_in_again():
    def faults(keep_bytes):
        out = subprocess.run([sys.executable, "-c", CHURN, str(keep_bytes)],
                             capture_output=True, text=True, check=True, timeout=60)
        return int(out.stdout)

    default, kept = faults(0), faults(256 * MiB)
    # 20 rounds of 20 MiB: about 100,000 faults when returned each time.
    assert default > 20 * 1000
    assert kept < default / 20
