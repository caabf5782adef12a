"""
The publish queue: stored crashes whose ids are still to be published.

The crash movers hand each stored crash's spool entry here (its spool entry
is marked stored, so a restart publishes it without storing it again; see
``Spool.mark_stored``). ``workers`` loops take up to the publisher's
``batch_size`` entries at a time, publish their ids together, and remove
from the spool only the entries whose ids the publisher confirmed. The
others go back to the front of the queue and the loops wait a capped,
jittered back-off (``antenna_tw.backoff.Backoff`` on the injected reactor)
that grows with the failures in a row: an id is never dropped. After a
failure, ids go out again only once the publisher's health check passes
(``_probe``), so that an outage is probed, not filled with batches that a
hung queue may still deliver when it wakes.

Delivery is at least once: an id whose confirmation was lost (a timeout
after SQS accepted it), or whose spool entry could not be removed, or that
was published just before the process died and before its entry was
removed, is published again.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING

import attr
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from antenna_tw import metricnames
from antenna_tw.backoff import Backoff
from antenna_tw.crashid import ACCEPT_DIGIT
from antenna_tw.logs import Logger
from antenna_tw.metrics import IMetrics
from antenna_tw.publisher import ICrashPublisher, PublishFailed

if TYPE_CHECKING:
    from antenna_tw.spool import IReactorTimeAndThreads, Spool, SpoolEntry

# Loops publishing at once: one batch in flight while the next one fills.
PUBLISH_WORKERS = 2


def throttle_digit(crash_id: str) -> int | None:
    """The throttle digit of a crash id (7th character from the end), None if not a digit."""
    digit = crash_id[-7:-6]
    return int(digit) if digit.isdigit() else None


def accepted(crash_id: str) -> bool:
    """True for a crash the throttle rules accepted (``ACCEPT``), not deferred."""
    return throttle_digit(crash_id) == ACCEPT_DIGIT


@attr.s
class PublishQueue:
    """
    Publishes the ids of stored crashes with ``publisher`` and then removes
    their spool entries. ``accepted_only`` skips the ids of crashes the
    throttle rules deferred (their entries are removed unpublished).
    """

    publisher: ICrashPublisher = attr.ib()
    spool: Spool = attr.ib()
    reactor: IReactorTimeAndThreads = attr.ib()
    metrics: IMetrics = attr.ib()
    backoff: Backoff = attr.ib(factory=Backoff)
    accepted_only: bool = attr.ib(default=False)
    workers: int = attr.ib(default=PUBLISH_WORKERS)
    log = Logger(namespace="antenna.publish")

    def __attrs_post_init__(self) -> None:
        self._queue: collections.deque[SpoolEntry] = collections.deque()
        self._in_flight = 0  # entries in a publish() or a removal
        self._wakeup: list[Deferred[None]] = []
        self._failed_in_a_row = 0
        self._probed = 0  # the failures in a row when a probe last found it healthy
        self._probe_lock = defer.DeferredLock()
        self._resume_at = 0.0  # no publish before this reactor time (backing off)
        self._loops: list[Deferred[None]] = []
        self._stopping = False
        self._drained: list[Deferred[None]] = []

    # -- what the rest of the collector sees --------------------------------

    def add(self, entry: SpoolEntry) -> None:
        """Publish a stored crash's id, then remove its spool entry."""
        if self.accepted_only and not accepted(entry.crash_id):
            self.log.info("{crash_id} not published: deferred, and CRASHPUBLISH_ACCEPTED_ONLY",
                          crash_id=entry.crash_id)
            self._in_flight += 1
            self._remove([entry])
            return
        self._queue.append(entry)
        self._gauge()
        self._wake()

    def backlog(self) -> int:
        """Stored crashes whose ids are not yet published (queued or being published)."""
        return len(self._queue) + self._in_flight

    def oldest_age(self) -> float:
        """Seconds since the oldest queued crash was accepted, 0 when none."""
        if not self._queue:
            return 0.0
        return max(0.0, self.reactor.seconds() - min(entry.created for entry in self._queue))

    def failures_in_a_row(self) -> int:
        """Publish calls failed in a row (0 after a success)."""
        return self._failed_in_a_row

    # -- running -------------------------------------------------------------

    def start(self) -> None:
        """Start the loops; queued entries start publishing at once."""
        self._stopping = False
        self._loops = [defer.ensureDeferred(self._work()) for _ in range(self.workers)]

    def stop(self, timeout: float) -> Deferred[None]:
        """
        Publish what is queued for up to ``timeout`` seconds, then stop;
        what is left stays in the spool, marked stored, for the next start.
        """
        d: Deferred[None] = Deferred()
        if not self.backlog():
            d.callback(None)
        else:
            self._drained.append(d)
        d.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda result, t: None)
        return d.addCallback(lambda _: self._halt())

    def _halt(self) -> Deferred[None]:
        self._stopping = True
        self._drained = []
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()
        left = self.backlog()
        if left:
            self.log.info("{count} stored crashes left in the spool to publish at the next "
                          "start", count=left)
        return defer.DeferredList(loops, consumeErrors=True).addCallback(lambda _: None)

    def _wake(self) -> None:
        waiters, self._wakeup = self._wakeup, []
        for waiter in waiters:
            if not waiter.called:  # a cancelled loop's waiter has fired already
                waiter.callback(None)

    async def _next_batch(self) -> list[SpoolEntry]:
        while not self._queue:
            waiter: Deferred[None] = Deferred()
            self._wakeup.append(waiter)
            await waiter
        wait = self._resume_at - self.reactor.seconds()
        if wait > 0:
            await task.deferLater(self.reactor, wait)
            return []
        if self._failed_in_a_row and self._probed != self._failed_in_a_row:
            await self._probe()
            return []
        size = max(1, int(self.publisher.batch_size))
        batch: list[SpoolEntry] = []
        while self._queue and len(batch) < size:
            batch.append(self._queue.popleft())
        self._in_flight += len(batch)
        return batch

    async def _work(self) -> None:
        while not self._stopping:
            batch = await self._next_batch()
            if batch:
                await self._publish(batch)

    async def _probe(self) -> None:
        """
        After a failed publish, ask the publisher's health check (which has
        no side effect) before sending ids again: a request that hangs in a
        stopped queue may still be delivered when it wakes, so sending batch
        after batch into an outage would come out as duplicates. One loop
        probes at a time; a failed probe backs off further.
        """
        async with self._probe_lock:
            failures = self._failed_in_a_row
            if not failures or self._probed == failures:
                return  # the other loop probed meanwhile, or a publish succeeded
            try:
                errors = await self.publisher.check_health()
            except Exception as error:  # a publisher's bug counts as unreachable
                errors = [f"{type(error).__name__}: {error}"]
            if self._failed_in_a_row != failures:
                return  # a publish settled meanwhile: start over from its state
            if not errors:
                self._probed = failures
                return
            self._failed_in_a_row += 1
            delay = self.backoff.delay(self._failed_in_a_row)
            self._resume_at = self.reactor.seconds() + delay
            self.log.warn("{count} crash ids wait: {reason}; next try in {delay:.1f} s",
                          count=self.backlog(), reason=errors[0], delay=delay)

    async def _publish(self, batch: list[SpoolEntry]) -> None:
        ids = [entry.crash_id for entry in batch]
        started = time.perf_counter()
        failed: set[str] = set()
        reason = ""
        try:
            await self.publisher.publish(ids)
        except defer.CancelledError:
            self._in_flight -= len(batch)
            self._queue.extendleft(reversed(batch))
            raise
        except PublishFailed as error:
            failed, reason = set(error.crash_ids), error.reason
        except Exception as error:  # a publisher's bug must not lose ids
            failed, reason = set(ids), f"{type(error).__name__}: {error}"
        self.metrics.timing(metricnames.CRASH_PUBLISH_TIME, (time.perf_counter() - started) * 1000)
        done = [entry for entry in batch if entry.crash_id not in failed]
        again = [entry for entry in batch if entry.crash_id in failed]
        if done:
            self.metrics.incr(metricnames.PUBLISH_CRASH_COUNT, len(done))
        if again:
            self._failed(again, reason)
        else:
            self._failed_in_a_row = 0
            self._probed = 0
            self._resume_at = 0.0
        for entry in done:
            self.log.info("{crash_id} published", crash_id=entry.crash_id)
        if done:
            self._remove(done)
        self._gauge()

    def _failed(self, again: list[SpoolEntry], reason: str) -> None:
        self._in_flight -= len(again)
        self._queue.extendleft(reversed(again))
        self._failed_in_a_row += 1
        delay = self.backoff.delay(self._failed_in_a_row)
        self._resume_at = self.reactor.seconds() + delay
        self.metrics.incr(metricnames.PUBLISH_CRASH_EXCEPTION_COUNT)
        self.log.warn("{count} crash ids not published ({reason}); will retry in "
                      "{delay:.1f} s", count=len(again), reason=reason, delay=delay)

    def _remove(self, entries: list[SpoolEntry]) -> None:
        """Remove published entries from the spool, all in one pool job."""
        deferToThreadPool(self.reactor, self.spool.threadpool, self._remove_blocking,
                          entries).addBoth(self._removed, entries)

    def _remove_blocking(self, entries: list[SpoolEntry]) -> None:
        failed = None
        for entry in entries:
            try:
                self.spool.remove_blocking(entry)
            except OSError as error:
                failed = error  # the others are removed all the same
        if failed is not None:
            raise failed

    def _removed(self, result: object, entries: list[SpoolEntry]) -> None:
        self._in_flight -= len(entries)
        if isinstance(result, Failure):
            self.log.failure("{count} crashes published, but a spool entry remains (its id is "
                             "published again at the next start)", result, count=len(entries))
        self._gauge()
        if not self.backlog():
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def _gauge(self) -> None:
        self.metrics.gauge(metricnames.PUBLISH_QUEUE_SIZE, self.backlog())
