"""
The composition root: builds every component from the Config and wires them.

Nothing else reads configuration; components get their collaborators here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from uuid import UUID

import attr
from klein import Klein
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from antenna_tw import answers
from antenna_tw.admission import Admission
from antenna_tw.backoff import Backoff
from antenna_tw.config import Config
from antenna_tw.console.figures import Figures
from antenna_tw.console.node import publish_state
from antenna_tw.crashmover import BATCH_WAIT, CrashMover, default_movers
from antenna_tw.health import HealthChecks, HealthHandler
from antenna_tw.intake.http import CrashSite
from antenna_tw.logs import LineBudget, Logger, Repeats
from antenna_tw.metrics import IMetrics, IMetricsEndpoint, build_metrics
from antenna_tw.publisher import (
    ICrashPublisher,
    PublisherUnavailable,
    check_publisher,
    is_noop,
    publisher_class,
)
from antenna_tw.publishqueue import PublishQueue
from antenna_tw.spool import Spool, SpoolEntry
from antenna_tw.startup import start_up_check
from antenna_tw.storage import (
    ICrashStorage,
    IFileCrashStorage,
    StorageUnavailable,
    check_storage,
    storage_class,
)
from antenna_tw.submit import SubmitHandler, SubmitResource, takes_body
from antenna_tw.throttler import RuleError, Throttler, build_throttler
from antenna_tw.workers import Worker


class StatusPublisher(Protocol):
    """What the collector needs of a worker's status publisher (``Worker.status_publisher``)."""

    def start(self) -> None: ...

    def stop(self) -> defer.Deferred[Any]: ...


class StartupError(Exception):
    """The collector cannot start; the message is one line for the operator."""


# How long past SHUTDOWN_TIMEOUT a stop may take to let go of storage and the
# publisher: a step that still has not finished is left behind, so the
# process exits in time whatever a backend does (docs/spool.rst, *Shutdown*).
STOP_GRACE = 1.0
# How long a client still sending when GRACEFUL_TIMEOUT ends has to read its
# 503 before its connection is aborted.
CUT_OFF_LINGER = 1.0


@attr.s(auto_attribs=True)
class Collector:
    """Every running part of one collector process."""

    config: Config
    # The running reactor: time, TCP and calls from threads (no one interface says all three).
    reactor: Any
    threadpool: ThreadPool
    metrics: IMetrics
    storage: ICrashStorage
    spool: Spool
    mover: CrashMover
    throttler: Throttler
    admission: Admission
    site: CrashSite
    # With --workers: publishes what the other workers' heartbeats cannot read from files.
    status: StatusPublisher | None = None
    # CRASHPUBLISH_CLASS's publisher (a no-op one for none), and the queue of
    # stored crashes whose ids it publishes (None: nothing is published).
    publisher: ICrashPublisher | None = None
    publish_queue: PublishQueue | None = None
    # With the console on (CONSOLE_PORT): this process's per-minute figures.
    figures: Figures | None = None
    # The heartbeat's background checks, run from start to stop.
    health_checks: HealthChecks | None = None
    # Repeated-failure lines held back with their counts: written out at stop.
    repeats: Sequence[Repeats] = ()
    log = Logger(namespace="antenna.app")

    def prepare(self, check: bool = True) -> list[SpoolEntry]:
        """
        Start-up checks that may block, run before the reactor: storage and
        the publisher must not be misconfigured (``check``; a worker skips
        it: its parent checked), the spool readable. Returns the spooled
        entries. Storage or a publisher that does not answer does not stop
        the start: crashes wait in the spool meanwhile.
        """
        if check:
            try:
                start_up_check(self.storage.verify, self.log)
                if self.publisher is not None:
                    start_up_check(self.publisher.verify, self.log)
            except (StorageUnavailable, PublisherUnavailable) as error:
                raise StartupError(str(error)) from None
        try:
            return self.spool.open()
        except OSError as error:
            raise StartupError(
                f"spool {self.spool.directory} is not usable: {error.strerror}") from None

    def start(self, entries: Sequence[SpoolEntry] = ()) -> None:
        """Start the thread pool and crash movers and re-queue spooled crashes."""
        self.threadpool.start()
        if self.health_checks is not None:
            self.health_checks.start()
        if self.publish_queue is not None:
            self.publish_queue.start()
        self.mover.start()
        if self.status is not None:
            self.status.start()
        for entry in entries:
            self.mover.enqueue(entry)
        if entries:
            self.log.info("re-queued {count} spooled crashes", count=len(entries))

    async def stop(self) -> None:
        """
        Stop for good within SHUTDOWN_TIMEOUT (the port already closed): let
        the requests in progress finish for up to GRACEFUL_TIMEOUT, each
        connection closing after its answer, and answer busy what is still
        arriving then; answer every later /submit busy, let spool writes in
        flight land (their clients get their crash ids), let the crash
        movers drain for the time left, then the publish queue, close the
        storage's and the publisher's connections, then stop the thread
        pool. Whatever is not stored, or stored but not published, stays in
        the spool for the next start.
        """
        spool = self.config.spool
        deadline = self.reactor.seconds() + spool.shutdown_timeout
        # No step may hold the process past this, whatever storage does.
        last = deadline + STOP_GRACE
        closed = self.site.drain()
        closed.addTimeout(min(spool.graceful_timeout, spool.shutdown_timeout), self.reactor,
                          onTimeoutCancel=lambda result, timeout: None)
        await closed
        cut_off = self.site.cut_off(
            min(CUT_OFF_LINGER, max(0.0, last - self.reactor.seconds())))
        self.admission.close()
        try:
            writes = self.spool.idle()
            writes.addTimeout(max(0.0, deadline - self.reactor.seconds()), self.reactor)
            try:
                await writes
            except defer.TimeoutError:
                self.log.warn("spool writes still in flight at the shutdown deadline")
            await self._by(self.mover.stop(max(0.0, deadline - self.reactor.seconds())),
                           last, "the crash movers")
            if self.publish_queue is not None:
                await self._by(
                    self.publish_queue.stop(max(0.0, deadline - self.reactor.seconds())),
                    last, "the publish queue")
            # S3 lets go of its pooled connections.
            await self._by(self.storage.close(), last, "closing the storage")
            if self.publisher is not None:
                await self._by(self.publisher.close(), last, "closing the publisher")
            await cut_off  # the clients answered busy have read it, or are cut off
        finally:
            if self.health_checks is not None:
                self.health_checks.stop()
            if self.status is not None:
                await self.status.stop()
            self.threadpool.stop()
            for repeats in self.repeats:
                repeats.flush()

    def _by(self, step: defer.Deferred[Any], last: float, what: str) -> defer.Deferred[None]:
        """
        ``step``'s outcome, or None at reactor time ``last`` if it has not
        finished by then: the stop goes on without it (it is not cancelled;
        what it did not store stays in the spool).
        """
        result: defer.Deferred[None] = defer.Deferred()

        def late() -> None:
            self.log.warn("{what} had not finished {grace:.0f} s after the shutdown deadline; "
                          "stopping without waiting for it", what=what, grace=STOP_GRACE)
            result.callback(None)

        timer = self.reactor.callLater(max(0.0, last - self.reactor.seconds()), late)

        def settle(outcome: object) -> None:
            if timer.active():
                timer.cancel()
            if result.called:
                return  # too late: the stop went on; a failure is dropped with it
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(None)

        step.addBoth(settle)
        return result


def _plain_error(answer: answers.Answer):  # klein's handler Protocol: mypy-zope rejects it
    def handler(request: IRequest, failure: Failure) -> bytes:
        return answers.write(request, answer)
    return handler


def build_collector(config: Config, reactor: Any, rng: random.Random | None = None,
                    make_uuid: Callable[[], UUID] | None = None,
                    worker: Worker | None = None) -> Collector:
    """
    Build a Collector from ``config``; StartupError for anything unusable.
    ``worker``: this process is one of ``--workers`` (``config`` already its
    own, ``Worker.configure``); the heartbeat then counts the other workers'
    shards too, and this worker publishes its own status in its shard for theirs.
    """
    spool_settings = config.spool
    try:
        kind = storage_class(config.storage.crashstorage_class)
    except (RuleError, ValueError) as error:
        raise StartupError(str(error)) from None
    movers = spool_settings.concurrent_crashmovers or default_movers(kind)
    # Movers that save on the reactor gather their spool work into a few
    # pool jobs; those that store in the pool need a thread each.
    threadpool = ThreadPool(
        minthreads=1,
        maxthreads=max(4, 2 * movers) if IFileCrashStorage.implementedBy(kind) else 4,
        name="antenna-io",
    )
    try:
        metrics = build_metrics(config.app)
        throttler = build_throttler(config.throttle, rng)
        storage = kind.from_settings(config.storage, reactor, threadpool, concurrency=movers)
        check_storage(storage)
        publisher = publisher_class(config.publish.crashpublish_class).from_settings(
            config.publish, config.storage, reactor, threadpool)
        check_publisher(publisher)
    except (RuleError, ValueError, StorageUnavailable, PublisherUnavailable) as error:
        raise StartupError(str(error)) from None
    # The console's figures: a metrics backend, and a count per crash in /submit.
    figures = Figures(reactor) if config.console.console_port else None
    if figures is not None:
        metrics.backends.append(figures)
    spool = Spool(spool_settings.spool_dir, reactor, threadpool, fsync=spool_settings.spool_fsync,
                  direct_io=spool_settings.spool_direct_io)
    publish_queue = None
    if not is_noop(publisher):
        # Publishing retries as saving does.
        publish_queue = PublishQueue(
            publisher, spool, reactor, metrics,
            backoff=Backoff(spool_settings.crashmover_retry_base_delay,
                            spool_settings.crashmover_retry_max_delay),
            accepted_only=config.publish.accepted_only)
    mover = CrashMover(spool, storage, reactor, metrics,
                       workers=movers,
                       backoff=Backoff(spool_settings.crashmover_retry_base_delay,
                                       spool_settings.crashmover_retry_max_delay),
                       threadpool=threadpool, batch_wait=BATCH_WAIT,
                       stored=publish_queue.add if publish_queue is not None else None,
                       repeat_interval=config.app.logging_repeat_interval,
                       handoff_bytes=spool_settings.crashmover_handoff_bytes)
    admission = Admission(spool, reactor, spool_settings.spool_max_bytes,
                          spool_settings.spool_min_free_bytes, config.intake.max_inflight_bytes)

    app = Klein()
    # One budget of refusal lines for the process, /submit's and intake's.
    refusals = LineBudget(reactor, config.app.logging_refusals_per_second,
                          config.app.logging_repeat_interval)
    submit = SubmitHandler(throttler, spool, mover, admission, metrics, config.intake,
                           make_uuid=make_uuid,
                           repeat_interval=config.app.logging_repeat_interval, figures=figures,
                           refusals=refusals)
    submit.add_routes(app)
    health = HealthHandler(storage, spool, mover, admission, metrics, reactor, threadpool,
                           config.app.basedir, spool_settings.spool_max_age,
                           worker.other_shards() if worker is not None else None,
                           publish_queue)
    health.add_routes(app)
    for backend in metrics.backends:  # Prometheus's GET /metrics
        if IMetricsEndpoint.providedBy(backend):
            backend.add_routes(app, reactor, threadpool)
    app.handle_errors(NotFound)(_plain_error(answers.NOT_FOUND))
    app.handle_errors(MethodNotAllowed)(_plain_error(answers.METHOD_NOT_ALLOWED))

    root = SubmitResource(submit, app.resource())
    site = CrashSite(root, limits=config.intake, metrics=metrics, clock=reactor,
                     admission=admission, takes_body=takes_body, refusals=refusals)
    status = (worker.status_publisher(
        spool.directory, mover.retrying, reactor, threadpool, figures,
        (lambda: {"publish": publish_state(publish_queue)}) if figures is not None else None)
        if worker is not None else None)
    return Collector(config, reactor, threadpool, metrics, storage, spool, mover,
                     throttler, admission, site, status, publisher, publish_queue, figures,
                     health.checks, (mover.repeats, submit.repeats, refusals.repeats))
