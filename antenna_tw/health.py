"""
Health and operations endpoints (docs/spool.rst, *Heartbeat*): ``/__lbheartbeat__``,
``/__heartbeat__``, ``/__version__`` and ``/__broken__``.
"""

from __future__ import annotations

import json
import os

import attr
from klein import Klein
from twisted.internet.threads import deferToThreadPool
from twisted.web.iweb import IRequest
from zope.interface import Interface

from antenna_tw import answers, metricnames
from antenna_tw.logs import Logger


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
    log = Logger(namespace="antenna.health")

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
        """200 or 503 with the errors found and the spool's figures, as JSON."""
        self.metrics.incr(metricnames.HEALTH_HEARTBEAT_COUNT)
        errors = []
        for message in await self.storage.check_health():
            errors.append({"name": "storage", "msg": message})
        unwritable = await self.spool.check_writable()
        if unwritable:
            errors.append({"name": "spool", "msg": unwritable})
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
        if self.other_shards is not None:
            others = await deferToThreadPool(self.reactor, self.threadpool,
                                             self.other_shards.read, self.reactor.seconds())
            for other in others:
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
            errors += await self._publishing(info)
        return json_answer(request, 503 if errors else 200, {"errors": errors, "info": info})

    async def _publishing(self, info: dict[str, object]) -> list[dict[str, str]]:
        """The publisher's errors, and its backlog into ``info``."""
        queue = self.publish_queue
        errors = [{"name": "publisher", "msg": message}
                  for message in await queue.publisher.check_health()]
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
