"""The console's per-minute figures (console/figures.py) and the node page's sums (console/node.py)."""

import bisect
import json

from twisted.internet.task import Clock

from antenna_tw import metricnames
from antenna_tw.console.figures import (
    BOUNDS_MS,
    MAX_KEYS,
    MINUTES,
    OTHER,
    Figures,
    Minute,
    merge,
    percentile,
)
from antenna_tw.console.node import ProcessReading, node_status
from antenna_tw.metrics import Metrics


def figures_at(seconds):
    clock = Clock()
    clock.advance(seconds)
    figures = Figures(clock)
    return clock, figures, Metrics([figures], checked=True)


def test_counts_by_minute_from_metrics_and_crashes():
    clock, figures, metrics = figures_at(6000)
    figures.crash("Firefox", "140.0", "ACCEPT")
    figures.crash("Firefox", "140.0", "ACCEPT")
    figures.crash("Fenix", None, "DEFER")
    metrics.incr(metricnames.MALFORMED, tags=["reason:no_content_type"])
    metrics.incr(metricnames.BUSY)
    metrics.timing(metricnames.ON_POST_TIME, 3.0)
    metrics.incr(metricnames.SAVE_CRASH_COUNT)
    metrics.incr(metricnames.INCOMING_CRASH)  # not a figure: ignored
    clock.advance(60)
    figures.crash("Firefox", "141.0", "ACCEPT")
    first, second = figures.ring()
    assert (first.start, second.start) == (6000, 6060)
    assert first.crashes == {"Firefox\t140.0\tACCEPT": 2, "Fenix\t(none)\tDEFER": 1}
    assert first.refused == {"no_content_type": 1, "busy": 1}
    assert first.stored == 1 and sum(first.latency) == 1
    assert second.crashes == {"Firefox\t141.0\tACCEPT": 1}


def test_the_ring_keeps_an_hour():
    clock, figures, _ = figures_at(0)
    for _ in range(MINUTES + 5):
        figures.crash("P", "1", "ACCEPT")
        clock.advance(60)
    ring = figures.ring()
    assert len(ring) == MINUTES
    assert ring[-1].start == (MINUTES + 4) * 60


def test_client_names_cannot_grow_a_minute():
    _, figures, _ = figures_at(0)
    for number in range(MAX_KEYS * 3):
        figures.crash(f"product-{number}", "1" * 500, "ACCEPT")
    minute = figures.ring()[0]
    assert len(minute.crashes) == MAX_KEYS + 1
    assert minute.crashes[OTHER] == MAX_KEYS * 2
    assert all(len(key) < 200 for key in minute.crashes)


def test_the_version_moves_with_every_count():
    _, figures, metrics = figures_at(0)
    before = figures.version
    metrics.incr(metricnames.INCOMING_CRASH)
    assert figures.version == before
    metrics.incr(metricnames.BUSY)
    assert figures.version == before + 1


def test_minutes_survive_the_status_file():
    _, figures, metrics = figures_at(120)
    figures.crash("Firefox", "1", "ACCEPT")
    metrics.timing(metricnames.ON_POST_TIME, 0.05)
    metrics.timing(metricnames.ON_POST_TIME, 10 ** 9)  # past the last bound
    written = json.loads(json.dumps(figures.snapshot()))
    assert [Minute.from_json(value) for value in written] == figures.ring()


def test_percentiles_from_the_histogram():
    histogram = [0] * (len(BOUNDS_MS) + 1)
    assert percentile(histogram, 0.5) is None
    histogram[10] = 98
    histogram[40] = 2
    assert percentile(histogram, 0.5) == BOUNDS_MS[10]
    assert percentile(histogram, 0.99) == BOUNDS_MS[40]


def test_the_node_sums_its_workers():
    clock0, one, metrics0 = figures_at(3600)
    _, two, metrics1 = figures_at(3600)
    one.crash("Firefox", "140.0", "ACCEPT")
    two.crash("Firefox", "140.0", "ACCEPT")
    two.crash("Firefox", "140.0", "REJECT")
    metrics0.timing(metricnames.ON_POST_TIME, 1.0)
    metrics1.timing(metricnames.ON_POST_TIME, 1.0)
    merged = merge([one.ring(), two.ring()], 3600)
    assert len(merged) == MINUTES and merged[-1].start == 3600
    assert merged[-1].crashes == {"Firefox\t140.0\tACCEPT": 2, "Firefox\t140.0\tREJECT": 1}
    readings = [ProcessReading("worker-0", 10, True, 1, 2.0, 100, 0, one.ring()),
                ProcessReading("worker-1", 11, True, 2, 5.0, 200, 1, two.ring(),
                               {"publisher": "sqs", "backlog": 3, "oldest_age": 1.0,
                                "failures_in_a_row": 0})]
    status = node_status(readings, 3610, {"name": "fs", "errors": []})
    assert status["hour"]["accepted"] == 2
    assert status["hour"]["refused_by_reason"] == {"throttle_reject": 1}
    assert status["hour"]["by_product_version"] == {"Firefox 140.0": {"ACCEPT": 2, "REJECT": 1}}
    bucket = BOUNDS_MS[bisect.bisect_left(BOUNDS_MS, 1.0)]
    assert status["minutes"][-1]["p50_ms"] == status["hour"]["p99_ms"] == round(bucket, 2)
    assert status["spool"] == {"queued": 3, "oldest_age": 5.0, "bytes": 300, "retrying": 1}
    assert status["publisher"]["healthy"] and status["publisher"]["backlog"] == 3
    assert [p["accepted_last_hour"] for p in status["processes"]] == [1, 1]
