"""
The durable local queue of accepted crashes.

An accepted crash is one file, ``<nanoseconds>-<crash id>.crash``, written under
a temporary name and renamed into the spool before the client gets its
answer; so a crash answered with an id survives a crash of the process.
Names sort oldest first. The crash movers load entries, store them and remove
them. Disk work runs in a thread pool, never on the reactor thread.

File layout::

    ANTENNA-SPOOL 1\\n
    <length of the JSON header in bytes>\\n
    {"crash_id": ..., "raw_crash": {...}, "dumps": [[name, size, sha256], ...]}
    <the dumps' bytes, in header order>
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import attr
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from antenna_tw.crash import Crash

MAGIC = b"ANTENNA-SPOOL 1\n"
SUFFIX = ".crash"
TEMP_PREFIX = ".tmp-"
CORRUPT_DIR = "corrupt"


class CorruptEntry(Exception):
    """A spool file that is not a complete crash."""


@attr.s(frozen=True, slots=True)
class SpoolEntry:
    """One spooled crash: its file name, id, size and when it was accepted."""

    filename = attr.ib()
    crash_id = attr.ib()
    size = attr.ib()
    created = attr.ib()  # seconds since the epoch

    @classmethod
    def from_filename(cls, filename, size):
        stamp, _, rest = filename.partition("-")
        return cls(filename, rest[: -len(SUFFIX)], size, int(stamp) / 1e9)


def encode_entry(crash):
    """The pieces of a spool file, in order, without joining the dumps."""
    names = crash.dump_names()
    header = json.dumps(
        {
            "crash_id": crash.crash_id,
            "raw_crash": crash.raw_crash,
            "dumps": [
                [name, len(crash.dumps[name]), hashlib.sha256(crash.dumps[name]).hexdigest()]
                for name in names
            ],
        }
    ).encode("utf-8")
    return [MAGIC, b"%d\n" % len(header), header] + [crash.dumps[name] for name in names]


def decode_entry(data):
    """A Crash from a spool file's bytes; CorruptEntry when anything is off."""
    if not data.startswith(MAGIC):
        raise CorruptEntry("bad magic")
    newline = data.find(b"\n", len(MAGIC))
    try:
        header_length = int(data[len(MAGIC):newline])
        start = newline + 1
        header = json.loads(data[start:start + header_length])
        offset = start + header_length
        dumps = {}
        for name, size, checksum in header["dumps"]:
            dump = data[offset:offset + size]
            if len(dump) != size or hashlib.sha256(dump).hexdigest() != checksum:
                raise CorruptEntry(f"dump {name!r} is damaged")
            dumps[name] = dump
            offset += size
        if offset != len(data):
            raise CorruptEntry("trailing bytes")
        return Crash(header["crash_id"], header["raw_crash"], dumps)
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptEntry(f"unreadable header: {error}") from None


def _write_all(fd, pieces):
    views = [memoryview(piece) for piece in pieces if piece]
    while views:
        written = os.writev(fd, views[:1024])
        while written:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0


@attr.s
class Spool:
    """A directory of spooled crashes with a running total of their size."""

    directory = attr.ib(converter=os.path.abspath)
    reactor = attr.ib()
    threadpool = attr.ib()
    fsync = attr.ib(default=False)
    clock_ns = attr.ib(default=time.time_ns, repr=False)
    total_bytes = attr.ib(default=0, init=False)
    log = Logger()

    def open(self):
        """
        Create the directory and list what is there, oldest first, moving
        aside half-written and unreadable entries. Runs once at start-up,
        before the reactor, so it may block.
        """
        os.makedirs(os.path.join(self.directory, CORRUPT_DIR), exist_ok=True)
        entries = []
        for filename in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, filename)
            if filename == CORRUPT_DIR:
                continue
            if filename.startswith(TEMP_PREFIX):
                self._move_aside(filename, "half-written")
                continue
            if not filename.endswith(SUFFIX):
                continue
            try:
                entry = SpoolEntry.from_filename(filename, os.path.getsize(path))
                self._check_header(path, entry)
            except (ValueError, OSError, CorruptEntry) as error:
                self._move_aside(filename, str(error))
                continue
            entries.append(entry)
        self.total_bytes = sum(entry.size for entry in entries)
        return entries

    def _check_header(self, path, entry):
        with open(path, "rb") as spool_file:
            head = spool_file.read(len(MAGIC) + 24)
        if not head.startswith(MAGIC) or b"\n" not in head[len(MAGIC):]:
            raise CorruptEntry("bad magic")
        if entry.size < len(head):
            raise CorruptEntry("truncated")

    def _move_aside(self, filename, reason):
        try:
            os.replace(
                os.path.join(self.directory, filename),
                os.path.join(self.directory, CORRUPT_DIR, filename),
            )
        except OSError:
            pass
        self.log.warn(
            "spool entry {filename} moved aside to {corrupt}: {reason}",
            filename=filename, corrupt=CORRUPT_DIR, reason=reason,
        )

    def _put(self, crash, filename):
        pieces = encode_entry(crash)
        temp_path = os.path.join(self.directory, TEMP_PREFIX + filename)
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, pieces)
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temp_path)
            raise
        os.close(fd)
        os.replace(temp_path, os.path.join(self.directory, filename))
        if self.fsync:
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return SpoolEntry.from_filename(filename, sum(len(piece) for piece in pieces))

    def put(self, crash):
        """Write a crash durably; a Deferred of its SpoolEntry."""
        filename = f"{self.clock_ns():020d}-{crash.crash_id}{SUFFIX}"
        d = deferToThreadPool(self.reactor, self.threadpool, self._put, crash, filename)

        def count(entry):
            self.total_bytes += entry.size
            return entry

        return d.addCallback(count)

    def _load(self, entry):
        with open(os.path.join(self.directory, entry.filename), "rb") as spool_file:
            return decode_entry(spool_file.read())

    def load(self, entry):
        """A Deferred of the Crash in ``entry``; fails with CorruptEntry or OSError."""
        return deferToThreadPool(self.reactor, self.threadpool, self._load, entry)

    def _remove(self, entry):
        try:
            os.unlink(os.path.join(self.directory, entry.filename))
        except FileNotFoundError:
            pass

    def remove(self, entry):
        """Delete a stored crash's entry; a Deferred."""
        d = deferToThreadPool(self.reactor, self.threadpool, self._remove, entry)

        def uncount(_):
            self.total_bytes -= entry.size

        return d.addCallback(uncount)

    def quarantine(self, entry, reason):
        """Move an unreadable entry aside so it is never retried; a Deferred."""
        d = deferToThreadPool(self.reactor, self.threadpool, self._move_aside,
                              entry.filename, reason)

        def uncount(_):
            self.total_bytes -= entry.size

        return d.addCallback(uncount)

    def free_bytes(self):
        """Free bytes on the spool's filesystem (one statvfs call)."""
        stats = os.statvfs(self.directory)
        return stats.f_bavail * stats.f_frsize


@attr.s
class Backpressure:
    """
    Says when /submit must answer busy: the spool holds more than
    ``max_bytes``, or its disk has less than ``min_free_bytes`` free. The free
    space is read at most once per ``interval`` seconds.
    """

    spool = attr.ib()
    clock = attr.ib()
    max_bytes = attr.ib()
    min_free_bytes = attr.ib()
    interval = attr.ib(default=1.0)
    _checked_at = attr.ib(default=None, init=False)
    _free = attr.ib(default=None, init=False)

    def free_bytes(self):
        now = self.clock.seconds()
        if self._checked_at is None or now - self._checked_at >= self.interval:
            try:
                self._free = self.spool.free_bytes()
            except OSError:
                self._free = 0
            self._checked_at = now
        return self._free

    def busy(self):
        return (self.spool.total_bytes > self.max_bytes
                or self.free_bytes() < self.min_free_bytes)
