"""
Keeping the collector's processes small (docs/performance.rst,
"Process memory at idle").

Importing the reactor imports ``twisted.internet.ssl`` whenever pyOpenSSL
can be imported (``twisted.internet.posixbase`` tries it), and with it
cryptography's own build of OpenSSL: about 12 MB of RSS per process.
``twistd antenna`` first imports the reactor in ``tap.makeService`` (unless
``--reactor`` is given), so makeService can make pyOpenSSL unimportable
before that in a process that will not speak TLS: the supervising parent,
for the imports of its start-up only, and a worker whose storage needs no
TLS, for good.

The workers also get a glibc malloc setting in their environment, and not
socket activation's ``LISTEN_*`` variables (they are the parent's).

This module imports nothing from Twisted.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from antenna_tw.workers.ports import without_socket_activation

if TYPE_CHECKING:
    from antenna_tw.config import PublishSettings, StorageSettings

PYOPENSSL = "OpenSSL"

# CRASHSTORAGE_CLASS values of the backends shipped here, by backend.
BUILTIN_STORAGE = {
    "fs": "fs",
    "antenna_tw.ext.fs.FSCrashStorage": "fs",
    "antenna.ext.fs.crashstorage.FSCrashStorage": "fs",
    "noop": "noop",
    "antenna_tw.ext.noop.NoOpCrashStorage": "noop",
    "antenna.ext.crashstorage_base.NoOpCrashStorage": "noop",
    "s3": "s3",
    "antenna_tw.ext.s3.S3CrashStorage": "s3",
    "antenna.ext.s3.crashstorage.S3CrashStorage": "s3",
}

# glibc malloc settings a worker gets unless its environment has them.
WORKER_MALLOC_ENV = {
    # glibc gives threads that allocate their own arenas, up to 8 per core.
    # Python threads allocate under the GIL, one at a time, so more arenas
    # only scatter freed buffers: keep the reactor's arena and one for the
    # antenna-io threads.
    "MALLOC_ARENA_MAX": "2",
}


def builtin_storage(storage: StorageSettings) -> str | None:
    """``"fs"``, ``"noop"`` or ``"s3"`` for StorageSettings naming one of ours, else None."""
    return BUILTIN_STORAGE.get(storage.crashstorage_class)


def storage_needs_tls(storage: StorageSettings) -> bool:
    """
    Whether a worker with these StorageSettings may need Twisted's TLS: S3
    unless its endpoint is ``http://``, and any storage class that is not
    ours (it may do anything). botocore, for credentials, and the start-up
    check use the standard library's ``ssl``, not pyOpenSSL.
    """
    backend = builtin_storage(storage)
    if backend == "s3":
        return not storage.aws.endpoint_url.strip().lower().startswith("http://")
    return backend is None


def publisher_checks_without_tls(publish: PublishSettings) -> bool:
    """
    Whether the publisher's start-up check needs no pyOpenSSL: ``none``,
    and SQS (``http.client`` and the standard library's ``ssl``).
    """
    return publish.crashpublish_class in ("none", "sqs")


def publisher_needs_tls(publish: PublishSettings) -> bool:
    """
    Whether a worker with these PublishSettings may need Twisted's TLS:
    SQS unless its endpoint is ``http://``, any publisher but ``none``
    otherwise (it may do anything).
    """
    if publish.crashpublish_class == "none":
        return False
    if publish.crashpublish_class == "sqs":
        return not publish.aws.endpoint_url.strip().lower().startswith("http://")
    return True


def _too_late() -> bool:
    """pyOpenSSL is already loaded, or the reactor's base module was imported with it."""
    return PYOPENSSL in sys.modules or "twisted.internet.posixbase" in sys.modules


def forbid_pyopenssl() -> bool:
    """
    Make pyOpenSSL unimportable in this process from now on, if nothing
    imported it yet; True when it did. Twisted then has no TLS: a process
    that calls this must never need it.
    """
    if _too_late():
        return False
    # import raises ModuleNotFoundError (typeshed types sys.modules as modules
    # only; None is the import system's documented "not importable")
    sys.modules[PYOPENSSL] = None  # type: ignore[assignment]
    return True


@contextlib.contextmanager
def without_pyopenssl() -> Iterator[bool]:
    """
    pyOpenSSL unimportable inside the block only. The modules imported in it
    (the reactor, above all) keep no TLS support; pyOpenSSL itself can be
    imported again afterwards. Does nothing if it is too late to matter.
    """
    if _too_late():
        yield False
        return
    sys.modules[PYOPENSSL] = None  # type: ignore[assignment]  # as above
    try:
        yield True
    finally:
        if sys.modules.get(PYOPENSSL, True) is None:
            del sys.modules[PYOPENSSL]


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """
    The environment of a worker process: ``environ`` plus the malloc
    settings it lacks, less socket activation's variables.
    """
    env = without_socket_activation(environ)
    for key, value in WORKER_MALLOC_ENV.items():
        env.setdefault(key, value)
    return env

