"""
Health and operations endpoints (docs/spool.rst, *Heartbeat*): ``/__lbheartbeat__``,
``/__heartbeat__``, ``/__version__`` and ``/__broken__``.

``/__heartbeat__`` answers within a second whatever storage, a publisher or
the disk does: what can hang (storage's and the publisher's checks, the
spool's write probe, reading the other shards) is a ``Probe`` of
``HealthChecks``, run in the background every ``REFRESH_INTERVAL`` seconds
from start-up and when a heartbeat finds its last result stale; a heartbeat
waits at most ``ANSWER_WAIT`` seconds for the checks it started, then
answers the last known state with its age. A check still running after
``CHECK_BOUND`` seconds counts as failing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attr
from klein import Klein
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from zope.interface import Interface

from antenna_tw import answers, metricnames
from antenna_tw.logs import Logger

if TYPE_CHECKING:
    from antenna_tw.publisher import ICrashPublisher
    from antenna_tw.storage import ICrashStorage


@attr.s(frozen=True, slots=True)
class ShardState:
    """What another spool shard of this node holds."""

    name: str = attr.ib()  # as the heartbeat's messages name it
    entries: int = attr.ib()  # crashes waiting
    oldest_age: float = attr.ib()  # seconds, 0.0 when none
    size: int = attr.ib()  # bytes its files take
    retrying: int = attr.ib()  # crashes whose last save failed


class IOtherShards(Interface):
    """
    The other spool shards of this node (the other processes sharing its
    port), whose crashes a heartbeat reports with its own. Each holds its
    share of SPOOL_MAX_BYTES.
    """

    def read(now: float) -> list[ShardState]:
        """Each other shard's state at ``now`` (blocking: called in a thread pool)."""


#: Seconds between background runs of every check.
REFRESH_INTERVAL = 5.0
#: Seconds after which a check that has not answered counts as failing.
CHECK_BOUND = 2.0
#: Seconds a heartbeat waits for the checks it started before answering.
ANSWER_WAIT = 0.5


def _failed(failure: Failure) -> list[str]:
    return [f"check failed: {failure.getErrorMessage() or type(failure.value).__name__}"]


@attr.s
class Probe:
    """
    One check: ``run()`` returns a Deferred of its value (for most, the
    list of error strings); one run at a time. A value younger than ``ttl``
    seconds is not checked again at a heartbeat's request. A failed run's
    value is ``on_failure(failure)``. ``value`` is None until a run ends.
    """

    name: str = attr.ib()
    run: Callable[[], Deferred[Any]] = attr.ib()
    clock: IReactorTime = attr.ib()
    ttl: float = attr.ib(default=0.0)
    on_failure: Callable[[Failure], Any] = attr.ib(default=_failed)
    value: Any = attr.ib(default=None, init=False)
    checked_at: float | None = attr.ib(default=None, init=False)
    started_at: float | None = attr.ib(default=None, init=False)
    _waiters: list[Deferred[None]] | None = attr.ib(default=None, init=False, repr=False)

    def stale(self) -> bool:
        """True when there is no value yet, or it is at least ``ttl`` s old."""
        return self.checked_at is None or self.clock.seconds() - self.checked_at >= self.ttl

    def running_for(self) -> float | None:
        """Seconds the running check has taken so far; None when none runs."""
        return None if self.started_at is None else self.clock.seconds() - self.started_at

    def age(self) -> float | None:
        """Seconds since the last run ended; None before the first one ends."""
        return None if self.checked_at is None else self.clock.seconds() - self.checked_at

    def refresh(self) -> Deferred[None]:
        """Start a run unless one is under way; a Deferred that fires when it ends."""
        waiter: Deferred[None] = Deferred()
        if self._waiters is not None:
            self._waiters.append(waiter)
            return waiter
        self._waiters = [waiter]
        self.started_at = self.clock.seconds()
        defer.maybeDeferred(self.run).addErrback(self.on_failure).addCallback(self._ended)
        return waiter

    def _ended(self, value: Any) -> None:
        self.value, self.checked_at, self.started_at = value, self.clock.seconds(), None
        waiters, self._waiters = self._waiters or [], None
        for waiter in waiters:
            waiter.callback(None)


@attr.s
class HealthChecks:
    """
    The probes of one heartbeat, refreshed every ``interval`` seconds from
    ``start()`` (the first run at once) until ``stop()``, and on demand by
    ``settle()``. One still running after ``bound`` seconds counts as failing.
    """

    clock: IReactorTime = attr.ib()
    probes: list[Probe] = attr.ib()
    interval: float = attr.ib(default=REFRESH_INTERVAL)
    bound: float = attr.ib(default=CHECK_BOUND)
    wait: float = attr.ib(default=ANSWER_WAIT)
    _timer: IDelayedCall | None = attr.ib(default=None, init=False, repr=False)

    def __getitem__(self, name: str) -> Probe:
        return next(probe for probe in self.probes if probe.name == name)

    def __contains__(self, name: str) -> bool:
        return any(probe.name == name for probe in self.probes)

    def start(self) -> None:
        """Run every check now, then every ``interval`` seconds."""
        for probe in self.probes:
            if probe.started_at is None:
                probe.refresh()
        self._timer = self.clock.callLater(self.interval, self.start)

    def stop(self) -> None:
        """No more background runs (one under way ends on its own)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def overdue(self, probe: Probe) -> bool:
        """True when ``probe``'s running check has taken longer than ``bound``."""
        running = probe.running_for()
        return running is not None and running > self.bound

    def settle(self) -> Deferred[None]:
        """
        Start the stale checks and fire when the running ones (not overdue)
        have ended, or after ``wait`` seconds, whichever is first.
        """
        waits = [probe.refresh() for probe in self.probes
                 if not self.overdue(probe) and (probe.stale() or probe.started_at is not None)]
        settled: Deferred[None] = Deferred()
        if not waits:
            settled.callback(None)
            return settled

        def fire(_: object = None) -> None:
            if not settled.called:
                if timer.active():
                    timer.cancel()
                settled.callback(None)

        timer = self.clock.callLater(self.wait, fire)
        defer.DeferredList(waits).addCallback(fire)
        return settled

    def late(self, name: str) -> list[str]:
        """One error if probe ``name``'s check has run longer than ``bound``, else none."""
        probe = self[name]
        if not self.overdue(probe):
            return []
        return [f"{name} check: no answer for {probe.running_for():.1f} s "
                f"(bound {self.bound:g} s)"]

    def errors(self, name: str) -> list[str]:
        """The last known errors of probe ``name`` (a list of them), and ``late``'s."""
        return list(self[name].value or []) + self.late(name)

    def ages(self) -> dict[str, dict[str, float | None]]:
        """For each probe, the age of its last result and how long its check has run."""
        return {probe.name: {"age_seconds": _rounded(probe.age()),
                             "running_seconds": _rounded(probe.running_for())}
                for probe in self.probes}


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def heartbeat_checks(clock: Any, storage: ICrashStorage, spool: Any, threadpool: Any,
                     other_shards: IOtherShards | None = None,
                     publisher: ICrashPublisher | None = None) -> HealthChecks:
    """
    The heartbeat's probes on ``clock`` (the reactor: time and threads):
    ``storage``, ``spool`` (a file can be written),
    ``shards`` (the other shards' states, with workers) and ``publisher``.
    Each backend's answer is reused for its ``health_ttl`` seconds.
    """
    def writable() -> Deferred[list[str]]:
        return spool.check_writable().addCallback(lambda problem: [problem] if problem else [])

    probes = [Probe("storage", storage.check_health, clock, storage.health_ttl),
              Probe("spool", writable, clock)]
    if other_shards is not None:
        shards = other_shards

        def read() -> Deferred[list[ShardState]]:
            return deferToThreadPool(clock, threadpool, shards.read, clock.seconds())

        probes.append(Probe("shards", read, clock, on_failure=lambda failure: None))
    if publisher is not None:
        probes.append(Probe("publisher", publisher.check_health, clock, publisher.health_ttl))
    return HealthChecks(clock, probes)


def _named(name: str, messages: Iterable[str]) -> list[dict[str, str]]:
    return [{"name": name, "msg": message} for message in messages]


def json_answer(request: IRequest, code: int, value: object) -> bytes:
    """Answer ``value`` as JSON with status ``code``."""
    return answers.write(request, answers.json_answer(code, value))


@attr.s
class HealthHandler:
    """Answers the load balancer, the monitors and the deploy tooling."""

    storage = attr.ib()
    spool = attr.ib()
    mover = attr.ib()
    admission = attr.ib()  # Admission
    metrics = attr.ib()
    reactor = attr.ib()
    threadpool = attr.ib()
    basedir = attr.ib()
    max_age = attr.ib()
    # IOtherShards: the node's other shards, so that any process's heartbeat
    # tells about every crash waiting on this node, the bytes they take and
    # how many are retrying. None: this process's spool is the node's.
    other_shards = attr.ib(default=None)
    # The PublishQueue of a collector that publishes crash ids, else None
    # (the heartbeat then says nothing of publishing).
    publish_queue = attr.ib(default=None)
    # What may hang, checked in the background; built from the above unless given.
    checks: HealthChecks = attr.ib(default=None, kw_only=True)
    log = Logger(namespace="antenna.health")

    def __attrs_post_init__(self) -> None:
        if self.checks is None:
            self.checks = heartbeat_checks(
                self.reactor, self.storage, self.spool, self.threadpool, self.other_shards,
                self.publish_queue.publisher if self.publish_queue is not None else None)

    def add_routes(self, app: Klein) -> None:
        """Route the health endpoints of ``app`` here."""
        app.route("/__lbheartbeat__", methods=["GET"])(self.lbheartbeat)
        app.route("/__heartbeat__", methods=["GET"])(self.heartbeat)
        app.route("/__version__", methods=["GET"])(self.version)
        app.route("/__broken__", methods=["GET"])(self.broken)

    def lbheartbeat(self, request: IRequest) -> bytes:
        """200, empty: the process answers."""
        self.metrics.incr(metricnames.HEALTH_LBHEARTBEAT_COUNT)
        return answers.write(request, answers.empty_json())

    async def heartbeat(self, request: IRequest) -> bytes:
        """
        200 or 503 with the errors found and the spool's figures, as JSON,
        within ``ANSWER_WAIT`` seconds: what is not checked by then is
        answered from the last check (``info.checks``: each one's age).
        """
        self.metrics.incr(metricnames.HEALTH_HEARTBEAT_COUNT)
        checks = self.checks
        await checks.settle()
        errors = _named("storage", checks.errors("storage"))
        errors += _named("spool", checks.errors("spool"))
        write_failure = self.admission.write_failure()
        if write_failure:
            errors.append({"name": "spool", "msg": write_failure})
        free = self.admission.free_bytes()
        if free < self.admission.min_free_bytes:
            errors.append({"name": "spool", "msg": f"only {free} bytes free under the spool"})
        mover = self.mover
        queued, oldest, retrying = mover.queue_length(), mover.oldest_age(), mover.retrying()
        # Bytes per shard: this process's from memory (writes in flight
        # included), the other shards' as their provider reads them.
        shards = [(os.path.basename(self.spool.directory), self.admission.used_bytes())]
        if "shards" in checks:
            if checks["shards"].checked_at is not None and checks["shards"].value is None:
                errors.append({"name": "spool", "msg": "the other shards could not be read"})
            errors += _named("spool", checks.late("shards"))
            for other in checks["shards"].value or ():
                queued += other.entries
                oldest = max(oldest, other.oldest_age)
                retrying += other.retrying
                shards.append((other.name, other.size))
        # SPOOL_MAX_BYTES is split evenly between the shards, and each process
        # answers busy past its share: the node's limit is the sum of the shares.
        share = self.admission.max_bytes
        for name, used in shards:
            if used > share:
                errors.append({"name": "spool", "msg": (
                    f"spool shard {name} is over its share of SPOOL_MAX_BYTES"
                    if self.other_shards is not None else "spool is over SPOOL_MAX_BYTES")})
        if oldest > self.max_age:
            errors.append({"name": "crashmover",
                           "msg": f"oldest unsaved crash is {oldest:.0f} s old"})
        info = {
            "queue_length": queued,
            "retrying": retrying,
            "oldest_age_seconds": round(oldest, 3),
            "spool_bytes": sum(used for _, used in shards),
            "spool_max_bytes": share * len(shards),
            "spool_free_bytes": free,
            "storage": self.storage.name,
        }
        self.metrics.gauge(metricnames.SAVE_QUEUE_SIZE, mover.queue_length())
        if self.publish_queue is not None:
            errors += self._publishing(info)
        info["checks"] = checks.ages()
        return json_answer(request, 503 if errors else 200, {"errors": errors, "info": info})

    def _publishing(self, info: dict[str, object]) -> list[dict[str, str]]:
        """The publisher's errors, and its backlog into ``info``."""
        queue = self.publish_queue
        errors = _named("publisher", self.checks.errors("publisher"))
        backlog, oldest = queue.backlog(), queue.oldest_age()
        if oldest > self.max_age:
            errors.append({"name": "publisher",
                           "msg": f"oldest unpublished crash is {oldest:.0f} s old"})
        info.update(publisher=queue.publisher.name, publish_queue_length=backlog,
                    publish_oldest_age_seconds=round(oldest, 3),
                    publish_failures_in_a_row=queue.failures_in_a_row())
        self.metrics.gauge(metricnames.PUBLISH_QUEUE_SIZE, backlog)
        return errors

    def _read_version(self):
        path = os.path.join(self.basedir, "version.json")
        try:
            with open(path, encoding="utf-8") as version_file:
                value = json.load(version_file)
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    async def version(self, request: IRequest) -> bytes:
        """The deploy's version.json, or {}."""
        self.metrics.incr(metricnames.HEALTH_VERSION_COUNT)
        value = await deferToThreadPool(self.reactor, self.threadpool, self._read_version)
        if value is None:
            self.log.warn("no usable version.json in {basedir}", basedir=self.basedir)
            value = {}
        return json_answer(request, 200, value)

    def broken(self, request: IRequest) -> bytes:
        """Raise, so that the unhandled-error path can be seen working."""
        self.metrics.incr(metricnames.HEALTH_BROKEN_COUNT)
        raise RuntimeError("intentional exception from /__broken__")
