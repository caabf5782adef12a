"""
The zlib-compatible module that inflates gzip and deflate uploads.

``zlib-ng`` (the ``zlib_ng.zlib_ng`` module of the zlib-ng package) when it
is installed: it is CPython's zlib module built on zlib-ng, with the same
``decompressobj``, ``unconsumed_tail``, ``eof``, ``flush()`` and error
checks, and inflates about 1.4x faster here (docs/performance.rst,
"Smaller benchmarks"). Otherwise the standard library's ``zlib``, which
behaves the same, only slower. requirements.txt pins zlib-ng, so ``make
install`` has it; the fallback is for platforms without a wheel.

python-isal (``isal.isal_zlib``) is faster still, but it does not mirror
zlib closely enough for uploads: it accepts gzip headers with reserved flag
bits or a wrong header CRC, zlib headers with a window over 32 KiB and some
corrupt raw deflate that zlib refuses, and it can keep input in its own
buffers so that ``unconsumed_tail`` is empty while output is still pending,
which ``flush()`` then produces without a cap (docs/intake.rst).
"""

from __future__ import annotations

import zlib
from types import ModuleType

#: Backends that can be used here, by name: each is a module with zlib's API.
BACKENDS: dict[str, ModuleType] = {"zlib": zlib}
try:
    from zlib_ng import zlib_ng
except ImportError:  # no wheel for this platform: zlib does the same, slower
    pass
else:
    BACKENDS["zlib-ng"] = zlib_ng

#: The backend a Decompressor uses unless told otherwise.
DEFAULT_BACKEND = "zlib-ng" if "zlib-ng" in BACKENDS else "zlib"
