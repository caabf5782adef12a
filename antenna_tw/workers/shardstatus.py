"""
With ``--workers N``: what each worker's heartbeat knows of the other
shards. Their crashes, ages and bytes come from their files (``waiting_in``);
what a worker knows only in memory is published in its spool shard.

Today that is one count, ``retrying`` (its crashes whose last save failed),
which no file of the spool shows. Each worker keeps it in ``.status`` in its
shard, ``{"pid": <pid>, "retrying": <n>}``, rewritten atomically (a temp file
renamed over it) in the thread pool, at most once per ``interval`` and only
when the count changed: a quiet worker writes nothing. A reader takes the
count of a worker whose pid is gone as 0: nothing retries in a process that
is not running, and its crashes still count in the heartbeat's
``queue_length`` from their files. The spool ignores dot files, so the
status file is never taken for an entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import attr
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from antenna_tw.files import process_running
from antenna_tw.health import IOtherShards, ShardState
from antenna_tw.logs import Logger
from antenna_tw.spool import DUMP_SUFFIX, SUFFIX

STATUS_FILE = ".status"
_STATUS_TEMP = ".status-new"  # not ".tmp-": the spool moves those aside at start-up


def write_status(directory: str, status: dict[str, Any]) -> None:
    """Replace ``directory``'s status file with ``status`` (blocking, atomic)."""
    temp = os.path.join(directory, _STATUS_TEMP)
    with open(temp, "w", encoding="utf-8") as status_file:
        json.dump(status, status_file, sort_keys=True)
    os.replace(temp, os.path.join(directory, STATUS_FILE))


def read_status(directory: str) -> dict[str, Any] | None:
    """
    The status that the worker of shard ``directory`` published (blocking),
    with a well-formed ``pid`` and ``retrying``; None when there is none or
    it is unreadable.
    """
    try:
        with open(os.path.join(directory, STATUS_FILE), "rb") as status_file:
            status = json.loads(status_file.read())
        pid, retrying = status["pid"], status["retrying"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if type(pid) is not int or type(retrying) is not int or pid <= 0:
        return None
    return status if isinstance(status, dict) else None


def read_retrying(directory: str) -> int:
    """
    The ``retrying`` count that the worker of shard ``directory`` published
    (blocking); 0 when there is none, it is unreadable or its worker is gone.
    """
    status = read_status(directory)
    if status is None or not process_running(status["pid"]):
        return 0
    return int(status["retrying"])


@attr.s
class StatusPublisher:
    """
    Keeps ``directory``'s status file up to date with ``retrying()`` (the
    crash mover's count): checked every ``interval`` seconds on the
    reactor's clock, written in ``threadpool`` when it changed.
    """

    directory: str = attr.ib()
    retrying: Callable[[], int] = attr.ib()
    reactor: Any = attr.ib()  # IReactorTime and IReactorFromThreads
    threadpool: ThreadPool = attr.ib()
    interval: float = attr.ib(default=1.0)
    pid: int = attr.ib(factory=os.getpid)
    # With the console on: the process's Figures (console/figures.py) and
    # what else the console shows of it (``extra()``: its publish queue).
    figures: Any = attr.ib(default=None)
    extra: Callable[[], dict[str, Any]] | None = attr.ib(default=None)
    log = Logger(namespace="antenna.shardstatus")

    def __attrs_post_init__(self) -> None:
        self._published: object = None  # nothing yet: the first check always writes
        self._failing = False
        self._loop = task.LoopingCall(self._publish)
        self._loop.clock = self.reactor
        self._stopped: defer.Deferred[Any] | None = None

    def start(self) -> None:
        """Publish now (replacing what a previous worker left), then as the count changes."""
        self._stopped = self._loop.start(self.interval, now=True)

    def stop(self) -> defer.Deferred[Any]:
        """Stop publishing; a Deferred that fires once a write in flight has landed."""
        if self._loop.running:
            self._loop.stop()
        return self._stopped if self._stopped is not None else defer.succeed(None)

    def _publish(self) -> defer.Deferred[None] | None:
        retrying = self.retrying()
        figures = self.figures
        value = (retrying, figures.version if figures is not None else None)
        if value == self._published:
            return None
        status: dict[str, Any] = {"pid": self.pid, "retrying": retrying}
        if figures is not None:
            status["figures"] = figures.snapshot()
        if self.extra is not None:
            status.update(self.extra())
        d = deferToThreadPool(self.reactor, self.threadpool, write_status, self.directory, status)
        return d.addCallbacks(self._written, self._failed, callbackArgs=(value,))

    def _written(self, _: None, value: object) -> None:
        self._published = value
        self._failing = False

    def _failed(self, failure: Failure) -> None:
        # Retried at the next check; said once, not every second of a disk outage.
        if not self._failing:
            self._failing = True
            self.log.warn("could not write {path}: {error}",
                          path=os.path.join(self.directory, STATUS_FILE),
                          error=str(failure.value))


@attr.s(frozen=True, slots=True)
class Waiting:
    """What a spool directory holds, as another process sees it from its files."""

    entries: int = attr.ib()  # committed crashes (``.crash`` files)
    oldest_age: float = attr.ib()  # seconds, 0.0 when none
    # bytes of the ``.crash`` and ``.dump`` files, dumps being written included
    size: int = attr.ib()


def waiting_in(directory: str, now: float) -> Waiting:
    """
    The Waiting in spool ``directory`` (blocking): entries and their age
    from the file names, bytes from one ``stat`` per file; nothing is read.
    A file removed meanwhile is left out.
    """
    count, oldest, size = 0, None, 0
    try:
        listing = os.scandir(directory)
    except FileNotFoundError:
        return Waiting(0, 0.0, 0)
    with listing:
        for item in listing:
            name = item.name
            if name.startswith(".") or not name.endswith((SUFFIX, DUMP_SUFFIX)):
                continue
            try:
                size += item.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue  # stored and removed meanwhile
            if name.endswith(SUFFIX):
                stamp = name.partition("-")[0]
                if stamp.isdigit():
                    count += 1
                    oldest = int(stamp) if oldest is None else min(oldest, int(stamp))
    age = max(0.0, now - oldest / 1e9) if oldest is not None else 0.0
    return Waiting(count, age, size)


@implementer(IOtherShards)
@attr.s(frozen=True)
class SiblingShards:
    """The other workers' spool shards, read from their files and status files."""

    directories: tuple[str, ...] = attr.ib()

    def read(self, now: float) -> list[ShardState]:
        """Each shard's crashes, bytes and retrying count (blocking)."""
        states = []
        for directory in self.directories:
            waiting = waiting_in(directory, now)
            states.append(ShardState(os.path.basename(directory), waiting.entries,
                                     waiting.oldest_age, waiting.size,
                                     read_retrying(directory)))
        return states



def _minutes(status: dict[str, Any] | None) -> list[Any]:
    from antenna_tw.console.figures import Minute

    minutes = []
    for value in (status or {}).get("figures") or ():
        try:
            minutes.append(Minute.from_json(value))
        except (TypeError, ValueError, KeyError, AttributeError):
            continue  # a status written by another version: left out
    return minutes


@attr.s(frozen=True)
class ConsoleShards:
    """
    Every worker's shard, read for the console (``antenna_tw.console.node.INodeSource``)
    by the supervising parent: status files and spool files, in ``threadpool``.
    """

    directories: tuple[str, ...] = attr.ib()
    reactor: Any = attr.ib()
    threadpool: ThreadPool = attr.ib()

    def read_blocking(self, now: float) -> list[Any]:
        """Each shard's ProcessReading (blocking)."""
        from antenna_tw.console.node import ProcessReading

        readings = []
        for directory in self.directories:
            status = read_status(directory)
            pid = status["pid"] if status is not None else None
            running = pid is not None and process_running(pid)
            waiting = waiting_in(directory, now)
            publish = (status or {}).get("publish")
            readings.append(ProcessReading(
                os.path.basename(directory), pid, running, waiting.entries,
                waiting.oldest_age, waiting.size,
                int(status["retrying"]) if status is not None and running else 0,
                _minutes(status), publish if isinstance(publish, dict) else None))
        return readings

    def read(self, now: float) -> defer.Deferred[list[Any]]:
        """``read_blocking`` in the thread pool."""
        return deferToThreadPool(self.reactor, self.threadpool, self.read_blocking, now)

    def spool_directories(self) -> list[str]:
        """The shards."""
        return list(self.directories)
