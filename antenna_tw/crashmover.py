"""
The crash movers: cooperative workers that copy spooled crashes to storage.

Each worker takes the next spool entry, saves it with the storage backend and
only then removes it from the spool; with a crash publisher (``stored``), it
marks the entry stored instead and hands it to the publish queue, which
removes it once its id is published. A backend that stores spooled files in
a thread (``IFileCrashStorage``, the filesystem) gets whole moves, loading
entries, storing and removing them, several as one thread-pool job. Others
save on the reactor (S3): the intake hands each crash it spooled over in
memory, within ``handoff_bytes``, so it is saved without reading the spool
back; a crash past that budget, or found at start-up, is loaded in the pool.
Their loads and their removals (or stored markers) are gathered, several
crashes to a thread-pool job, and a mover goes on to its next crash while
its last one leaves the spool. Either way each crash's move ends in one
``Outcome``, settled on the reactor once its entry has left the spool.

A failed save goes back on the queue after a capped exponential backoff with
jitter; the waiting crashes sit in one time-ordered heap under one timer of
the injected reactor, so a long outage costs a few bytes per crash. When the
last ``outage_after`` saves all failed, storage looks down: saves then go one
at a time, each after a backoff of its own, so an outage is probed, not
hammered. Nothing is ever dropped, whatever the number of failures.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any, cast

import attr
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from antenna_tw import metricnames
from antenna_tw.backoff import Backoff
from antenna_tw.crash import Crash
from antenna_tw.logs import Logger
from antenna_tw.metrics import IMetrics
from antenna_tw.pooljobs import PoolBatches
from antenna_tw.spool import CorruptEntry, IReactorTimeAndThreads, Spool, SpoolEntry
from antenna_tw.storage import CrashDamaged, ICrashStorage, IFileCrashStorage

OUTAGE_AFTER = 5  # saves failed in a row, across crashes, before storage looks down
# Movers (CONCURRENT_CRASHMOVERS=0) for storage that stores files in a pool
# thread, and for storage that saves on the reactor (docs/performance.rst).
FILE_MOVERS = 2
REACTOR_MOVERS = 64
MOVE_BATCH = 16  # queued crashes moved in one thread-pool job
# How long a mover lets crashes gather before a thread-pool move when fewer
# than a batch are queued: under load one job then moves several crashes
# instead of one, each job costing thread hand-offs and GIL transfers.
BATCH_WAIT = 0.02


def default_movers(storage_class: type) -> int:
    """How many movers CONCURRENT_CRASHMOVERS=0 means for a storage class."""
    return FILE_MOVERS if IFileCrashStorage.implementedBy(storage_class) else REACTOR_MOVERS


class Outcome(enum.Enum):
    """How one crash's move ended."""

    STORED = "stored"  # stored and removed from the spool
    QUARANTINED = "quarantined"  # its spool entry was unusable: moved aside, never retried
    LOAD_FAILED = "load failed"  # the spool could not be read: retried
    SAVE_FAILED = "save failed"  # storage refused it: retried
    REMOVE_FAILED = "remove failed"  # stored, but its spool entry remains
    MARK_FAILED = "mark failed"  # stored, but its stored marker could not be written
    SKIPPED = "skipped"  # not tried: an earlier save in its batch failed; queued again


@attr.s(frozen=True, slots=True)
class Moved:
    """The outcome of one crash's move, with the error that caused it, if any."""

    outcome: Outcome = attr.ib()
    error: BaseException | Failure | None = attr.ib(default=None)


@attr.s(frozen=True, slots=True)
class MoveVerbs:
    """
    The four calls one move makes, blocking ones or ones returning
    Deferreds; ``finish`` marks the stored entry for the publisher, or
    removes it when there is none.
    """

    load: Callable[[SpoolEntry], Any] = attr.ib()
    quarantine: Callable[[SpoolEntry, str], Any] = attr.ib()
    save: Callable[[Any], Any] = attr.ib()
    finish: Callable[[SpoolEntry], Any] = attr.ib()


# What stop() fires with: (ended normally, None) for each worker loop.
Stopped = list[tuple[bool, None]]

STORED = Moved(Outcome.STORED)
SKIPPED = Moved(Outcome.SKIPPED)


@attr.s
class CrashMover:
    """
    ``workers`` loops moving crashes from ``spool`` to ``storage``.

    Crashes not yet stored are tracked by spool file name (unique even when a
    client sends the same crash id twice), in the order they were accepted.
    ``threadpool`` runs whole moves for an ``IFileCrashStorage`` backend;
    ``batch_wait`` is how long such a move waits for more crashes to join its
    batch when fewer than ``MOVE_BATCH`` are queued (0: it starts at once).
    ``stored``, when given, takes each stored crash's entry (the publish
    queue's ``add``): entries are then marked stored instead of removed, and
    entries found marked at start-up go to it without being stored again.
    ``handoff_bytes`` is how many bytes of crashes handed over in memory
    (``enqueue``'s ``crash``) a mover for storage that saves on the reactor
    may hold at once (CRASHMOVER_HANDOFF_BYTES; 0: every crash is read back).
    """

    spool: Spool = attr.ib()
    storage: ICrashStorage = attr.ib()
    reactor: IReactorTimeAndThreads = attr.ib()
    metrics: IMetrics = attr.ib()
    workers: int = attr.ib(default=2)
    backoff: Backoff = attr.ib(factory=Backoff)
    threadpool: ThreadPool | None = attr.ib(default=None)
    outage_after: int = attr.ib(default=OUTAGE_AFTER)
    batch_wait: float = attr.ib(default=0.0)
    stored: Callable[[SpoolEntry], None] | None = attr.ib(default=None)
    #: Seconds between two log lines of the same repeated failure (LOGGING_REPEAT_INTERVAL).
    repeat_interval: float = attr.ib(default=60.0)
    handoff_bytes: int = attr.ib(default=0)
    log = Logger(namespace="antenna.crashmover")

    def __attrs_post_init__(self) -> None:
        # A failing disk fails every entry alike: each kind logged (and sent
        # to Sentry) once per interval, with a count (the last ones at stop).
        self.repeats = self.log.repeats(self.reactor, self.repeat_interval)
        self._queue: defer.DeferredQueue[SpoolEntry] = defer.DeferredQueue()
        self._pending: OrderedDict[str, SpoolEntry] = OrderedDict()  # by file name, oldest first
        self._failures: dict[str, int] = {}  # spool file name -> failures in a row
        # heap of (due time, sequence, entry): failed, backing off
        self._waiting: list[tuple[float, int, SpoolEntry]] = []
        self._sequence = itertools.count()
        self._timer: IDelayedCall | None = None  # the one timer for the heap's earliest entry
        self._failed_in_a_row = 0  # saves failed in a row, across crashes
        self._probe = defer.DeferredLock()  # one save at a time while storage looks down
        self._loops: list[defer.Deferred[None]] = []
        self._stopping = False
        self._drained: list[defer.Deferred[None]] = []
        # Whole moves in the pool, or loads in the pool and saves on the reactor.
        self._files: IFileCrashStorage | None = None
        if self.threadpool is not None and IFileCrashStorage.providedBy(self.storage):
            self._files = IFileCrashStorage(self.storage)
        # Saves on the reactor: crashes held in memory by spool file name,
        # and the loads and removals (or markers) gathered into pool jobs.
        self._held: dict[str, Crash] = {}
        self._held_bytes = 0
        self.handed_over = 0  # crashes stored from memory, never read back
        # What a failed _finish_blocking makes of a stored crash's move.
        self._finish_failed = (Outcome.REMOVE_FAILED if self.stored is None
                               else Outcome.MARK_FAILED)
        self._loads: PoolBatches[SpoolEntry, Crash] | None = None
        self._finishes: PoolBatches[SpoolEntry, None] | None = None
        if self._files is None and self.threadpool is not None:
            self._loads = PoolBatches(self.spool.load_blocking, self.reactor, self.threadpool)
            self._finishes = PoolBatches(self._finish_blocking, self.reactor, self.threadpool)

    # -- what the rest of the collector sees --------------------------------

    def enqueue(self, entry: SpoolEntry, crash: Crash | None = None) -> None:
        """
        Queue a spooled crash for storage (one already stored: for
        publishing). ``crash``: the same crash in memory, as the intake
        spooled it; storage that saves on the reactor gets it without a
        read of the spool while ``handoff_bytes`` allows.
        """
        if entry.stored and self.stored is not None:
            self.stored(entry)
            return
        if (crash is not None and self._files is None and not entry.recovered
                and self._held_bytes + entry.size <= self.handoff_bytes):
            self._held[entry.filename] = crash
            self._held_bytes += entry.size
        self._pending[entry.filename] = entry
        self._queue.put(entry)
        self._gauge()

    def queue_length(self) -> int:
        """Crashes not yet stored: queued, being saved, or waiting to retry."""
        return len(self._pending)

    def oldest_age(self) -> float:
        """Seconds since the oldest unstored crash was accepted, 0 when none."""
        for entry in self._pending.values():
            return max(0.0, self.reactor.seconds() - entry.created)
        return 0.0

    def held_bytes(self) -> int:
        """Bytes of crashes held in memory for their save (at most ``handoff_bytes``)."""
        return self._held_bytes

    def retrying(self) -> int:
        """How many unstored crashes failed their last try."""
        return len(self._failures)

    def failures(self, entry: SpoolEntry) -> int:
        """How many times in a row saving ``entry`` has failed."""
        return self._failures.get(entry.filename, 0)

    def storage_looks_down(self) -> bool:
        """True while the last ``outage_after`` saves all failed."""
        return self._failed_in_a_row >= self.outage_after

    # -- running -----------------------------------------------------------

    def start(self) -> None:
        """Start the workers; queued entries start moving at once."""
        self._stopping = False
        self._loops = [defer.ensureDeferred(self._work()) for _ in range(self.workers)]

    def stop(self, timeout: float) -> defer.Deferred[Stopped]:
        """
        Let the workers drain the queue for up to ``timeout`` seconds, then
        stop them, giving up saves in flight; whatever is left stays in the
        spool for the next start. A Deferred that fires when all have stopped.
        """
        d: defer.Deferred[None] = defer.Deferred()
        if not self._pending:
            d.callback(None)
        else:
            self._drained.append(d)
        d.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda result, t: None)
        return d.addCallback(lambda _: self._halt())

    def _halt(self) -> defer.Deferred[Stopped]:
        self._stopping = True
        self._drained = []
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()  # idle ones stop waiting; busy ones give up their save
        self._held.clear()
        self._held_bytes = 0
        left = len(self._pending)
        if left:
            self.log.info("{count} crashes left in the spool for the next start", count=left)
        if self._finishes is not None:
            # Stored crashes leaving the spool: settled (and handed to the
            # publisher) before the stop goes on.
            loops.append(self._finishes.idle())
        return defer.DeferredList(loops, consumeErrors=True)

    async def _work(self) -> None:
        while not self._stopping:
            entry = await self._queue.get()
            if not self.storage_looks_down():
                if (self._files is not None and self.batch_wait
                        and len(self._queue.pending) < MOVE_BATCH - 1):
                    await task.deferLater(self.reactor, self.batch_wait)
                await self._move(self._batch(entry))
                continue
            await self._probe.acquire()
            try:
                if self.storage_looks_down():
                    await task.deferLater(self.reactor, self.backoff.delay(
                        self._failed_in_a_row - self.outage_after + 1))
                await self._move([entry])
            finally:
                self._probe.release()

    def _batch(self, entry: SpoolEntry) -> list[SpoolEntry]:
        """``entry`` and, for a thread-pool backend, more queued ones to move in the same job."""
        batch = [entry]
        if self._files is not None:
            queued = self._queue.pending
            while queued and len(batch) < MOVE_BATCH:
                batch.append(queued.pop(0))
        return batch

    async def _move(self, batch: list[SpoolEntry]) -> None:
        started = time.perf_counter()
        try:
            if self._files is not None and self.threadpool is not None:
                moves = await deferToThreadPool(
                    self.reactor, self.threadpool, self._move_files, self._files, batch)
            else:
                await self._move_on_reactor(batch[0], started)
                return
        except defer.CancelledError:
            return  # shutting down: entries stay spooled (a thread finishes what it started)
        milliseconds = (time.perf_counter() - started) * 1000
        for entry, moved in zip(batch, moves, strict=True):
            if moved.outcome is Outcome.SKIPPED:
                self._queue.put(entry)
            else:
                self._settle(entry, moved, milliseconds)

    def _settle(self, entry: SpoolEntry, moved: Moved, milliseconds: float) -> None:
        """Log, count and track the outcome of one crash's move."""
        outcome, error = moved.outcome, moved.error
        if outcome is Outcome.QUARANTINED:
            self.log.error("{crash_id}: spool entry unreadable, moved aside: {error}",
                           crash_id=entry.crash_id, error=str(error))
            self._done(entry)
            return
        if outcome is Outcome.LOAD_FAILED:
            # LOAD_FAILED and REMOVE_FAILED carry the Failure of the error.
            failure = cast(Failure, error)
            self.repeats.failure(_kind(outcome, failure), "{crash_id}: could not read spool entry",
                                 failure, crash_id=entry.crash_id)
            self._retry(entry)
            return
        if outcome is Outcome.SAVE_FAILED:
            self._failed_in_a_row += 1
            self.metrics.incr(metricnames.SAVE_CRASH_EXCEPTION_COUNT)
            self.log.warn("{crash_id}: save failed ({error}); will retry",
                          crash_id=entry.crash_id, error=_describe(error))
            self._retry(entry)
            return
        self._failed_in_a_row = 0
        if outcome is Outcome.REMOVE_FAILED:
            failure = cast(Failure, error)
            self.repeats.failure(_kind(outcome, failure),
                                 "{crash_id}: stored but its spool entry remains", failure,
                                 crash_id=entry.crash_id)
        if outcome is Outcome.MARK_FAILED:
            failure = cast(Failure, error)
            self.repeats.failure(_kind(outcome, failure),
                                 "{crash_id}: stored but not marked so (a restart before it is "
                                 "published stores it again)", failure, crash_id=entry.crash_id)
        self.metrics.timing(metricnames.CRASH_SAVE_TIME, milliseconds)
        self.metrics.incr(metricnames.SAVE_CRASH_COUNT)
        handling = max(0.0, self.reactor.seconds() - entry.created) * 1000
        self.metrics.timing(metricnames.CRASH_HANDLING_TIME, handling)
        self.log.info("{crash_id} saved", crash_id=entry.crash_id)
        self._done(entry)
        if self.stored is not None:
            self.stored(entry)

    def _finish_blocking(self, entry: SpoolEntry) -> None:
        """A stored crash's entry: marked for the publisher, or out of the spool. Blocking."""
        if self.stored is None:
            self.spool.remove_blocking(entry)
        else:
            self.spool.mark_stored_blocking(entry)

    def _move_files(self, storage: IFileCrashStorage, batch: list[SpoolEntry]) -> list[Moved]:
        """
        Whole moves in a pool thread, one Moved per entry; after a failed
        save the rest are SKIPPED (storage may be down: they go back on the
        queue).
        """
        moves: list[Moved] = []
        for entry in batch:
            if moves and moves[-1].outcome in (Outcome.SAVE_FAILED, Outcome.SKIPPED):
                moves.append(SKIPPED)
            else:
                moves.append(self._move_file(storage, entry))
        return moves

    def _move_file(self, storage: IFileCrashStorage, entry: SpoolEntry) -> Moved:
        spool = self.spool
        steps = self._move_steps(entry, MoveVerbs(
            spool.load_files_blocking, spool.quarantine_blocking, storage.save_spooled_blocking,
            self._finish_blocking))
        try:
            result = next(steps)
            while True:  # blocking calls: each result is sent straight back
                result = steps.send(result)
        except StopIteration as stopped:
            return cast(Moved, stopped.value)

    async def _move_on_reactor(self, entry: SpoolEntry, started: float) -> None:
        """
        The same steps for a backend that saves on the reactor
        (inlineCallbacks awaits each): the crash held in memory or loaded,
        saved, then let go of; its entry leaves the spool in a gathered
        pool job while the mover goes on, and the move settles then.
        """
        spool = self.spool
        finish: Callable[[SpoolEntry], defer.Deferred[None]]
        if self._finishes is not None:
            finish = self._finishes.submit
        else:
            finish = spool.remove if self.stored is None else spool.mark_stored
        try:
            moved = await defer.inlineCallbacks(self._save_steps)(entry, MoveVerbs(
                self._load, spool.quarantine, self.storage.save_crash, finish))
        finally:
            crash = self._held.pop(entry.filename, None)
            if crash is not None:
                self._held_bytes -= entry.size
        if moved is not None:
            self._settle(entry, moved, (time.perf_counter() - started) * 1000)
            return
        if crash is not None:
            self.handed_over += 1
        finished: defer.Deferred[Any] = finish(entry)
        finished.addCallbacks(lambda _: STORED,
                              lambda failure: Moved(self._finish_failed, failure))
        # The move's time runs to the removal, as in a pool job (CRASH_SAVE_TIME).
        finished.addCallback(lambda moved: self._settle(
            entry, moved, (time.perf_counter() - started) * 1000))

    def _load(self, entry: SpoolEntry) -> Crash | defer.Deferred[Crash]:
        """The crash held in memory for ``entry``, or a Deferred of it read from the spool."""
        crash = self._held.get(entry.filename)
        if crash is not None:
            return crash
        if self._loads is not None:
            return self._loads.submit(entry)
        return self.spool.load(entry)

    def _move_steps(self, entry: SpoolEntry,
                    verbs: MoveVerbs) -> Generator[Any, Any, Moved]:
        """A whole move in a pool thread (``_move_file``): saved, then finished."""
        moved = yield from self._save_steps(entry, verbs)
        if moved is not None:
            return moved
        # Stored: the entry is marked for the publisher, or it leaves the spool.
        try:
            yield verbs.finish(entry)
        except Exception:
            return Moved(self._finish_failed, Failure())
        return STORED

    def _save_steps(self, entry: SpoolEntry,
                    verbs: MoveVerbs) -> Generator[Any, Any, Moved | None]:
        """
        One crash's load and save, written once for both kinds of backend:
        each verb's result is yielded, a value in a pool thread
        (``_move_file``) or a Deferred, or a value, that inlineCallbacks
        waits for on the reactor (``_move_on_reactor``); an error is raised
        here either way. None once saved; else how the move ended.
        """
        try:
            crash = yield verbs.load(entry)
        except CorruptEntry as error:
            yield verbs.quarantine(entry, str(error))
            return Moved(Outcome.QUARANTINED, error)
        except defer.CancelledError:
            raise
        except Exception:
            return Moved(Outcome.LOAD_FAILED, Failure())
        try:
            yield verbs.save(crash)
        except CrashDamaged as error:
            yield verbs.quarantine(entry, str(error))
            return Moved(Outcome.QUARANTINED, error)
        except defer.CancelledError:
            raise
        except Exception as error:
            return Moved(Outcome.SAVE_FAILED, error)
        return None

    def _retry(self, entry: SpoolEntry) -> None:
        if self._stopping:
            return
        failures = self._failures.get(entry.filename, 0) + 1
        self._failures[entry.filename] = failures
        due = self.reactor.seconds() + self.backoff.delay(failures)
        heapq.heappush(self._waiting, (due, next(self._sequence), entry))
        self._schedule()

    def _schedule(self) -> None:
        """Keep the one timer set for the earliest waiting crash."""
        if not self._waiting or self._stopping:
            return
        due = self._waiting[0][0]
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= due:
                return
            self._timer.cancel()
        self._timer = self.reactor.callLater(max(0.0, due - self.reactor.seconds()),
                                             self._requeue_due)

    def _requeue_due(self) -> None:
        self._timer = None
        now = self.reactor.seconds()
        while self._waiting and self._waiting[0][0] <= now:
            _, _, entry = heapq.heappop(self._waiting)
            self._queue.put(entry)
        self._schedule()

    def _done(self, entry: SpoolEntry) -> None:
        self._pending.pop(entry.filename, None)
        self._failures.pop(entry.filename, None)
        self._gauge()
        if not self._pending:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def _gauge(self) -> None:
        self.metrics.gauge(metricnames.SAVE_QUEUE_SIZE, len(self._pending))


def _describe(error: BaseException | Failure | None) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]


def _kind(outcome: Outcome, failure: Failure) -> str:
    """The key under which failures alike are counted: the outcome, the error's type and errno."""
    error = failure.value
    number = getattr(error, "errno", None)
    return f"{outcome.value}: {type(error).__name__} {number if number is not None else ''}"
