"""
With ``--workers N``: what a worker knows only in memory, published in its
spool shard for the other workers' heartbeats.

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

import attr
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool

from antenna_tw.logs import Logger

STATUS_FILE = ".status"
_STATUS_TEMP = ".status-new"  # not ".tmp-": the spool moves those aside at start-up


def write_status(directory, status):
    """Replace ``directory``'s status file with ``status`` (blocking, atomic)."""
    temp = os.path.join(directory, _STATUS_TEMP)
    with open(temp, "w", encoding="utf-8") as status_file:
        json.dump(status, status_file, sort_keys=True)
    os.replace(temp, os.path.join(directory, STATUS_FILE))


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # running, as another user
    return True


def read_retrying(directory):
    """
    The ``retrying`` count that the worker of shard ``directory`` published
    (blocking); 0 when there is none, it is unreadable or its worker is gone.
    """
    try:
        with open(os.path.join(directory, STATUS_FILE), "rb") as status_file:
            status = json.loads(status_file.read())
        pid, retrying = status["pid"], status["retrying"]
    except (OSError, ValueError, TypeError, KeyError):
        return 0
    if type(pid) is not int or type(retrying) is not int or pid <= 0:
        return 0
    return retrying if _running(pid) else 0


@attr.s
class StatusPublisher:
    """
    Keeps ``directory``'s status file up to date with ``retrying()`` (the
    crash mover's count): checked every ``interval`` seconds on the
    reactor's clock, written in ``threadpool`` when it changed.
    """

    directory = attr.ib()
    retrying = attr.ib()
    reactor = attr.ib()
    threadpool = attr.ib()
    interval = attr.ib(default=1.0)
    pid = attr.ib(factory=os.getpid)
    log = Logger(namespace="antenna.shardstatus")

    def __attrs_post_init__(self):
        self._published = None  # nothing yet: the first check always writes
        self._failing = False
        self._loop = task.LoopingCall(self._publish)
        self._loop.clock = self.reactor
        self._stopped = None

    def start(self):
        """Publish now (replacing what a previous worker left), then as the count changes."""
        self._stopped = self._loop.start(self.interval, now=True)

    def stop(self):
        """Stop publishing; a Deferred that fires once a write in flight has landed."""
        if self._loop.running:
            self._loop.stop()
        return self._stopped if self._stopped is not None else defer.succeed(None)

    def _publish(self):
        value = self.retrying()
        if value == self._published:
            return None
        status = {"pid": self.pid, "retrying": value}
        d = deferToThreadPool(self.reactor, self.threadpool, write_status, self.directory, status)
        return d.addCallbacks(self._written, self._failed, callbackArgs=(value,))

    def _written(self, _, value):
        self._published = value
        self._failing = False

    def _failed(self, failure):
        # Retried at the next check; said once, not every second of a disk outage.
        if not self._failing:
            self._failing = True
            self.log.warn("could not write {path}: {error}",
                          path=os.path.join(self.directory, STATUS_FILE),
                          error=str(failure.value))
