"""
The ``prometheus`` metrics backend and ``GET /metrics``.

Every metric of ``antenna_tw.metricnames`` becomes one ``prometheus_client``
metric, created when the backend is (so ``/metrics`` lists each one from
the start; a metric with labels shows once it has a sample):

- its name: ``antenna_`` then the registry's name with dots as underscores
  (``breakpad_resource.incoming_crash`` → ``antenna_breakpad_resource_incoming_crash``);
- ``incr``: a counter (exposed with ``_total``); ``gauge``: a gauge whose
  node value is the sum over the live processes (``livesum``); ``timing``:
  a histogram in seconds (name ending ``_seconds``; statsd's milliseconds
  divided by 1000); ``histogram``: a histogram of the value as given;
- its tags: labels, ``reason:bad_gzip`` → ``reason="bad_gzip"``.

Values live in ``prometheus_client``'s multi-process files
(``antenna_tw.prometheus``), so any process's ``/metrics`` answers for the
whole node, its workers added up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from klein import Klein
from markus.backends import BackendBase
from markus.main import MetricsRecord
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector
from twisted.internet.threads import deferToThreadPool
from twisted.web.iweb import IRequest
from zope.interface import implementer

from antenna_tw import answers, metricnames
from antenna_tw.metrics import IMetricsEndpoint
from antenna_tw.prometheus import directory_in_environment

PREFIX = "antenna_"
# Seconds: a request's handling (milliseconds) up to a crash's time to
# storage, retries included (minutes when storage is down).
TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0, 60.0, 300.0, 1800.0, float("inf"))


def prometheus_name(spec: metricnames.MetricSpec) -> str:
    """The Prometheus name of a registered metric (a counter's ``_total`` not included)."""
    name = PREFIX + spec.name.replace(".", "_")
    return name + "_seconds" if spec.type == "timing" else name


def _metric(spec: metricnames.MetricSpec) -> Any:
    # registry=None: the values are read back from the files, not from these objects.
    common: dict[str, Any] = {"labelnames": spec.tags, "registry": None}
    doc = spec.doc or spec.name
    name = prometheus_name(spec)
    if spec.type == "incr":
        return Counter(name, doc, **common)
    if spec.type == "gauge":
        return Gauge(name, doc, multiprocess_mode="livesum", **common)
    if spec.type == "timing":
        return Histogram(name, doc, buckets=TIME_BUCKETS, **common)
    return Histogram(name, doc, **common)


def _labels(tags: Iterable[str]) -> dict[str, str]:
    return {key: value for key, _, value in (tag.partition(":") for tag in tags)}


# How each markus stat type reaches its metric (timings: milliseconds to seconds).
_RECORD: dict[str, Callable[[Any, float], None]] = {
    "incr": lambda metric, value: metric.inc(value),
    "gauge": lambda metric, value: metric.set(value),
    "timing": lambda metric, value: metric.observe(value / 1000.0),
    "histogram": lambda metric, value: metric.observe(value),
}


@implementer(IMetricsEndpoint)
class PrometheusMetrics(BackendBase):
    """
    Counts each metric in this process's multi-process files and answers
    ``GET /metrics`` with the node's totals. A metric not in the registry
    is dropped (a checked ``Metrics`` refuses it before it gets here).
    """

    def __init__(self, options: Mapping[str, Any] | None = None,
                 filters: list[Any] | None = None) -> None:
        super().__init__(options, filters)
        self.directory = directory_in_environment()
        if values.ValueClass is values.MutexValue:
            raise ValueError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR "
                             "was set: its values would stay in this process")
        self.metrics = {spec.name: _metric(spec) for spec in metricnames.METRICS}
        # (name, tags) -> the labelled child: .labels() costs more than the count.
        self.children: dict[tuple[str, tuple[str, ...]], Any] = {}
        for spec in metricnames.METRICS:
            if not spec.tags:  # listed from the start, at zero
                self.children[spec.name, ()] = self.metrics[spec.name]

    def emit(self, record: MetricsRecord) -> None:
        """Count ``record`` in this process's files."""
        tags = tuple(record.tags)
        child = self.children.get((record.key, tags))
        if child is None:
            metric = self.metrics.get(record.key)
            if metric is None:
                return
            child = self.children[record.key, tags] = metric.labels(**_labels(tags))
        _RECORD[record.stat_type](child, record.value)

    def exposition(self) -> bytes:
        """The node's metrics in Prometheus's text format (blocking: it reads every file)."""
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)
        return generate_latest(registry)

    def add_routes(self, app: Klein, reactor: Any, threadpool: Any) -> None:
        """``GET /metrics``: the files are read in ``threadpool``."""
        async def metrics(request: IRequest) -> bytes:
            body = await deferToThreadPool(reactor, threadpool, self.exposition)
            return answers.write(request, answers.Answer(200, body,
                                                         CONTENT_TYPE_LATEST.encode("ascii")))

        app.route("/metrics", methods=["GET"])(metrics)
