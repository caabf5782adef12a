"""
Giving memory back to the system after a large upload is dropped.

An upload that is refused part way (a gzip bomb stopped at
MAX_DECOMPRESSED_SIZE, an upload answered busy) has by then held up to
100 MB of dump pieces. Python frees them at once, but glibc keeps freed
heap memory mapped whenever a live allocation sits above it in the heap,
so now and then the process stayed 65 MB larger after a single bomb
(docs/intake.rst, "Memory after a refused upload"). ``malloc_trim(0)``
hands every free page of the heap back, wherever it lies.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

#: A dropped upload that held at least this many bytes is followed by a trim.
TRIM_AFTER_BYTES = 16 * 1024 * 1024


def find_malloc_trim() -> Callable[[], object]:
    """
    A function that gives free heap pages back to the system: glibc's
    ``malloc_trim(0)``, or one that does nothing where the C library has
    none (musl, macOS).
    """
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return lambda: malloc_trim(0)
