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

import attr
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from antenna_tw.crash import serialize_dump_names
from antenna_tw.crashid import date_from_crash_id
from antenna_tw.storage import ICrashStorage, StorageUnavailable


def write_atomically(path, data, fsync=False):
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
        _unlink(temp_path)
        raise


def _temp_path(path):
    """A temp name beside ``path`` that no other thread or process uses now."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".tmp-{os.getpid()}-{threading.get_ident()}-{name}")


# link() fails with these where the spool and storage cannot share an inode.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP})


def place_file(source, path):
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
    _unlink(temp_path)
    os.link(source, temp_path)
    try:
        os.replace(temp_path, path)
    except BaseException:
        _unlink(temp_path)
        raise


def _copy_into_place(source, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp_path = _temp_path(path)
    try:
        with open(source, "rb") as source_file, open(temp_path, "wb") as temp_file:
            shutil.copyfileobj(source_file, temp_file, 1024 * 1024)
        os.replace(temp_path, path)
    except BaseException:
        _unlink(temp_path)
        raise


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@implementer(ICrashStorage)
@attr.s
class FSCrashStorage:
    """
    ``<root>/<YYYYMMDD>/raw_crash/<id>.json``, ``dump_names/<id>.json`` and
    ``<name>/<id>``. Writes run in the given thread pool, never on the reactor.
    """

    root = attr.ib(converter=os.path.abspath)
    reactor = attr.ib()
    threadpool = attr.ib()
    name = "fs"

    @classmethod
    def from_settings(cls, settings, reactor, threadpool, concurrency=None):
        return cls(settings.fs_root, reactor, threadpool)

    def paths(self, crash_id, dump_names=()):
        """Where each file of a crash goes: (dump_names, {name: path}, raw_crash)."""
        day = os.path.join(self.root, date_from_crash_id(crash_id))
        dump_paths = {name: os.path.join(day, name, crash_id) for name in dump_names}
        return (
            os.path.join(day, "dump_names", crash_id + ".json"),
            dump_paths,
            os.path.join(day, "raw_crash", crash_id + ".json"),
        )

    def verify(self):
        try:
            os.makedirs(self.root, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-")
            probe.close()
        except OSError as error:
            raise StorageUnavailable(
                f"crash storage root {self.root} is not writable: {error.strerror}"
            ) from None

    def save_crash_blocking(self, crash):
        """
        Store a crash in the calling thread, the raw crash last. Files the
        crash already has on disk (spooled dumps and raw crash) are linked
        into place rather than copied.
        """
        names = crash.dump_names()
        dump_names_path, dump_paths, raw_crash_path = self.paths(crash.crash_id, names)
        write_atomically(dump_names_path, serialize_dump_names(names))
        for name in names:
            if name in crash.dump_files:
                place_file(crash.dump_files[name], dump_paths[name])
            else:
                write_atomically(dump_paths[name], crash.dump_bytes(name))
        if crash.raw_crash_file is not None:
            place_file(crash.raw_crash_file, raw_crash_path)
        else:
            write_atomically(raw_crash_path, crash.serialized_raw_crash())

    def save_crash(self, crash):
        return deferToThreadPool(self.reactor, self.threadpool, self.save_crash_blocking, crash)

    def _health(self):
        try:
            self.verify()
        except StorageUnavailable as error:
            return [str(error)]
        return []

    def check_health(self):
        return deferToThreadPool(self.reactor, self.threadpool, self._health)
