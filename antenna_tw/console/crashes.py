"""
Finding crashes for the console: the newest ones (the spool's, then
storage's) and one crash by id, with its raw crash and dumps.

The spool and filesystem storage are read in the thread pool (blocking
functions below); S3 is listed and read with the project's S3 client
(``S3Crashes``). Every walk is bounded.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import attr
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from antenna_tw import crashid
from antenna_tw.crash import BAD_FIELDS
from antenna_tw.spool import DUMP_SUFFIX, STORED_SUFFIX, SUFFIX, split_dump_filename

RESULTS = {crashid.ACCEPT_DIGIT: "ACCEPT", crashid.DEFER_DIGIT: "DEFER",
           crashid.REJECT_DIGIT: "REJECT", crashid.FAKEACCEPT_DIGIT: "FAKEACCEPT"}
# Storage's day directories: YYYYMMDD
_DAY = re.compile(r"^\d{8}$")
# Raw crashes larger than this are not read for the recent list's columns.
MAX_RAW_CRASH = 1024 * 1024
# Rows of stored crashes remembered between two reads of the recent list.
REMEMBERED_ROWS = 5000


def throttle_result(crash_id: str) -> str:
    """The throttle result its id says (the 7th character from the end)."""
    digit = crash_id[-7:-6]
    return RESULTS.get(int(digit), "?") if digit.isdigit() else "?"


def valid_id(crash_id: str) -> bool:
    """Whether ``crash_id`` is a crash id (the only ids the console looks up)."""
    return crashid.is_valid_crash_id(crash_id, strict=False)


@attr.s(frozen=True)
class CrashRow:
    """One line of the recent list."""

    crash_id: str = attr.ib()
    time: float = attr.ib()  # accepted (spool) or stored (storage), seconds since the epoch
    product: str = attr.ib()
    version: str = attr.ib()
    dumps: dict[str, int] = attr.ib()  # name -> bytes
    state: str = attr.ib()  # spooled, stored, published

    @property
    def result(self) -> str:
        """Its throttle result, from its id."""
        return throttle_result(self.crash_id)

    def to_json(self) -> dict[str, Any]:
        """As the API answers it."""
        return {"crash_id": self.crash_id, "time": _iso(self.time), "product": self.product,
                "version": self.version, "throttle_result": self.result,
                "dumps": dict(self.dumps), "state": self.state}


@attr.s(frozen=True)
class CrashRecord:
    """One crash as found: its raw crash, its dumps' sizes, where and in what state."""

    crash_id: str = attr.ib()
    raw_crash: dict[str, Any] = attr.ib()
    raw_bytes: bytes = attr.ib(repr=False)  # the raw crash as stored
    dumps: dict[str, int] = attr.ib()
    state: str = attr.ib()
    # name -> where to read the dump: a path, or a storage key
    dump_locations: dict[str, str] = attr.ib(factory=dict, repr=False)
    in_spool: bool = attr.ib(default=False)  # found in the spool (else in storage)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def shown_annotations(raw_crash: dict[str, Any]) -> dict[str, Any]:
    """
    The annotations a page may show: the raw crash without the fields
    Antenna removes as personal data (``crash.BAD_FIELDS``), should one be
    there, and without the collector's ``metadata`` (shown apart).
    """
    return {key: value for key, value in raw_crash.items()
            if key not in BAD_FIELDS and key != "metadata"}


def without_personal_data(raw_crash: dict[str, Any]) -> dict[str, Any]:
    """The raw crash without ``BAD_FIELDS`` (what the API and raw JSON view give)."""
    return {key: value for key, value in raw_crash.items() if key not in BAD_FIELDS}


def _read_json(path: str) -> tuple[dict[str, Any], bytes]:
    with open(path, "rb") as raw_file:
        data = raw_file.read(MAX_RAW_CRASH + 1)
    if len(data) > MAX_RAW_CRASH:
        return {}, data
    try:
        value = json.loads(data)
    except ValueError:
        return {}, data
    return (value if isinstance(value, dict) else {}), data


def _columns(raw_crash: dict[str, Any]) -> tuple[str, str]:
    return str(raw_crash.get("ProductName", "")), str(raw_crash.get("Version", ""))


# -- the spool ---------------------------------------------------------------


def _spool_listing(directory: str) -> tuple[list[str], dict[str, dict[str, int]], set[str]]:
    """The ``.crash`` names, each stem's dumps (name -> bytes), and the stored stems."""
    crashes: list[str] = []
    dumps: dict[str, dict[str, int]] = {}
    stored: set[str] = set()
    try:
        listing = os.scandir(directory)
    except FileNotFoundError:
        return [], {}, set()
    with listing:
        for item in listing:
            name = item.name
            if name.startswith("."):
                continue
            if name.endswith(SUFFIX):
                crashes.append(name)
            elif name.endswith(STORED_SUFFIX):
                stored.add(name[: -len(STORED_SUFFIX)])
            elif name.endswith(DUMP_SUFFIX):
                try:
                    stem, dump_name = split_dump_filename(name)
                    size = item.stat(follow_symlinks=False).st_size
                except (ValueError, FileNotFoundError):
                    continue
                dumps.setdefault(stem, {})[dump_name] = size
    return crashes, dumps, stored


def spool_recent(directories: Sequence[str], limit: int) -> list[CrashRow]:
    """The newest ``limit`` crashes waiting in the spool directories (blocking)."""
    found = []
    for directory in directories:
        crashes, dumps, stored = _spool_listing(directory)
        for name in crashes:
            digits, _, rest = name.partition("-")
            stem = name[: -len(SUFFIX)]
            if digits.isdigit():
                found.append((int(digits), rest[: -len(SUFFIX)], directory, name,
                              dumps.get(stem, {}), stem in stored))
    rows = []
    for stamp, crash_id, directory, name, stem_dumps, is_stored in heapq.nlargest(limit, found):
        try:
            raw_crash, _ = _read_json(os.path.join(directory, name))
        except OSError:
            continue  # stored and removed meanwhile
        product, version = _columns(raw_crash)
        rows.append(CrashRow(crash_id, stamp / 1e9, product, version, stem_dumps,
                             "stored" if is_stored else "spooled"))
    return rows


def dumps_of(directory: str, stem: str) -> dict[str, int]:
    """The dumps of spool entry ``stem`` (name -> bytes)."""
    found = {}
    prefix = stem + "."
    try:
        names = [n for n in os.listdir(directory)
                 if n.startswith(prefix) and n.endswith(DUMP_SUFFIX)]
    except FileNotFoundError:
        return {}
    for name in names:
        try:
            found[split_dump_filename(name)[1]] = os.stat(os.path.join(directory, name)).st_size
        except (ValueError, FileNotFoundError):
            continue
    return found


def spool_find(directories: Sequence[str], crash_id: str) -> CrashRecord | None:
    """Crash ``crash_id`` if it waits in the spool (blocking)."""
    suffix = f"-{crash_id}{SUFFIX}"
    for directory in directories:
        try:
            names = [n for n in os.listdir(directory) if n.endswith(suffix)]
        except FileNotFoundError:
            continue
        for name in names:
            stem = name[: -len(SUFFIX)]
            try:
                raw_crash, data = _read_json(os.path.join(directory, name))
            except OSError:
                continue
            dumps = dumps_of(directory, stem)
            state = "stored" if os.path.exists(os.path.join(directory, stem + STORED_SUFFIX)) \
                else "spooled"
            locations = {dump: os.path.join(directory, f"{stem}.{dump}{DUMP_SUFFIX}")
                         for dump in dumps}
            return CrashRecord(crash_id, raw_crash, data, dumps, state, locations, in_spool=True)
    return None


# -- storage -----------------------------------------------------------------


class ICrashFinder(Interface):
    """Crashes in storage, for the console."""

    def recent(limit: int) -> defer.Deferred[list[CrashRow]]:
        """The newest ``limit`` stored crashes, newest first (bounded work)."""

    def find(crash_id: str) -> defer.Deferred[CrashRecord | None]:
        """The stored crash ``crash_id``, or None."""

    def read_dump(record: CrashRecord, name: str) -> defer.Deferred[bytes]:
        """The bytes of dump ``name`` of a crash ``find`` gave."""


@implementer(ICrashFinder)
@attr.s
class NoStorage:
    """Storage the console cannot read (noop, a class of your own): the spool only."""

    def recent(self, limit: int) -> defer.Deferred[list[CrashRow]]:
        """Nothing."""
        return defer.succeed([])

    def find(self, crash_id: str) -> defer.Deferred[CrashRecord | None]:
        """Nothing."""
        return defer.succeed(None)

    def read_dump(self, record: CrashRecord, name: str) -> defer.Deferred[bytes]:
        """Never called: ``find`` finds nothing."""
        return defer.fail(KeyError(name))


def read_file(path: str) -> bytes:
    """A whole file (blocking)."""
    with open(path, "rb") as dump_file:
        return dump_file.read()


@implementer(ICrashFinder)
@attr.s
class FSCrashes:
    """Filesystem storage (``<root>/<YYYYMMDD>/raw_crash/<id>.json``...), read in ``threadpool``."""

    root: str = attr.ib()
    reactor: Any = attr.ib()
    threadpool: ThreadPool = attr.ib()
    published: bool = attr.ib(default=False)  # a stored crash out of the spool was published

    def _state(self) -> str:
        return "published" if self.published else "stored"

    def __attrs_post_init__(self) -> None:
        # A stored crash's files never change: what was read of one is
        # remembered (its row; its raw crash's mtime by day), so a console
        # polled every second reads only the crashes stored since.
        self._lock = threading.Lock()
        self._mtimes: dict[str, dict[str, float]] = {}
        self._rows: OrderedDict[str, CrashRow] = OrderedDict()

    def _day_mtimes(self, day: str) -> dict[str, float]:
        raw_dir = os.path.join(self.root, day, "raw_crash")
        known = self._mtimes.get(day, {})
        found = {}
        with os.scandir(raw_dir) as listing:
            for item in listing:
                name = item.name
                if not name.endswith(".json") or name.startswith("."):
                    continue
                crash_id = name[:-5]
                if crash_id in known:
                    found[crash_id] = known[crash_id]
                    continue
                try:
                    found[crash_id] = item.stat().st_mtime
                except FileNotFoundError:
                    continue
        return found

    def _row(self, day: str, crash_id: str, mtime: float) -> CrashRow | None:
        row = self._rows.get(crash_id)
        if row is not None:
            return row
        try:
            raw_crash, _ = _read_json(os.path.join(self.root, day, "raw_crash",
                                                   crash_id + ".json"))
        except OSError:
            return None
        product, version = _columns(raw_crash)
        row = CrashRow(crash_id, mtime, product, version, self._dumps(day, crash_id),
                       self._state())
        self._rows[crash_id] = row
        while len(self._rows) > REMEMBERED_ROWS:
            self._rows.popitem(last=False)
        return row

    def recent_blocking(self, limit: int) -> list[CrashRow]:
        """Day directories newest first until ``limit`` crashes are found (blocking)."""
        try:
            days = sorted((d for d in os.listdir(self.root) if _DAY.match(d)), reverse=True)
        except FileNotFoundError:
            return []
        rows: list[CrashRow] = []
        with self._lock:
            visited = {}
            for day in days:
                try:
                    mtimes = visited[day] = self._day_mtimes(day)
                except FileNotFoundError:
                    continue
                newest = heapq.nlargest(limit - len(rows), ((mtime, crash_id)
                                                             for crash_id, mtime in mtimes.items()))
                for mtime, crash_id in newest:
                    row = self._row(day, crash_id, mtime)
                    if row is not None:
                        rows.append(row)
                if len(rows) >= limit:
                    break
            self._mtimes = visited  # only the days still read
        return rows

    def _dumps(self, day: str, crash_id: str) -> dict[str, int]:
        path = os.path.join(self.root, day, "dump_names", crash_id + ".json")
        try:
            with open(path, "rb") as names_file:
                names = json.loads(names_file.read())
        except (OSError, ValueError):
            return {}
        sizes = {}
        for name in names if isinstance(names, list) else ():
            if not isinstance(name, str) or "/" in name or name.startswith("."):
                continue
            try:
                sizes[name] = os.stat(os.path.join(self.root, day, name, crash_id)).st_size
            except (OSError, ValueError):
                continue
        return sizes

    def find_blocking(self, crash_id: str) -> CrashRecord | None:
        """Crash ``crash_id`` in storage (blocking)."""
        day = crashid.date_from_crash_id(crash_id)
        try:
            raw_crash, data = _read_json(os.path.join(self.root, day, "raw_crash",
                                                      crash_id + ".json"))
        except OSError:
            return None
        dumps = self._dumps(day, crash_id)
        locations = {name: os.path.join(self.root, day, name, crash_id) for name in dumps}
        return CrashRecord(crash_id, raw_crash, data, dumps, self._state(), locations)

    def recent(self, limit: int) -> defer.Deferred[list[CrashRow]]:
        """``recent_blocking`` in the thread pool."""
        return deferToThreadPool(self.reactor, self.threadpool, self.recent_blocking, limit)

    def find(self, crash_id: str) -> defer.Deferred[CrashRecord | None]:
        """``find_blocking`` in the thread pool."""
        return deferToThreadPool(self.reactor, self.threadpool, self.find_blocking, crash_id)

    def read_dump(self, record: CrashRecord, name: str) -> defer.Deferred[bytes]:
        """The dump's file, read in the thread pool."""
        return deferToThreadPool(self.reactor, self.threadpool, read_file,
                                 record.dump_locations[name])


def merge_recent(spooled: Iterable[CrashRow], stored: Iterable[CrashRow],
                 limit: int) -> list[CrashRow]:
    """Spooled and stored rows, one per id (the spool's wins), newest first, at most ``limit``."""
    rows: dict[str, CrashRow] = {}
    for row in spooled:
        rows.setdefault(row.crash_id, row)
    for row in stored:
        rows.setdefault(row.crash_id, row)
    return sorted(rows.values(), key=lambda row: row.time, reverse=True)[:limit]
