"""
Per-minute figures of one collector process, for the console's node page.

With the console on (``CONSOLE_PORT``), each serving process keeps, in
memory, a ring of the last ``MINUTES`` minutes: crashes by product, version
and throttle result, refusals by reason, answer times as a histogram,
crashes stored and ids published. It learns them as a metrics backend (the
collector's metrics already say all of it but product and version) and from
one call of the ``/submit`` handler per crash (``crash``); each costs a few
dict increments. A worker writes the ring into its shard's status file
(``antenna_tw/workers/shardstatus.py``) about once a second; the console
merges the workers' rings (``merge``). Nothing here blocks or does I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attr
from markus.backends import BackendBase
from markus.main import MetricsRecord
from twisted.internet.interfaces import IReactorTime

from antenna_tw import metricnames

MINUTES = 60
# Upper bounds, in ms, of the answer-time buckets: 0.1 ms to about 70 s,
# 25 % apart (a percentile is read as its bucket's upper bound).
BOUNDS_MS: tuple[float, ...] = tuple(round(0.1 * 1.25 ** index, 4) for index in range(61))
# Distinct keys one minute may hold per table: product and version come
# from clients, so a flood of made-up names cannot grow memory.
MAX_KEYS = 64
OTHER = "(other)"
MAX_NAME = 64  # characters kept of a product or version
SEP = "\t"  # between product, version and result in a crash key


def _new_histogram() -> list[int]:
    return [0] * (len(BOUNDS_MS) + 1)


@attr.s(slots=True)
class Minute:
    """What one process saw in one minute (``start``: its first second, since the epoch)."""

    start: int = attr.ib()
    crashes: dict[str, int] = attr.ib(factory=dict)  # "product\tversion\tRESULT" -> n
    refused: dict[str, int] = attr.ib(factory=dict)  # reason -> n
    latency: list[int] = attr.ib(factory=_new_histogram)  # per BOUNDS_MS bucket
    stored: int = attr.ib(default=0)
    published: int = attr.ib(default=0)

    def to_json(self) -> dict[str, Any]:
        """As written in the status file (the histogram sparse)."""
        return {"start": self.start, "crashes": dict(self.crashes), "refused": dict(self.refused),
                "latency": {str(i): n for i, n in enumerate(self.latency) if n},
                "stored": self.stored, "published": self.published}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Minute:
        """Read back ``to_json``; ValueError/TypeError/KeyError on what is not one."""
        latency = _new_histogram()
        for index, count in dict(value.get("latency", {})).items():
            latency[int(index)] += int(count)
        return cls(int(value["start"]), {str(k): int(v) for k, v in value["crashes"].items()},
                   {str(k): int(v) for k, v in value["refused"].items()}, latency,
                   int(value.get("stored", 0)), int(value.get("published", 0)))

    def add(self, other: Minute) -> None:
        """Add ``other``'s counts to this minute's (no key limit: the sum of bounded tables)."""
        for key, count in other.crashes.items():
            self.crashes[key] = self.crashes.get(key, 0) + count
        for key, count in other.refused.items():
            self.refused[key] = self.refused.get(key, 0) + count
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]
        self.stored += other.stored
        self.published += other.published


def _bump(table: dict[str, int], key: str, value: int = 1) -> None:
    if key not in table and len(table) >= MAX_KEYS:
        key = OTHER
    table[key] = table.get(key, 0) + value


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        return "(none)"
    return value[:MAX_NAME].replace(SEP, " ")


class Figures(BackendBase):
    """
    The ring of one process. A markus backend (``Metrics`` hands it every
    metric record) plus ``crash`` for product and version.
    """

    def __init__(self, clock: IReactorTime, minutes: int = MINUTES) -> None:
        super().__init__({}, [])
        self.clock = clock
        self.minutes = minutes
        self._ring: list[Minute] = []
        #: Bumped by every count: a status writer skips a write when it has not moved.
        self.version = 0

    def _minute(self) -> Minute:
        start = int(self.clock.seconds() // 60) * 60
        ring = self._ring
        if ring and ring[-1].start == start:
            return ring[-1]
        minute = Minute(start)
        ring.append(minute)
        if len(ring) > self.minutes:
            del ring[0]
        return minute

    def crash(self, product: object, version: object, result: str) -> None:
        """A crash throttled to ``result`` (``ACCEPT``...) and answered so (not busy)."""
        self.version += 1
        _bump(self._minute().crashes, f"{_name(product)}{SEP}{_name(version)}{SEP}{result}")

    def emit(self, record: MetricsRecord) -> None:
        """Count the metric records the node page shows; the others are ignored."""
        key = record.key
        if key == metricnames.ON_POST_TIME:
            histogram = self._minute().latency
            histogram[bisect.bisect_left(BOUNDS_MS, record.value)] += 1
        elif key == metricnames.MALFORMED:
            reason = next((tag.partition(":")[2] for tag in record.tags or ()
                           if tag.startswith("reason:")), "unknown")
            _bump(self._minute().refused, reason)
        elif key == metricnames.BUSY:
            _bump(self._minute().refused, "busy")
        elif key == metricnames.SAVE_CRASH_COUNT:
            self._minute().stored += int(record.value)
        elif key == metricnames.PUBLISH_CRASH_COUNT:
            self._minute().published += int(record.value)
        else:
            return
        self.version += 1

    def snapshot(self) -> list[dict[str, Any]]:
        """The ring as JSON values, oldest first."""
        return [minute.to_json() for minute in self._ring]

    def ring(self) -> list[Minute]:
        """The ring's minutes, oldest first (copies)."""
        return [Minute.from_json(minute.to_json()) for minute in self._ring]


def merge(rings: Iterable[Sequence[Minute]], now: float,
          minutes: int = MINUTES) -> list[Minute]:
    """
    The node's last ``minutes`` minutes up to ``now``, each the sum of the
    processes' rings (a minute nobody saw is all zeros), oldest first.
    """
    last = int(now // 60) * 60
    first = last - (minutes - 1) * 60
    merged = {start: Minute(start) for start in range(first, last + 60, 60)}
    for ring in rings:
        for minute in ring:
            if minute.start in merged:
                merged[minute.start].add(minute)
    return [merged[start] for start in sorted(merged)]


def percentile(histogram: Sequence[int], fraction: float) -> float | None:
    """The ``fraction`` (0.5, 0.99) percentile of a BOUNDS_MS histogram, in ms; None if empty."""
    total = sum(histogram)
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank and count:
            return BOUNDS_MS[index] if index < len(BOUNDS_MS) else float("inf")
    return BOUNDS_MS[-1]


def crash_key(key: str) -> tuple[str, str, str]:
    """``(product, version, result)`` of a ``Minute.crashes`` key."""
    product, _, rest = key.partition(SEP)
    version, _, result = rest.partition(SEP)
    return product, version, result or OTHER
