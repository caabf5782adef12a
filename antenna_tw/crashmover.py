"""
The crash movers: cooperative workers that copy spooled crashes to storage.

Each worker takes the next spool entry, loads it, saves it with the storage
backend and only then removes it from the spool. A failed save goes back on
the queue after a capped exponential backoff with jitter, timed by the
injected reactor; nothing is ever dropped.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict

import attr
from twisted.internet import defer
from twisted.logger import Logger

from antenna_tw.spool import CorruptEntry

_STOP = object()


def backoff_delay(failures, base, cap, rng):
    """Full-jitter exponential backoff: uniform in [base/2, min(cap, base * 2**n)]."""
    ceiling = min(cap, base * (2 ** min(failures - 1, 30)))
    return max(base / 2, rng.uniform(0, ceiling))


@attr.s
class CrashMover:
    """``workers`` loops moving crashes from ``spool`` to ``storage``."""

    spool = attr.ib()
    storage = attr.ib()
    reactor = attr.ib()
    metrics = attr.ib()
    workers = attr.ib(default=2)
    base_delay = attr.ib(default=1.0)
    max_delay = attr.ib(default=300.0)
    rng = attr.ib(default=attr.Factory(random.Random), repr=False)
    log = Logger()

    def __attrs_post_init__(self):
        self._queue = defer.DeferredQueue()
        self._pending = OrderedDict()  # crash id -> entry, oldest first
        self._failures = {}
        self._retries = {}
        self._loops = []
        self._stopping = False
        self._drained = []

    # -- what the rest of the collector sees --------------------------------

    def enqueue(self, entry):
        """Queue a spooled crash for storage."""
        self._pending[entry.crash_id] = entry
        self._queue.put(entry)
        self.metrics.gauge("breakpad_resource.save_queue_size", len(self._pending))

    def queue_length(self):
        """Crashes not yet stored: queued, being saved, or waiting to retry."""
        return len(self._pending)

    def oldest_age(self):
        """Seconds since the oldest unstored crash was accepted, 0 when none."""
        for entry in self._pending.values():
            return max(0.0, self.reactor.seconds() - entry.created)
        return 0.0

    # -- running -----------------------------------------------------------

    def start(self):
        self._stopping = False
        self._loops = [defer.ensureDeferred(self._work()) for _ in range(self.workers)]

    def stop(self, timeout):
        """
        Let the workers drain the queue for up to ``timeout`` seconds, then
        stop them; whatever is left stays in the spool for the next start.
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
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()
        loops, self._loops = self._loops, []
        for _ in loops:
            self._queue.put(_STOP)  # idle workers return at once
        for loop in loops:
            loop.cancel()  # busy ones give up their save; the entry stays spooled
        left = len(self._pending)
        if left:
            self.log.info("{count} crashes left in the spool for the next start", count=left)
        return defer.DeferredList(loops, consumeErrors=True)

    async def _work(self):
        while True:
            entry = await self._queue.get()
            if entry is _STOP:
                return
            if self._stopping:
                continue
            await self._move(entry)

    async def _move(self, entry):
        started = time.perf_counter()
        try:
            crash = await self.spool.load(entry)
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
        except Exception as error:
            self.metrics.incr("breakpad_resource.save_crash_exception.count")
            self.log.warn("{crash_id}: save failed ({error}); will retry",
                          crash_id=entry.crash_id, error=_describe(error))
            self._retry(entry)
            return
        try:
            await self.spool.remove(entry)
        except Exception:
            self.log.failure("{crash_id}: stored but its spool entry remains",
                             crash_id=entry.crash_id)
        now_ms = (time.perf_counter() - started) * 1000
        self.metrics.timing("breakpad_resource.crash_save.time", now_ms)
        self.metrics.incr("breakpad_resource.save_crash.count")
        handling = max(0.0, self.reactor.seconds() - entry.created) * 1000
        self.metrics.timing("breakpad_resource.crash_handling.time", handling)
        self.log.info("{crash_id} saved", crash_id=entry.crash_id)
        self._done(entry)

    def _retry(self, entry):
        if self._stopping:
            return
        failures = self._failures.get(entry.crash_id, 0) + 1
        self._failures[entry.crash_id] = failures
        delay = backoff_delay(failures, self.base_delay, self.max_delay, self.rng)

        def requeue():
            self._retries.pop(entry.crash_id, None)
            self._queue.put(entry)

        self._retries[entry.crash_id] = self.reactor.callLater(delay, requeue)

    def _done(self, entry):
        self._pending.pop(entry.crash_id, None)
        self._failures.pop(entry.crash_id, None)
        self.metrics.gauge("breakpad_resource.save_queue_size", len(self._pending))
        if not self._pending:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)


def _describe(error):
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]
