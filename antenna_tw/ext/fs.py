"""Filesystem crash storage: SPEC.md section 5's layout, every file atomic."""

from __future__ import annotations

import os
import tempfile

import attr
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from antenna_tw.crash import serialize_dump_names, serialize_raw_crash
from antenna_tw.crashid import date_from_crash_id
from antenna_tw.storage import ICrashStorage, StorageUnavailable


def write_atomically(path, data, fsync=False):
    """Write ``data`` to a temp file beside ``path`` and rename it into place."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as temp_file:
            temp_file.write(data)
            if fsync:
                temp_file.flush()
                os.fsync(temp_file.fileno())
        os.replace(temp_path, path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except OSError:
            pass
        raise


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

    def _save(self, crash):
        names = crash.dump_names()
        dump_names_path, dump_paths, raw_crash_path = self.paths(crash.crash_id, names)
        write_atomically(dump_names_path, serialize_dump_names(names))
        for name in names:
            write_atomically(dump_paths[name], crash.dumps[name])
        write_atomically(raw_crash_path, serialize_raw_crash(crash.raw_crash))

    def save_crash(self, crash):
        return deferToThreadPool(self.reactor, self.threadpool, self._save, crash)

    def _health(self):
        try:
            self.verify()
        except StorageUnavailable as error:
            return [str(error)]
        return []

    def check_health(self):
        return deferToThreadPool(self.reactor, self.threadpool, self._health)
