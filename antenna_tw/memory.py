"""
glibc's malloc told to keep the memory a process frees (MEMORY_KEEP_BYTES;
docs/performance.rst, *Memory kept by malloc*).

By default glibc hands freed heap space above 128 KiB back to the kernel
(its trim and mmap thresholds), so each 400 KB upload's buffers are faulted
in afresh: 7-19 minor page faults per crash in a busy worker, which cost
more on a VM and made the p99 swing with whatever else ran before. Kept,
they are reused: 0-0.2 faults per crash.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks above this still get their own mapping, returned when freed: a
# decompressed upload can reach MAX_DECOMPRESSED_SIZE.
MMAP_THRESHOLD = 8 * 1024 * 1024
# glibc's own variables, read at start: an operator who set one keeps it.
ENVIRONMENT = {M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_",
               M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_"}


def glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None under another C library (musl's does nothing)."""
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory(keep_bytes: int, environ: Mapping[str, str] = os.environ,
                      mallopt: Callable[[int, int], int] | None = None) -> dict[str, int]:
    """
    Keep up to ``keep_bytes`` of freed heap per malloc arena instead of
    returning it to the kernel, and serve blocks up to 8 MiB from the heap.
    Nothing when ``keep_bytes`` is 0, outside glibc, or for a threshold the
    environment already sets. Returns what was set, by glibc's variable name.
    """
    if keep_bytes <= 0:
        return {}
    mallopt = mallopt or glibc_mallopt()
    if mallopt is None:
        return {}
    done = {}
    for parameter, value in ((M_MMAP_THRESHOLD, min(MMAP_THRESHOLD, keep_bytes)),
                             (M_TRIM_THRESHOLD, keep_bytes)):
        name = ENVIRONMENT[parameter]
        if name not in environ and mallopt(parameter, value) == 1:
            done[name] = value
    return done
