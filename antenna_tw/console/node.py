"""
What the console knows of the node's serving processes (``INodeSource``),
and the node page's figures built from it (``node_status``).

With ``--workers N`` the supervising parent serves the console and reads
each worker's shard: its status file (figures, retrying, publish queue) and
its spool files (``antenna_tw/workers/shardstatus.py``, ``ConsoleShards``).
With ``--workers 0`` the one process reads its own memory (``LocalNode``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attr
from twisted.internet import defer
from zope.interface import Interface, implementer

from antenna_tw.console.figures import Figures, Minute, crash_key, merge, percentile


@attr.s(frozen=True)
class ProcessReading:
    """One serving process, as the console reads it."""

    name: str = attr.ib()  # its spool shard's name ("worker-0"), or "collector"
    pid: int | None = attr.ib()
    running: bool = attr.ib()
    queued: int = attr.ib()  # crashes in its spool not yet stored
    oldest_age: float = attr.ib()  # seconds, of the oldest of them
    spool_bytes: int = attr.ib()
    retrying: int = attr.ib()  # crashes whose last save failed
    minutes: Sequence[Minute] = attr.ib(factory=list)
    # Its publish queue: publisher, backlog, oldest_age, failures_in_a_row; None without one.
    publish: dict[str, Any] | None = attr.ib(default=None)


class INodeSource(Interface):
    """The node's serving processes, for the console."""

    def read(now: float) -> defer.Deferred[list[ProcessReading]]:
        """Each process's reading at ``now`` (disk reads in a thread pool)."""

    def spool_directories() -> list[str]:
        """The spool directories of the node (one per worker, or the one)."""


@implementer(INodeSource)
@attr.s
class LocalNode:
    """The console of a single process (``--workers 0``): its own memory."""

    figures: Figures = attr.ib()
    spool_directory: str = attr.ib()
    # () -> (queued, oldest age, spool bytes, retrying), read on the reactor thread
    spool_state: Callable[[], tuple[int, float, int, int]] = attr.ib()
    publish_state: Callable[[], dict[str, Any] | None] = attr.ib(default=lambda: None)
    pid: int | None = attr.ib(default=None)

    def read(self, now: float) -> defer.Deferred[list[ProcessReading]]:
        """This process's reading (no disk read)."""
        queued, oldest, size, retrying = self.spool_state()
        return defer.succeed([ProcessReading(
            "collector", self.pid, True, queued, oldest, size, retrying,
            self.figures.ring(), self.publish_state())])

    def spool_directories(self) -> list[str]:
        """The one spool directory."""
        return [self.spool_directory]


def publish_state(queue: Any) -> dict[str, Any] | None:
    """What the console shows of a PublishQueue (None: nothing is published)."""
    if queue is None:
        return None
    return {"publisher": queue.publisher.name, "backlog": queue.backlog(),
            "oldest_age": round(queue.oldest_age(), 3),
            "failures_in_a_row": queue.failures_in_a_row()}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def node_status(readings: Sequence[ProcessReading], now: float,
                storage: dict[str, Any]) -> dict[str, Any]:
    """
    The node page's figures (also ``/api/status``): the node's minutes (every
    process summed), the last full minute's and the hour's totals, answer
    time percentiles, the spool, storage and publisher health, a row per process.
    """
    minutes = merge([reading.minutes for reading in readings], now)
    series = []
    for minute in minutes:
        results: dict[str, int] = {}
        for key, count in minute.crashes.items():
            result = crash_key(key)[2]
            results[result] = results.get(result, 0) + count
        accepted = sum(n for result, n in results.items() if result != "REJECT")
        refused = dict(minute.refused)
        if results.get("REJECT"):
            refused["throttle_reject"] = results["REJECT"]
        series.append({
            "start": minute.start, "accepted": accepted, "refused": sum(refused.values()),
            "refused_by_reason": refused, "results": results,
            "stored": minute.stored, "published": minute.published,
            "p50_ms": _rounded(percentile(minute.latency, 0.5)),
            "p99_ms": _rounded(percentile(minute.latency, 0.99)),
        })
    hour = Minute(0)
    for minute in minutes:
        hour.add(minute)
    by_product: dict[str, dict[str, int]] = {}
    for key, count in hour.crashes.items():
        product, version, result = crash_key(key)
        row = by_product.setdefault(f"{product} {version}", {})
        row[result] = row.get(result, 0) + count
    publishers = [r.publish for r in readings if r.publish is not None]
    publisher = None
    if publishers:
        failing = max(p["failures_in_a_row"] for p in publishers)
        publisher = {"name": publishers[0]["publisher"],
                     "backlog": sum(p["backlog"] for p in publishers),
                     "oldest_age": max(p["oldest_age"] for p in publishers),
                     "failures_in_a_row": failing, "healthy": failing == 0}
    retrying = sum(r.retrying for r in readings)
    return {
        "now": round(now, 3),
        "minutes": series,
        "hour": {
            "accepted": sum(m["accepted"] for m in series),
            "refused": sum(m["refused"] for m in series),
            "refused_by_reason": _sum_tables(m["refused_by_reason"] for m in series),
            "by_product_version": by_product,
            "stored": hour.stored, "published": hour.published,
            "p50_ms": _rounded(percentile(hour.latency, 0.5)),
            "p99_ms": _rounded(percentile(hour.latency, 0.99)),
        },
        "spool": {"queued": sum(r.queued for r in readings),
                  "oldest_age": round(max((r.oldest_age for r in readings), default=0.0), 3),
                  "bytes": sum(r.spool_bytes for r in readings), "retrying": retrying},
        "storage": dict(storage, retrying=retrying),
        "publisher": publisher,
        "processes": [{
            "name": r.name, "pid": r.pid, "running": r.running, "queued": r.queued,
            "oldest_age": round(r.oldest_age, 3), "spool_bytes": r.spool_bytes,
            "retrying": r.retrying,
            "accepted_last_hour": sum(n for m in r.minutes for k, n in m.crashes.items()
                                      if crash_key(k)[2] != "REJECT" and m.start > now - 3600),
        } for r in readings],
    }


def _sum_tables(tables: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for table in tables:
        for key, count in table.items():
            total[key] = total.get(key, 0) + count
    return total
