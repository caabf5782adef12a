"""
Filesystem crash storage, every file atomic; the layout is in docs/spool.rst,
*Where crashes are stored*.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence

import attr
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from antenna_tw.config import StorageSettings
from antenna_tw.crash import Crash, SpooledCrash, serialize_dump_names
from antenna_tw.crashid import date_from_crash_id
from antenna_tw.files import absolute_path, unlink_if_present
from antenna_tw.storage import IFileCrashStorage, StorageUnavailable


def write_atomically(path: str, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it into place."""
    temp_path = _temp_path(path)
    try:
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_path, path)
    except BaseException:
        unlink_if_present(temp_path)
        raise


def _temp_path(path: str) -> str:
    """A temp name beside ``path`` that no other thread or process uses now."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".tmp-{os.getpid()}-{threading.get_ident()}-{name}")


# link() fails with these where the spool and storage cannot share an inode.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP})


def place_file(source: str, path: str) -> None:
    """
    Put a copy of the file ``source`` at ``path``, atomically: a hard link
    when both are on one filesystem (no data is copied), else a copy
    written beside ``path`` and renamed. An existing ``path`` is replaced.
    """
    try:
        os.link(source, path)
        return
    except FileNotFoundError:
        if not os.path.exists(source):
            raise
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return place_file(source, path)
    except FileExistsError:
        pass
    except OSError as error:
        if error.errno not in _NO_LINK:
            raise
        return _copy_into_place(source, path)
    temp_path = _temp_path(path)
    unlink_if_present(temp_path)
    os.link(source, temp_path)
    try:
        os.replace(temp_path, path)
    except BaseException:
        unlink_if_present(temp_path)
        raise


def _copy_into_place(source: str, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp_path = _temp_path(path)
    try:
        with open(source, "rb") as source_file, open(temp_path, "wb") as temp_file:
            shutil.copyfileobj(source_file, temp_file, 1024 * 1024)
        os.replace(temp_path, path)
    except BaseException:
        unlink_if_present(temp_path)
        raise


@implementer(IFileCrashStorage)
@attr.s
class FSCrashStorage:
    """
    ``<root>/<YYYYMMDD>/raw_crash/<id>.json``, ``dump_names/<id>.json`` and
    ``<name>/<id>``. Writes run in the given thread pool, never on the
    reactor; spooled crashes are linked into place (``save_spooled_blocking``).
    """

    root: str = attr.ib(converter=absolute_path)
    reactor: IReactorFromThreads = attr.ib()
    threadpool: ThreadPool = attr.ib()
    name = "fs"
    health_ttl = 0.0

    @classmethod
    def from_settings(cls, settings: StorageSettings, reactor: IReactorFromThreads,
                      threadpool: ThreadPool, concurrency: int | None = None) -> FSCrashStorage:
        """Storage under ``FS_ROOT``."""
        return cls(settings.fs_root, reactor, threadpool)

    def paths(self, crash_id: str, dump_names: Sequence[str] = ()) -> tuple[
            str, dict[str, str], str]:
        """Where each file of a crash goes: (dump_names, {name: path}, raw_crash)."""
        day = os.path.join(self.root, date_from_crash_id(crash_id))
        dump_paths = {name: os.path.join(day, name, crash_id) for name in dump_names}
        return (
            os.path.join(day, "dump_names", crash_id + ".json"),
            dump_paths,
            os.path.join(day, "raw_crash", crash_id + ".json"),
        )

    def verify(self) -> None:
        """The root can be created and written to; StorageUnavailable if not."""
        try:
            os.makedirs(self.root, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-")
            probe.close()
        except OSError as error:
            raise StorageUnavailable(
                f"crash storage root {self.root} is not writable: {error.strerror}"
            ) from None

    def _store(self, crash_id: str, names: Sequence[str],
               place_dump: Callable[[str, str], None],
               place_raw_crash: Callable[[str], None]) -> None:
        """The order of every save: dump_names, each dump, the raw crash last."""
        dump_names_path, dump_paths, raw_crash_path = self.paths(crash_id, names)
        write_atomically(dump_names_path, serialize_dump_names(names))
        for name in names:
            place_dump(name, dump_paths[name])
        place_raw_crash(raw_crash_path)

    def save_crash_blocking(self, crash: Crash) -> None:
        """Store a crash from its bytes in the calling thread."""
        self._store(
            crash.crash_id, crash.dump_names(),
            lambda name, path: write_atomically(path, crash.dump_bytes(name)),
            lambda path: write_atomically(path, crash.serialized_raw_crash()))

    def save_spooled_blocking(self, spooled: SpooledCrash) -> None:
        """
        Store a spooled crash in the calling thread: its files are linked
        into place (copied across filesystems), never read here.
        """
        self._store(
            spooled.crash_id, spooled.dump_names(),
            lambda name, path: place_file(spooled.dump_files[name], path),
            lambda path: place_file(spooled.raw_crash_file, path))

    def save_crash(self, crash: Crash) -> defer.Deferred[None]:
        """``save_crash_blocking`` in the thread pool."""
        return deferToThreadPool(self.reactor, self.threadpool, self.save_crash_blocking, crash)

    def _health(self) -> list[str]:
        try:
            self.verify()
        except StorageUnavailable as error:
            return [str(error)]
        return []

    def check_health(self) -> defer.Deferred[list[str]]:
        """The root is still writable (``verify`` in the thread pool)."""
        return deferToThreadPool(self.reactor, self.threadpool, self._health)

    def close(self) -> defer.Deferred[None]:
        """Nothing to let go of: every file is closed after each save."""
        return defer.succeed(None)
