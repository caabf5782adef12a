"""
Health and operations endpoints (SPEC.md section 6): ``/__lbheartbeat__``,
``/__heartbeat__``, ``/__version__`` and ``/__broken__``.
"""

from __future__ import annotations

import json
import os

import attr
from twisted.internet.threads import deferToThreadPool

from antenna_tw.intake import write_answer
from antenna_tw.logs import Logger
from antenna_tw.spool import waiting_in

JSON = b"application/json"


def json_answer(request, code, value):
    return write_answer(request, code, json.dumps(value, sort_keys=True).encode("utf-8"), JSON)


@attr.s
class HealthHandler:
    """Answers the load balancer, the monitors and the deploy tooling."""

    storage = attr.ib()
    spool = attr.ib()
    mover = attr.ib()
    backpressure = attr.ib()
    metrics = attr.ib()
    reactor = attr.ib()
    threadpool = attr.ib()
    basedir = attr.ib()
    max_age = attr.ib()
    # With --workers: the other workers' spool shards, so that any worker's
    # heartbeat tells about every crash waiting on this node.
    sibling_spools = attr.ib(default=(), converter=tuple)
    log = Logger(namespace="antenna.health")

    def add_routes(self, app):
        app.route("/__lbheartbeat__", methods=["GET"])(self.lbheartbeat)
        app.route("/__heartbeat__", methods=["GET"])(self.heartbeat)
        app.route("/__version__", methods=["GET"])(self.version)
        app.route("/__broken__", methods=["GET"])(self.broken)

    def lbheartbeat(self, request):
        self.metrics.incr("health.lbheartbeat.count")
        return write_answer(request, 200, b"", JSON)

    async def heartbeat(self, request):
        self.metrics.incr("health.heartbeat.count")
        errors = []
        for message in await self.storage.check_health():
            errors.append({"name": "storage", "msg": message})
        unwritable = await self.spool.check_writable()
        if unwritable:
            errors.append({"name": "spool", "msg": unwritable})
        free = self.backpressure.free_bytes()
        if free < self.backpressure.min_free_bytes:
            errors.append({"name": "spool", "msg": f"only {free} bytes free under the spool"})
        used = self.backpressure.used_bytes()
        if used > self.backpressure.max_bytes:
            errors.append({"name": "spool", "msg": "spool is over SPOOL_MAX_BYTES"})
        queued, oldest = self.mover.queue_length(), self.mover.oldest_age()
        if self.sibling_spools:
            others = await deferToThreadPool(self.reactor, self.threadpool,
                                             self._siblings_waiting, self.reactor.seconds())
            queued += sum(count for count, _ in others)
            oldest = max([oldest] + [age for _, age in others])
        if oldest > self.max_age:
            errors.append({"name": "crashmover",
                           "msg": f"oldest unsaved crash is {oldest:.0f} s old"})
        info = {
            "queue_length": queued,
            "retrying": self.mover.retrying(),
            "oldest_age_seconds": round(oldest, 3),
            "spool_bytes": used,
            "spool_max_bytes": self.backpressure.max_bytes,
            "spool_free_bytes": free,
            "storage": self.storage.name,
        }
        self.metrics.gauge("breakpad_resource.save_queue_size", self.mover.queue_length())
        return json_answer(request, 503 if errors else 200, {"errors": errors, "info": info})

    def _siblings_waiting(self, now):
        return [waiting_in(directory, now) for directory in self.sibling_spools]

    def _read_version(self):
        path = os.path.join(self.basedir, "version.json")
        try:
            with open(path, encoding="utf-8") as version_file:
                value = json.load(version_file)
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    async def version(self, request):
        self.metrics.incr("health.version.count")
        value = await deferToThreadPool(self.reactor, self.threadpool, self._read_version)
        if value is None:
            self.log.warn("no usable version.json in {basedir}", basedir=self.basedir)
            value = {}
        return json_answer(request, 200, value)

    def broken(self, request):
        self.metrics.incr("health.broken.count")
        raise RuntimeError("intentional exception from /__broken__")
