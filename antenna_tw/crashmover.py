"""
The crash movers: cooperative workers that copy spooled crashes to storage.

Each worker takes the next spool entry, loads it, saves it with the storage
backend and only then removes it from the spool. A failed save goes back on
the queue after a capped exponential backoff with jitter, timed by the
injected reactor; nothing is ever dropped, whatever the number of failures.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict

import attr
from twisted.internet import defer, task
from twisted.logger import Logger

from antenna_tw.spool import CorruptEntry


@attr.s(frozen=True)
class Backoff:
    """
    How long a crash waits before its next try: exponential backoff with
    jitter, uniform in ``[base / 2, min(cap, base * 2**(failures-1))]``, so a
    dead store is not hammered and a crowd of crashes that failed together
    does not retry together.
    """

    base = attr.ib(default=1.0)
    cap = attr.ib(default=60.0)
    rng = attr.ib(factory=random.Random, repr=False, eq=False)

    def ceiling(self, failures):
        """The largest delay after ``failures`` failures in a row."""
        return min(self.cap, self.base * (2 ** min(max(failures, 1) - 1, 60)))

    def delay(self, failures):
        """Seconds to wait after the ``failures``-th failure in a row (1, 2, ...)."""
        ceiling = self.ceiling(failures)
        return self.rng.uniform(min(self.base / 2, ceiling), ceiling)


@attr.s
class CrashMover:
    """
    ``workers`` loops moving crashes from ``spool`` to ``storage``.

    Crashes not yet stored are tracked by spool file name (unique even when a
    client sends the same crash id twice), in the order they were accepted.
    """

    spool = attr.ib()
    storage = attr.ib()
    reactor = attr.ib()
    metrics = attr.ib()
    workers = attr.ib(default=2)
    backoff = attr.ib(factory=Backoff)
    log = Logger(namespace="antenna.crashmover")

    def __attrs_post_init__(self):
        self._queue = defer.DeferredQueue()
        self._pending = OrderedDict()  # spool file name -> entry, oldest first
        self._failures = {}  # spool file name -> failures in a row
        self._retries = {}  # spool file name -> Deferred of its backoff wait
        self._loops = []
        self._stopping = False
        self._drained = []

    # -- what the rest of the collector sees --------------------------------

    def enqueue(self, entry):
        """Queue a spooled crash for storage."""
        self._pending[entry.filename] = entry
        self._queue.put(entry)
        self._gauge()

    def queue_length(self):
        """Crashes not yet stored: queued, being saved, or waiting to retry."""
        return len(self._pending)

    def oldest_age(self):
        """Seconds since the oldest unstored crash was accepted, 0 when none."""
        for entry in self._pending.values():
            return max(0.0, self.reactor.seconds() - entry.created)
        return 0.0

    def retrying(self):
        """How many unstored crashes failed their last try."""
        return len(self._failures)

    def failures(self, entry):
        """How many times in a row saving ``entry`` has failed."""
        return self._failures.get(entry.filename, 0)

    # -- running -----------------------------------------------------------

    def start(self):
        """Start the workers; queued entries start moving at once."""
        self._stopping = False
        self._loops = [defer.ensureDeferred(self._work()) for _ in range(self.workers)]

    def stop(self, timeout):
        """
        Let the workers drain the queue for up to ``timeout`` seconds, then
        stop them, giving up saves in flight; whatever is left stays in the
        spool for the next start. A Deferred that fires when all have stopped.
        """
        d = defer.Deferred()
        if not self._pending:
            d.callback(None)
        else:
            self._drained.append(d)
        d.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda result, t: None)
        return d.addCallback(lambda _: self._halt())

    def _halt(self):
        self._stopping = True
        self._drained = []
        retries, self._retries = self._retries, {}
        for waiting in retries.values():
            waiting.cancel()
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()  # idle ones stop waiting; busy ones give up their save
        left = len(self._pending)
        if left:
            self.log.info("{count} crashes left in the spool for the next start", count=left)
        return defer.DeferredList(loops, consumeErrors=True)

    async def _work(self):
        while not self._stopping:
            entry = await self._queue.get()
            await self._move(entry)

    async def _move(self, entry):
        started = time.perf_counter()
        try:
            crash = await self.spool.load(entry)
        except defer.CancelledError:
            return
        except CorruptEntry as error:
            self.log.error("{crash_id}: spool entry unreadable, moved aside: {error}",
                           crash_id=entry.crash_id, error=str(error))
            await self.spool.quarantine(entry, str(error))
            self._done(entry)
            return
        except Exception:
            self.log.failure("{crash_id}: could not read spool entry", crash_id=entry.crash_id)
            self._retry(entry)
            return
        try:
            await self.storage.save_crash(crash)
        except defer.CancelledError:
            return  # shutting down: the entry stays spooled
        except Exception as error:
            self.metrics.incr("breakpad_resource.save_crash_exception.count")
            self.log.warn("{crash_id}: save failed ({error}); will retry",
                          crash_id=entry.crash_id, error=_describe(error))
            self._retry(entry)
            return
        try:
            await self.spool.remove(entry)
        except defer.CancelledError:
            pass  # stored; the thread removes the file all the same
        except Exception:
            self.log.failure("{crash_id}: stored but its spool entry remains",
                             crash_id=entry.crash_id)
        self.metrics.timing("breakpad_resource.crash_save.time",
                            (time.perf_counter() - started) * 1000)
        self.metrics.incr("breakpad_resource.save_crash.count")
        handling = max(0.0, self.reactor.seconds() - entry.created) * 1000
        self.metrics.timing("breakpad_resource.crash_handling.time", handling)
        self.log.info("{crash_id} saved", crash_id=entry.crash_id)
        self._done(entry)

    def _retry(self, entry):
        if self._stopping:
            return
        failures = self._failures.get(entry.filename, 0) + 1
        self._failures[entry.filename] = failures
        waiting = task.deferLater(self.reactor, self.backoff.delay(failures),
                                  self._requeue, entry)
        waiting.addErrback(lambda failure: failure.trap(defer.CancelledError))
        self._retries[entry.filename] = waiting

    def _requeue(self, entry):
        self._retries.pop(entry.filename, None)
        self._queue.put(entry)

    def _done(self, entry):
        self._pending.pop(entry.filename, None)
        self._failures.pop(entry.filename, None)
        self._gauge()
        if not self._pending:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def _gauge(self):
        self.metrics.gauge("breakpad_resource.save_queue_size", len(self._pending))


def _describe(error):
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]
