"""The crash storage interface and the choice of backend by name."""

from __future__ import annotations

from zope.interface import Attribute, Interface

from antenna_tw.config import STORAGE_CLASS_ALIASES
from antenna_tw.throttler import load_dotted


class ICrashStorage(Interface):
    """
    Where crashes end up. Every backend writes in the order of docs/spool.rst,
    *Where crashes are stored*: dump_names, each dump, the raw crash last.

    Backends are built with ``Class.from_settings(storage_settings, reactor,
    threadpool, concurrency=CONCURRENT_CRASHMOVERS)``; ``concurrency`` is how
    many saves may run at once (the S3 backend sizes its connection pool by it).
    """

    name = Attribute("Short name for logs and the heartbeat.")

    def verify():
        """
        Check at start-up that crashes can be saved. Runs before the reactor
        starts, so it may block; raise StorageUnavailable with one line.
        """

    def save_crash(crash):
        """Store a Crash: dump_names, each dump, the raw crash last. Deferred."""

    # Optional: ``close()``, a Deferred, lets go of connections at shutdown.
    # Optional: ``save_crash_blocking(crash)`` stores a crash in the calling
    # thread. A backend that has it gets each whole move (read the spool
    # entry, store, delete) as one thread-pool job, and crashes whose
    # ``dump_files``/``raw_crash_file`` it may link instead of copying.

    def check_health():
        """A Deferred of a list of error strings (empty when healthy)."""


class StorageUnavailable(Exception):
    """Storage cannot be used; the message is one line for the operator."""


_SHORT_NAMES = {
    "fs": "antenna_tw.ext.fs.FSCrashStorage",
    "noop": "antenna_tw.ext.noop.NoOpCrashStorage",
    "s3": "antenna_tw.ext.s3.S3CrashStorage",
}
# Antenna's class paths are declared once, beside the option they are a value of.
STORAGE_ALIASES = {
    **_SHORT_NAMES,
    **{path: _SHORT_NAMES[short] for path, short in STORAGE_CLASS_ALIASES.items()},
}


def storage_class(name):
    """The class for ``CRASHSTORAGE_CLASS``: a short name, an Antenna path or a dotted path."""
    return load_dotted(STORAGE_ALIASES.get(name, name))
