"""
The durable local queue of accepted crashes.

An accepted crash is a few files sharing a stem, ``<nanoseconds>-<crash id>``:

    <stem>.<dump name>.dump   each dump, as it arrived (written first)
    <stem>.crash              the raw crash exactly as storage keeps it
                              (JSON, sorted keys); written under a temporary
                              name and renamed last: it commits the entry
  <stem>.stored             empty, with a crash publisher only: the crash is
                              stored and its id waits to be published

all in place before the client gets its answer, so a crash answered with an
id survives a crash of the process. Dumps without their ``.crash`` file were
never answered. Stems sort oldest first. The crash movers store entries and
remove them; a filesystem backend links the files into place instead of
copying them. Disk work runs in a thread pool, never on the reactor thread:
each verb has a ``_blocking`` form that does the work in the calling thread
(``load_blocking``, ``remove_blocking``, ``quarantine_blocking``,
``mark_stored_blocking``) and a form that runs it in the pool and returns a
Deferred (``load``, ``remove``, ``quarantine``, ``mark_stored``). The spool
alone counts its bytes, whichever form removed them.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import mmap
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import attr
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from antenna_tw.crash import Crash, Piece, RawCrash, SpooledCrash
from antenna_tw.files import absolute_path, unlink_if_present
from antenna_tw.logs import Logger
from antenna_tw.pooljobs import Idle

SUFFIX = ".crash"
DUMP_SUFFIX = ".dump"
STORED_SUFFIX = ".stored"
TEMP_PREFIX = ".tmp-"
PROBE_PREFIX = ".probe-"
CORRUPT_DIR = "corrupt"
HEADER_ESTIMATE = 4096  # bytes reserved for the raw crash until the write says
_READ_STEP = 1024 * 1024
# Direct I/O: writes go from an aligned buffer straight to the disk, in
# multiples of this many bytes, at most _DIRECT_STEP at a time.
_DIRECT_ALIGN = 4096
_DIRECT_STEP = 4 * 1024 * 1024


class IReactorTimeAndThreads(IReactorTime, IReactorFromThreads):
    """
    For type hints only: a reactor with a clock that also takes calls from
    threads (``deferToThreadPool``), as every real reactor does.
    """


class CorruptEntry(Exception):
    """Spool files that are not a complete crash."""


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


@attr.s(frozen=True, slots=True)
class SpoolEntry:
    """
    One spooled crash: its ``.crash`` file name, id, size in bytes (all its
    files), when it was accepted, its dump names, whether it was found
    at start-up (its dumps are then checked against their checksums before
    they are stored), and whether it is already stored (its ``.stored``
    marker was found: only its id is still to be published).
    """

    filename: str = attr.ib()
    crash_id: str = attr.ib()
    size: int = attr.ib()
    created: float = attr.ib()  # seconds since the epoch
    dump_names: tuple[str, ...] = attr.ib(default=(), converter=_names)
    recovered: bool = attr.ib(default=False)
    stored: bool = attr.ib(default=False)

    @classmethod
    def from_filename(cls, filename: str, size: int, dump_names: Iterable[str] = (),
                      recovered: bool = False) -> SpoolEntry:
        """The entry of a ``.crash`` file name (its stamp says when it was accepted)."""
        stamp, _, rest = filename.partition("-")
        return cls(filename, rest[: -len(SUFFIX)], size, int(stamp) / 1e9,
                   dump_names, recovered)

    @property
    def stem(self) -> str:
        """The name its files share."""
        return self.filename[: -len(SUFFIX)]

    @property
    def stored_filename(self) -> str:
        """The file name of its stored marker."""
        return self.stem + STORED_SUFFIX

    def dump_filename(self, name: str) -> str:
        """The file name of its dump ``name``."""
        return dump_filename(self.stem, name)


def dump_filename(stem: str, name: str) -> str:
    """The spool file name of dump ``name`` of the entry ``stem``; ValueError if unusable."""
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"unusable dump name {name!r}")
    return f"{stem}.{name}{DUMP_SUFFIX}"


def split_dump_filename(filename: str) -> tuple[str, str]:
    """``(stem, dump name)`` of a dump file's name."""
    stem, _, rest = filename[: -len(DUMP_SUFFIX)].partition(".")
    return stem, rest


def _write_file(path: str, pieces: Iterable[Piece], fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, pieces)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


class DirectWriter:
    """
    Writes a dump with ``O_DIRECT``: from one page-aligned buffer per thread,
    straight to the disk, bypassing the page cache. On a VM the page cache's
    fresh pages are what a kept 400 KB write mostly costs
    (docs/performance.rst, *Measured choices*); a buffer reused by each
    write is not. The last, partial block goes through the page cache.
    ``supported`` turns False after the first filesystem that refuses it
    (tmpfs, some network filesystems), and writes go through the page cache.
    """

    def __init__(self) -> None:
        self.supported = True
        self._local = threading.local()

    def _buffer(self) -> mmap.mmap:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = mmap.mmap(-1, _DIRECT_STEP)
        return buffer

    def write(self, path: str, pieces: Iterable[Piece], fsync: bool) -> bool:
        """Write ``pieces`` to a new file; False (nothing written) when O_DIRECT is refused."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            self.supported = False
            return False
        try:
            self._write_aligned(fd, pieces)
            if fsync:
                os.fsync(fd)
        except OSError as error:
            os.close(fd)
            os.unlink(path)
            if error.errno != errno.EINVAL:
                raise
            self.supported = False
            return False
        os.close(fd)
        return True

    def _write_aligned(self, fd: int, pieces: Iterable[Piece]) -> None:
        buffer = self._buffer()
        view = memoryview(buffer)
        filled = 0
        try:
            for piece in pieces:
                piece = memoryview(piece).cast("B")
                while piece:
                    room = _DIRECT_STEP - filled
                    take = min(room, len(piece))
                    view[filled:filled + take] = piece[:take]
                    filled += take
                    piece = piece[take:]
                    if filled == _DIRECT_STEP:
                        _write_view(fd, view[:filled])
                        filled = 0
            if filled:
                # The whole blocks directly, then the last partial block
                # through the page cache: no padding, no truncate.
                aligned = filled - filled % _DIRECT_ALIGN
                if aligned:
                    _write_view(fd, view[:aligned])
                if aligned < filled:
                    # F_SETFL changes only the status flags (O_DIRECT here);
                    # the access mode the file was opened with stays.
                    fcntl.fcntl(fd, fcntl.F_SETFL, 0)
                    _write_view(fd, view[aligned:filled])
        finally:
            view.release()


def _write_view(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _write_all(fd: int, pieces: Iterable[Piece]) -> None:
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


def _read_file(path: str) -> bytes:
    with open(path, "rb", buffering=0) as spool_file:
        return spool_file.read()


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as dump_file:
        while True:
            block = dump_file.read(_READ_STEP)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def _expected_checksums(raw_crash: RawCrash) -> dict[str, str] | None:
    metadata = raw_crash.get("metadata")
    checksums = metadata.get("dump_checksums") if isinstance(metadata, dict) else None
    return checksums if isinstance(checksums, dict) else None


def parse_raw_crash(data: bytes, crash_id: str) -> RawCrash:
    """The raw crash mapping in a ``.crash`` file's bytes; CorruptEntry when unusable."""
    try:
        raw_crash = json.loads(data)
    except ValueError as error:
        raise CorruptEntry(f"unreadable raw crash: {error}") from None
    if not isinstance(raw_crash, dict):
        raise CorruptEntry("unreadable raw crash: not an object")
    if raw_crash.get("uuid", crash_id) != crash_id:
        raise CorruptEntry(f"holds crash {raw_crash.get('uuid')!r}, not {crash_id!r}")
    return raw_crash


@attr.s
class Spool:
    """
    A directory of spooled crashes with a running total of their size.

    ``total_bytes`` counts the entries in the spool; ``writing_bytes`` counts
    writes still in flight (reserved when a write starts, so that
    admission sees them before they land). ``total_bytes`` changes in
    ``_count`` only: when ``open`` finds entries, when a write lands, and in
    ``remove_blocking`` and ``quarantine_blocking`` (pool threads, hence the
    lock), whichever form of the verb ran them.
    """

    directory: str = attr.ib(converter=absolute_path)
    reactor: IReactorTimeAndThreads = attr.ib()
    threadpool: ThreadPool = attr.ib()
    fsync: bool = attr.ib(default=False)
    clock_ns: Callable[[], int] = attr.ib(default=time.time_ns, repr=False)
    direct_io: bool = attr.ib(default=False)
    total_bytes: int = attr.ib(default=0, init=False)
    writing_bytes: int = attr.ib(default=0, init=False)
    log = Logger(namespace="antenna.spool")

    def __attrs_post_init__(self) -> None:
        self._direct = DirectWriter() if self.direct_io else None
        self._writes: set[defer.Deferred[SpoolEntry]] = set()
        self._idle = Idle()
        self._count_lock = threading.Lock()

    def _count(self, added: int) -> None:
        """Add ``added`` (negative: removed) to ``total_bytes``, from any thread."""
        with self._count_lock:
            self.total_bytes += added

    def open(self) -> list[SpoolEntry]:
        """
        Create the directory and list what is there, oldest first, moving
        aside half-written and unreadable entries and dumps without a
        ``.crash`` file (each with a log line). Runs once at start-up,
        before the reactor, so it may block; it reads each raw crash, not
        the dumps (their checksums are checked when they are stored).
        """
        os.makedirs(os.path.join(self.directory, CORRUPT_DIR), exist_ok=True)
        crash_files: list[str] = []
        dump_files: dict[str, dict[str, str]] = {}
        stored: set[str] = set()  # stems with a stored marker
        for filename in sorted(os.listdir(self.directory)):
            if filename.startswith(PROBE_PREFIX):
                # A health probe cut short.
                unlink_if_present(os.path.join(self.directory, filename))
            elif filename.startswith(TEMP_PREFIX):
                self._move_aside(filename, "half-written")
            elif filename.endswith(SUFFIX):
                crash_files.append(filename)
            elif filename.endswith(DUMP_SUFFIX):
                stem, name = split_dump_filename(filename)
                dump_files.setdefault(stem, {})[name] = filename
            elif filename.endswith(STORED_SUFFIX):
                stored.add(filename[: -len(STORED_SUFFIX)])
        entries = []
        for filename in crash_files:
            dumps = dump_files.pop(filename[: -len(SUFFIX)], {})
            try:
                entry = self._check(filename, dumps)
            except (ValueError, OSError, CorruptEntry) as error:
                for dump in dumps.values():
                    self._move_aside(dump, f"its crash {filename} is unusable")
                self._move_aside(filename, str(error))
                continue
            if entry.stem in stored:
                stored.discard(entry.stem)
                entry = attr.evolve(entry, stored=True)
            entries.append(entry)
        for stem in stored:
            # The marker of an entry whose removal was cut short: nothing left to do.
            unlink_if_present(os.path.join(self.directory, stem + STORED_SUFFIX))
        for dumps in dump_files.values():
            for dump in dumps.values():
                self._move_aside(dump, "a dump without its crash file: its write, or its "
                                "removal after storing, was cut short")
        # What is on disk now, whatever was counted before.
        self._count(sum(entry.size for entry in entries) - self.total_bytes)
        return entries

    def _check(self, filename: str, dumps: Mapping[str, str]) -> SpoolEntry:
        """A SpoolEntry for a complete crash found at start-up, or CorruptEntry."""
        entry = SpoolEntry.from_filename(filename, 0)
        path = os.path.join(self.directory, filename)
        raw_crash = parse_raw_crash(_read_file(path), entry.crash_id)
        expected = _expected_checksums(raw_crash)
        if expected is not None and set(expected) != set(dumps):
            missing = sorted(set(expected) - set(dumps))
            raise CorruptEntry(f"dumps missing: {', '.join(missing)}" if missing
                               else "dumps its raw crash does not list")
        size = os.path.getsize(path) + sum(
            os.path.getsize(os.path.join(self.directory, dump)) for dump in dumps.values())
        return attr.evolve(entry, size=size, dump_names=sorted(dumps), recovered=True)

    def _move_aside(self, filename: str, reason: str) -> None:
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

    def _put(self, crash: Crash, stem: str) -> SpoolEntry:
        """Write the dumps, then commit the raw crash by rename. Blocking."""
        directory = self.directory
        written = []
        size = 0
        try:
            for name in crash.dump_names():
                path = os.path.join(directory, dump_filename(stem, name))
                pieces = crash.dump_pieces(name)
                written.append(path)
                self._write_dump(path, pieces)
                size += sum(len(piece) for piece in pieces)
            raw = crash.serialized_raw_crash()
            temp_path = os.path.join(directory, TEMP_PREFIX + stem + SUFFIX)
            written.append(temp_path)
            _write_file(temp_path, [raw], self.fsync)
            path = os.path.join(directory, stem + SUFFIX)
            os.replace(temp_path, path)
            written[-1] = path
            if self.fsync:
                # The client will hear "busy" and send it again if this fails.
                _fsync_directory(directory)
        except BaseException:
            for path in written:
                unlink_if_present(path)
            raise
        return SpoolEntry.from_filename(stem + SUFFIX, size + len(raw), crash.dump_names())

    def _write_dump(self, path: str, pieces: Sequence[Piece]) -> None:
        direct = self._direct
        if direct is not None and direct.supported and direct.write(path, pieces, self.fsync):
            return
        _write_file(path, pieces, self.fsync)

    @property
    def writes_direct(self) -> bool:
        """True while dumps are written with O_DIRECT."""
        return self._direct is not None and self._direct.supported

    def put(self, crash: Crash) -> defer.Deferred[SpoolEntry]:
        """
        Write a crash durably (dumps, then the raw crash under a temp name
        renamed into place; fsync of every file and the directory when
        ``fsync``); a Deferred of its SpoolEntry.
        """
        stem = f"{self.clock_ns():020d}-{crash.crash_id}"
        reserved = HEADER_ESTIMATE + sum(
            len(piece) for name in crash.dumps for piece in crash.dump_pieces(name))
        self.writing_bytes += reserved
        d = deferToThreadPool(self.reactor, self.threadpool, self._put, crash, stem)
        self._writes.add(d)

        def settle(result: SpoolEntry | Failure) -> SpoolEntry | Failure:
            self.writing_bytes -= reserved
            self._writes.discard(d)
            if not isinstance(result, Failure):
                # On the reactor with the reservation's release: admission
                # never sees the entry counted twice.
                self._count(result.size)
            if not self._writes:
                for waiter in self._idle.take():
                    # On the next turn: whoever awaits this write sees it first.
                    self.reactor.callLater(0, waiter.callback, None)
            return result

        return d.addBoth(settle)

    def idle(self) -> defer.Deferred[None]:
        """A Deferred that fires once no write is in flight."""
        return self._idle.wait(bool(self._writes))

    def _checked(self, entry: SpoolEntry, with_dumps: bool) -> tuple[
            bytes, RawCrash, dict[str, bytes], dict[str, str]]:
        """
        An entry's raw crash (bytes and mapping), its dumps' bytes when
        ``with_dumps``, and its dump paths, after the checks of ``load``:
        the dumps of an entry found at start-up must match their checksums.
        """
        directory = self.directory
        raw_path = os.path.join(directory, entry.filename)
        paths = {name: os.path.join(directory, entry.dump_filename(name))
                 for name in entry.dump_names}
        try:
            raw = _read_file(raw_path)
        except FileNotFoundError:
            raise CorruptEntry("its crash file is gone") from None
        raw_crash = parse_raw_crash(raw, entry.crash_id)
        expected = _expected_checksums(raw_crash) or {}
        dumps = {}
        for name, path in paths.items():
            try:
                if with_dumps:
                    dumps[name] = _read_file(path)
                    checksum = (hashlib.sha256(dumps[name]).hexdigest()
                                if entry.recovered else None)
                else:
                    checksum = _file_sha256(path)
            except FileNotFoundError:
                raise CorruptEntry(f"dump {name!r} is missing") from None
            if checksum is not None and name in expected and checksum != expected[name]:
                raise CorruptEntry(f"dump {name!r} is damaged")
        return raw, raw_crash, dumps, paths

    def load_blocking(self, entry: SpoolEntry) -> Crash:
        """
        The Crash in ``entry`` with its dumps' bytes, read in the calling
        thread. The dumps of an entry found at start-up are checked against
        their checksums first. CorruptEntry when something is missing or
        damaged, OSError when the disk fails.
        """
        raw, raw_crash, dumps, _ = self._checked(entry, with_dumps=True)
        return Crash(entry.crash_id, raw_crash, dict(dumps), serialized=raw)

    def load(self, entry: SpoolEntry) -> defer.Deferred[Crash]:
        """``load_blocking`` in the thread pool; a Deferred of the Crash."""
        return deferToThreadPool(self.reactor, self.threadpool, self.load_blocking, entry)

    def load_files_blocking(self, entry: SpoolEntry) -> SpooledCrash:
        """
        ``entry`` as files, for storage that places them (IFileCrashStorage),
        in the calling thread. Nothing is read of an entry this process
        wrote; one found at start-up is checked as ``load_blocking`` checks
        it, its dumps hashed from the files. Only the movers' pool jobs use
        it, so it has no Deferred form.
        """
        if entry.recovered:
            _, _, _, paths = self._checked(entry, with_dumps=False)
        else:
            paths = {name: os.path.join(self.directory, entry.dump_filename(name))
                     for name in entry.dump_names}
        return SpooledCrash(entry.crash_id, os.path.join(self.directory, entry.filename),
                            paths)

    def remove_blocking(self, entry: SpoolEntry) -> None:
        """
        Delete a stored crash's files in the calling thread, the raw crash
        first, then the dumps and its stored marker, and stop counting its
        bytes.
        """
        unlink_if_present(os.path.join(self.directory, entry.filename))
        for name in entry.dump_names:
            unlink_if_present(os.path.join(self.directory, entry.dump_filename(name)))
        unlink_if_present(os.path.join(self.directory, entry.stored_filename))
        self._count(-entry.size)

    def remove(self, entry: SpoolEntry) -> defer.Deferred[None]:
        """``remove_blocking`` in the thread pool; a Deferred."""
        return deferToThreadPool(self.reactor, self.threadpool, self.remove_blocking, entry)

    def mark_stored_blocking(self, entry: SpoolEntry) -> None:
        """
        Record in the calling thread that ``entry`` is stored (its
        ``.stored`` marker), so that a restart publishes its id without
        storing it again. With ``fsync``, the marker is made durable.
        """
        path = os.path.join(self.directory, entry.stored_filename)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        if self.fsync:
            _fsync_directory(self.directory)

    def mark_stored(self, entry: SpoolEntry) -> defer.Deferred[None]:
        """``mark_stored_blocking`` in the thread pool; a Deferred."""
        return deferToThreadPool(self.reactor, self.threadpool, self.mark_stored_blocking,
                                 entry)

    def quarantine_blocking(self, entry: SpoolEntry, reason: str) -> None:
        """
        Move an unreadable entry's files aside, in the calling thread, so
        it is never retried, and stop counting its bytes.
        """
        self._move_aside(entry.filename, reason)
        for name in entry.dump_names:
            dump = entry.dump_filename(name)
            if os.path.exists(os.path.join(self.directory, dump)):
                self._move_aside(dump, f"its crash {entry.filename} is unusable")
        self._count(-entry.size)

    def quarantine(self, entry: SpoolEntry, reason: str) -> defer.Deferred[None]:
        """``quarantine_blocking`` in the thread pool; a Deferred."""
        return deferToThreadPool(self.reactor, self.threadpool, self.quarantine_blocking,
                                 entry, reason)

    def _probe(self) -> str | None:
        try:
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=PROBE_PREFIX) as probe:
                probe.write(b"probe")
                probe.flush()
        except OSError as error:
            return f"{self.directory} is not writable: {error.strerror or error}"
        return None

    def check_writable(self) -> defer.Deferred[str | None]:
        """
        A Deferred of None when a file can be created in the spool, else of
        one line saying why (a real write: as root, permissions say nothing).
        """
        return deferToThreadPool(self.reactor, self.threadpool, self._probe)

    def free_bytes(self) -> int:
        """Free bytes on the spool's filesystem (one statvfs call)."""
        stats = os.statvfs(self.directory)
        return stats.f_bavail * stats.f_frsize


def _fsync_directory(directory: str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

