"""
Work handed to the thread pool: blocking calls gathered into jobs
(``PoolBatches``), and waiting until nothing is in flight (``Idle``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import attr
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

BATCH = 16  # calls in one job at most


class Idle:
    """Deferreds of "once nothing is in flight", handed out to be fired together."""

    def __init__(self) -> None:
        self._waiting: list[defer.Deferred[None]] = []

    def wait(self, busy: bool) -> defer.Deferred[None]:
        """Fired already unless ``busy``; else it waits for the next ``take``."""
        if not busy:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(waiter)
        return waiter

    def take(self) -> list[defer.Deferred[None]]:
        """The waiting Deferreds, for the caller to fire (now, or on the next turn)."""
        waiting, self._waiting = self._waiting, []
        return waiting


T = TypeVar("T")
R = TypeVar("R")


@attr.s
class PoolBatches(Generic[T, R]):
    """
    Calls of the blocking ``call``, one item each, gathered into thread-pool
    jobs: the items submitted while a job runs go together in the next one,
    up to ``size`` a job, one job at a time. Each item's Deferred fires with
    its own result or error. What a thread hand-off costs (about 0.2 ms of
    CPU on the reactor and in the pool) is then paid once for many items.
    """

    call: Callable[[T], R] = attr.ib()
    reactor: IReactorFromThreads = attr.ib()
    threadpool: ThreadPool = attr.ib()
    size: int = attr.ib(default=BATCH)

    def __attrs_post_init__(self) -> None:
        self._waiting: list[tuple[T, defer.Deferred[R]]] = []
        self._running = False
        self._idle = Idle()
        self.jobs = 0  # jobs run, for tests and benchmarks

    def submit(self, item: T) -> defer.Deferred[R]:
        """A Deferred of ``call(item)``, run in a pool job with other items."""
        d: defer.Deferred[R] = defer.Deferred()
        self._waiting.append((item, d))
        if not self._running:
            self._next()
        return d

    def idle(self) -> defer.Deferred[None]:
        """A Deferred that fires once no job runs and none waits."""
        return self._idle.wait(self._running)

    def _next(self) -> None:
        batch, self._waiting = self._waiting[:self.size], self._waiting[self.size:]
        if not batch:
            self._running = False
            for d in self._idle.take():
                d.callback(None)
            return
        self._running = True
        self.jobs += 1
        job = deferToThreadPool(self.reactor, self.threadpool, self._run,
                                [item for item, _ in batch])
        job.addBoth(self._ran, batch)

    def _run(self, items: Sequence[T]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        for item in items:
            try:
                results.append((True, self.call(item)))
            except Exception:
                results.append((False, Failure()))
        return results

    def _ran(self, results: list[tuple[bool, Any]] | Failure,
             batch: list[tuple[T, defer.Deferred[R]]]) -> None:
        if isinstance(results, Failure):  # the pool did not run it
            results = [(False, results)] * len(batch)
        for (_, d), (succeeded, value) in zip(batch, results, strict=True):
            if d.called:
                continue  # cancelled meanwhile
            if succeeded:
                d.callback(value)
            else:
                d.errback(value)
        self._next()
