"""The crash storage interfaces and the choice of backend by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface
from zope.interface.exceptions import Invalid
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyObject

from antenna_tw.config import STORAGE_CLASS_ALIASES
from antenna_tw.crash import Crash, SpooledCrash
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
    health_ttl = Attribute("Seconds the heartbeat may reuse a check_health answer (0: none).")

    def verify() -> None:
        """
        Check at start-up that crashes can be saved. Runs before the reactor
        starts, so it may block. Raise StorageUnavailable with one line on a
        definitive misconfiguration (no such bucket, access denied, bad
        credentials): the start stops. Raise StorageUnreachable when storage
        did not answer (refused, timed out, a server error): the collector
        starts all the same and spools crashes until it answers.
        """

    def save_crash(crash: Crash) -> Deferred[None]:
        """Store a Crash: dump_names, each dump, the raw crash last."""

    def check_health() -> Deferred[list[str]]:
        """A Deferred of a list of error strings (empty when healthy)."""

    def close() -> Deferred[None]:
        """Let go of connections at shutdown; nothing is saved after it."""


class IFileCrashStorage(ICrashStorage):
    """
    Storage that stores a spooled crash from its files, in the calling
    thread (the filesystem links them into place). The crash movers give it
    each whole move, loading the spool entry, storing it and removing it, as
    one thread-pool job, several crashes a job.
    """

    def save_spooled_blocking(spooled: SpooledCrash) -> None:
        """
        Store ``spooled`` in the calling thread, a pool thread, never the
        reactor's: dump_names, each dump, the raw crash last. Raises when it
        fails; the spool's files are left as they were.
        """


class CrashDamaged(Exception):
    """
    Storage refused a crash because its bytes do not match the checksums
    the intake took (a spool file damaged since): saving it again cannot
    succeed, so the crash mover sets it aside as it does a corrupt entry.
    """


class StorageUnavailable(Exception):
    """Storage cannot be used; the message is one line for the operator."""


class StorageUnreachable(StorageUnavailable):
    """
    Storage did not answer the start-up check (refused, timed out, a server
    error): not a reason to refuse the start, since the spool takes crashes
    meanwhile (``antenna_tw.startup``). A StorageUnavailable, so that a
    caller that knows only that one still refuses.
    """


def contract_problem(backend: object, interfaces: Iterable[InterfaceClass]) -> str | None:
    """
    One line naming how ``backend`` breaks the first of ``interfaces`` it
    does not provide with every method and attribute declared; None when
    it keeps them all (its callers then use them without asking).
    """
    for interface in interfaces:
        try:
            verifyObject(interface, backend)
        except Invalid as error:
            # zope's text names the object, then the interface, then each problem.
            text = str(error)
            _, header, problems = text.partition(f"{interface.__identifier__}:")
            lines = (problems if header else text).splitlines()
            why = "; ".join(line.strip() for line in lines if line.strip())
            return f"{type(backend).__name__} is not usable as {interface.__name__}: {why}"
    return None


def check_storage(storage: object) -> None:
    """
    StorageUnavailable unless ``storage`` keeps ``ICrashStorage`` (and
    ``IFileCrashStorage``, when it says it provides that): ``contract_problem``.
    """
    interfaces = [ICrashStorage]
    if IFileCrashStorage.providedBy(storage):
        interfaces.append(IFileCrashStorage)
    problem = contract_problem(storage, interfaces)
    if problem is not None:
        raise StorageUnavailable(problem)


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


def storage_class(name: str) -> Any:
    """The class for ``CRASHSTORAGE_CLASS``: a short name, an Antenna path or a dotted path."""
    return load_dotted(STORAGE_ALIASES.get(name, name))
