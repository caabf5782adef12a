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
import io
import json
import os
import tempfile
import time

import attr
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from antenna_tw.crash import Crash

MAGIC = b"ANTENNA-SPOOL 1\n"
SUFFIX = ".crash"
TEMP_PREFIX = ".tmp-"
PROBE_PREFIX = ".probe-"
CORRUPT_DIR = "corrupt"
HEADER_ESTIMATE = 4096  # bytes reserved for a header until the write says


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


def _checksum(crash, name):
    """The dump's SHA-256: computed once while it streamed in, else now."""
    known = crash.raw_crash.get("metadata", {}).get("dump_checksums", {}).get(name)
    return known or hashlib.sha256(crash.dumps[name]).hexdigest()


def encode_entry(crash):
    """The pieces of a spool file, in order, without joining the dumps."""
    names = crash.dump_names()
    header = json.dumps(
        {
            "crash_id": crash.crash_id,
            "raw_crash": crash.raw_crash,
            "dumps": [
                [name, len(crash.dumps[name]), _checksum(crash, name)]
                for name in names
            ],
        }
    ).encode("utf-8")
    return [MAGIC, b"%d\n" % len(header), header] + [crash.dumps[name] for name in names]


def read_header(spool_file):
    """
    ``(header, offset of the first dump)`` from an open spool file, after
    checking the header's shape; CorruptEntry when anything is off.
    """
    if spool_file.read(len(MAGIC)) != MAGIC:
        raise CorruptEntry("bad magic")
    line = spool_file.readline(24)
    if not line.endswith(b"\n"):
        raise CorruptEntry("truncated header")
    try:
        length = int(line)
    except ValueError:
        raise CorruptEntry("bad header length") from None
    raw = spool_file.read(length)
    if len(raw) != length:
        raise CorruptEntry("truncated header")
    try:
        header = json.loads(raw)
        valid = (isinstance(header["crash_id"], str) and isinstance(header["raw_crash"], dict)
                 and all(isinstance(name, str) and isinstance(size, int) and size >= 0
                         and isinstance(checksum, str)
                         for name, size, checksum in header["dumps"]))
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptEntry(f"unreadable header: {error}") from None
    if not valid:
        raise CorruptEntry("unreadable header: wrong types")
    return header, len(MAGIC) + len(line) + length


def expected_size(header, offset):
    """The size in bytes of the complete file the header describes."""
    return offset + sum(size for _, size, _ in header["dumps"])


def read_entry(spool_file):
    """A Crash from an open spool file, every dump checked; CorruptEntry when damaged."""
    header, _ = read_header(spool_file)
    dumps = {}
    for name, size, checksum in header["dumps"]:
        dump = spool_file.read(size)
        if len(dump) != size:
            raise CorruptEntry(f"dump {name!r} is truncated")
        if hashlib.sha256(dump).hexdigest() != checksum:
            raise CorruptEntry(f"dump {name!r} is damaged")
        dumps[name] = dump
    if spool_file.read(1):
        raise CorruptEntry("trailing bytes")
    return Crash(header["crash_id"], header["raw_crash"], dumps)


def decode_entry(data):
    """A Crash from a spool file's bytes; CorruptEntry when anything is off."""
    return read_entry(io.BytesIO(data))


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
    """
    A directory of spooled crashes with a running total of their size.

    ``total_bytes`` counts the entries in the spool; ``writing_bytes`` counts
    writes still in flight (reserved when a write starts, so that
    backpressure sees them before they land).
    """

    directory = attr.ib(converter=os.path.abspath)
    reactor = attr.ib()
    threadpool = attr.ib()
    fsync = attr.ib(default=False)
    clock_ns = attr.ib(default=time.time_ns, repr=False)
    total_bytes = attr.ib(default=0, init=False)
    writing_bytes = attr.ib(default=0, init=False)
    log = Logger(namespace="antenna.spool")

    def __attrs_post_init__(self):
        self._writes = set()
        self._idle_waiters = []

    def open(self):
        """
        Create the directory and list what is there, oldest first, moving
        aside half-written and unreadable entries (each with a log line).
        Runs once at start-up, before the reactor, so it may block; it reads
        each entry's header, not its dumps (their checksums are checked when
        an entry is loaded for storage).
        """
        os.makedirs(os.path.join(self.directory, CORRUPT_DIR), exist_ok=True)
        entries = []
        for filename in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, filename)
            if filename == CORRUPT_DIR:
                continue
            if filename.startswith(PROBE_PREFIX):
                _unlink(path)  # a health probe interrupted by a crash of the process
                continue
            if filename.startswith(TEMP_PREFIX):
                self._move_aside(filename, "half-written")
                continue
            if not filename.endswith(SUFFIX):
                continue
            try:
                entry = SpoolEntry.from_filename(filename, os.path.getsize(path))
                self._check(path, entry)
            except (ValueError, OSError, CorruptEntry) as error:
                self._move_aside(filename, str(error))
                continue
            entries.append(entry)
        self.total_bytes = sum(entry.size for entry in entries)
        return entries

    def _check(self, path, entry):
        """A complete file whose header matches its name, or CorruptEntry."""
        with open(path, "rb") as spool_file:
            header, offset = read_header(spool_file)
        if header["crash_id"] != entry.crash_id:
            raise CorruptEntry(f"holds crash {header['crash_id']!r}, not {entry.crash_id!r}")
        expected = expected_size(header, offset)
        if entry.size != expected:
            raise CorruptEntry(f"truncated: {entry.size} bytes of {expected}"
                               if entry.size < expected else "trailing bytes")

    def _move_aside(self, filename, reason):
        try:
            os.replace(
                os.path.join(self.directory, filename),
                os.path.join(self.directory, CORRUPT_DIR, filename),
            )
        except OSError as error:
            reason = f"{reason} (could not move it: {error.strerror})"
        self.log.warn(
            "spool entry {filename} moved aside to {corrupt}: {reason}",
            filename=filename, corrupt=CORRUPT_DIR, reason=reason,
        )

    def _put(self, crash, filename):
        pieces = encode_entry(crash)
        temp_path = os.path.join(self.directory, TEMP_PREFIX + filename)
        path = os.path.join(self.directory, filename)
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                _write_all(fd, pieces)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp_path, path)
        except BaseException:
            _unlink(temp_path)
            raise
        if self.fsync:
            try:
                _fsync_directory(self.directory)
            except BaseException:
                # The client will hear "busy" and send it again: keep no copy.
                _unlink(path)
                raise
        return SpoolEntry.from_filename(filename, sum(len(piece) for piece in pieces))

    def put(self, crash):
        """
        Write a crash durably (temp file, then rename; fsync of the file and
        the directory when ``fsync``); a Deferred of its SpoolEntry.
        """
        filename = f"{self.clock_ns():020d}-{crash.crash_id}{SUFFIX}"
        reserved = HEADER_ESTIMATE + sum(len(dump) for dump in crash.dumps.values())
        self.writing_bytes += reserved
        d = deferToThreadPool(self.reactor, self.threadpool, self._put, crash, filename)
        self._writes.add(d)

        def settle(result):
            self.writing_bytes -= reserved
            self._writes.discard(d)
            if not isinstance(result, Failure):
                self.total_bytes += result.size
            if not self._writes:
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    # On the next turn: whoever awaits this write sees it first.
                    self.reactor.callLater(0, waiter.callback, None)
            return result

        return d.addBoth(settle)

    def idle(self):
        """A Deferred that fires once no write is in flight."""
        if not self._writes:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def _load(self, entry):
        with open(os.path.join(self.directory, entry.filename), "rb") as spool_file:
            return read_entry(spool_file)

    def load(self, entry):
        """A Deferred of the Crash in ``entry``; fails with CorruptEntry or OSError."""
        return deferToThreadPool(self.reactor, self.threadpool, self._load, entry)

    def _remove(self, entry):
        _unlink(os.path.join(self.directory, entry.filename))

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

    def _probe(self):
        try:
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=PROBE_PREFIX) as probe:
                probe.write(b"probe")
                probe.flush()
        except OSError as error:
            return f"{self.directory} is not writable: {error.strerror or error}"
        return None

    def check_writable(self):
        """
        A Deferred of None when a file can be created in the spool, else of
        one line saying why (a real write: as root, permissions say nothing).
        """
        return deferToThreadPool(self.reactor, self.threadpool, self._probe)

    def free_bytes(self):
        """Free bytes on the spool's filesystem (one statvfs call)."""
        stats = os.statvfs(self.directory)
        return stats.f_bavail * stats.f_frsize


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_directory(directory):
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@attr.s
class Backpressure:
    """
    Says when /submit must answer busy: the spool holds (or is writing) more
    than ``max_bytes``, its disk has less than ``min_free_bytes`` free, or the
    process is shutting down. The free space is read at most once per
    ``interval`` seconds.
    """

    spool = attr.ib()
    clock = attr.ib()
    max_bytes = attr.ib()
    min_free_bytes = attr.ib()
    interval = attr.ib(default=1.0)
    closing = attr.ib(default=False, init=False)
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

    def used_bytes(self):
        """Bytes in the spool plus bytes being written to it."""
        return self.spool.total_bytes + self.spool.writing_bytes

    def close(self):
        """From now on every /submit is answered busy: the process is stopping."""
        self.closing = True

    def busy(self):
        """Why /submit must answer busy now, in a few words; None when it need not."""
        if self.closing:
            return "shutting down"
        if self.used_bytes() > self.max_bytes:
            return "spool is over SPOOL_MAX_BYTES"
        if self.free_bytes() < self.min_free_bytes:
            return "disk under the spool is nearly full"
        return None
