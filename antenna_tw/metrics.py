"""
Metrics under Antenna's statsd names, sent by markus backends (Mozilla's
metrics library, which Antenna uses). The names, types and tags are listed
once, in ``antenna_tw.metricnames``; docs/metrics.rst is rendered from it.

``METRICS_CLASS`` is a comma list of backends: ``statsd`` sends DogStatsd
packets over UDP to STATSD_HOST:STATSD_PORT under STATSD_NAMESPACE (what
markus's Datadog backend sends, through a client that never blocks),
``prometheus`` counts them for ``GET /metrics`` with ``prometheus_client`` in its
multi-process mode (``antenna_tw.prometheus``), ``logging`` writes one debug log line per metric
(``METRICS|<type>|<name>|<value>|<tags>``, as Antenna's LoggingMetrics),
``none`` drops them. Antenna's and markus's class paths are accepted too.

markus keeps its configured backends in a module global
(``markus.configure``); this module does not use it: each ``Metrics`` holds
its own backend instances and hands them markus ``MetricsRecord``s, so two
collectors in one process (tests) never share metrics. What is left global
is inside the datadog package (its default client, its fork hooks).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attr
from markus.backends import BackendBase
from markus.main import MetricsRecord
from zope.interface import Interface, implementer

from antenna_tw import metricnames
from antenna_tw.config import AppSettings, metrics_class_names
from antenna_tw.logs import Logger

Tags = Iterable[str] | None
Options = Mapping[str, Any]


class IMetrics(Interface):
    """What the collector reports metrics through (``Metrics``; tests' fakes)."""

    def incr(name: str, value: float = 1, tags: Tags = None) -> None:
        """Count something."""

    def gauge(name: str, value: float, tags: Tags = None) -> None:
        """Report a level."""

    def timing(name: str, milliseconds: float, tags: Tags = None) -> None:
        """Report a duration."""

    def histogram(name: str, value: float, tags: Tags = None) -> None:
        """Report a distribution sample."""


@implementer(IMetrics)
@attr.s
class Metrics:
    """
    Hands every metric, as a markus MetricsRecord, to each of its backends.
    ``checked`` (tests): a metric not in ``antenna_tw.metricnames`` as
    registered (name, type, tag names) raises UnregisteredMetric.
    """

    backends: list[BackendBase] = attr.ib(factory=list)
    checked: bool = attr.ib(default=False, kw_only=True)

    def _emit(self, stat_type: str, name: str, value: float, tags: Tags) -> None:
        if self.checked:
            metricnames.check(stat_type, name, tags)
        if not self.backends:
            return
        record = MetricsRecord(stat_type, name, value, list(tags or ()))
        for backend in self.backends:
            backend.emit_to_backend(record)

    def incr(self, name: str, value: float = 1, tags: Tags = None) -> None:
        """Count something."""
        self._emit("incr", name, value, tags)

    def gauge(self, name: str, value: float, tags: Tags = None) -> None:
        """Report a level."""
        self._emit("gauge", name, value, tags)

    def timing(self, name: str, milliseconds: float, tags: Tags = None) -> None:
        """Report a duration."""
        self._emit("timing", name, milliseconds, tags)

    def histogram(self, name: str, value: float, tags: Tags = None) -> None:
        """Report a distribution sample."""
        self._emit("histogram", name, value, tags)


class TwistedLoggingMetrics(BackendBase):
    """
    ``METRICS|<type>|<name>|<value>|<tags>`` at debug level through
    twisted.logger, so metric lines are mozlog JSON like every other line
    (markus's own LoggingMetrics writes to the stdlib ``logging`` module,
    which twistd does not route to stdout).
    """

    log = Logger(namespace="antenna.metrics")

    def __init__(self, options: Options | None = None, filters: list[Any] | None = None) -> None:
        super().__init__(options, filters)
        self.namespace = self.options.get("statsd_namespace", "")

    def emit(self, record: MetricsRecord) -> None:
        """Log ``record`` as one debug line."""
        name = f"{self.namespace}.{record.key}" if self.namespace else record.key
        self.log.debug("METRICS|{kind}|{name}|{value}|{tags}", kind=record.stat_type,
                       name=name, value=record.value, tags=",".join(record.tags or ()))


class DogStatsdMetrics(BackendBase):
    """
    What markus's Datadog backend sends, through a client that never blocks
    the reactor (a non-blocking UDP socket to an address resolved at
    start-up, no background thread, no buffering) and sends only our
    metrics: no client telemetry, no container tags, no fork hooks. A
    packet that cannot be sent is dropped without a word, as statsd over UDP
    should be. Options are markus's (``statsd_host``, ``statsd_port``,
    ``statsd_namespace``) and ``statsd_address``, the host resolved.
    """

    def __init__(self, options: Options | None = None, filters: list[Any] | None = None) -> None:
        super().__init__(options, filters)
        # Imported only when used: the datadog package costs each process ~10 MB.
        from datadog.dogstatsd import DogStatsd

        self.host = self.options.get("statsd_host", "localhost")
        self.port = self.options.get("statsd_port", 8125)
        self.namespace = self.options.get("statsd_namespace", "")
        self.address = self.options.get("statsd_address") or self.host
        self.client = DogStatsd(
            host=self.address, port=self.port, namespace=self.namespace or None,
            origin_detection_enabled=False, disable_telemetry=True,
            disable_buffering=True, disable_background_sender=True,
            socket_timeout=0, track_instance=False,
        )
        self._send: dict[str, Callable[..., None]] = {
            "incr": self.client.increment,
            "gauge": self.client.gauge,
            "timing": self.client.timing,
            "histogram": self.client.histogram,
        }

    def emit(self, record: MetricsRecord) -> None:
        """Send ``record`` as one DogStatsd packet (as markus's DatadogMetrics does)."""
        self._send[record.stat_type](metric=record.key, value=record.value, tags=record.tags)


def _prometheus(options: Options) -> BackendBase:
    # Imported only when used: prometheus_client must first see PROMETHEUS_MULTIPROC_DIR.
    from antenna_tw.prometheus.backend import PrometheusMetrics

    return PrometheusMetrics(options)


BACKENDS: dict[str, Callable[[Options], BackendBase]] = {
    "statsd": DogStatsdMetrics,
    "prometheus": _prometheus,
    "logging": TwistedLoggingMetrics,
}


class IMetricsEndpoint(Interface):
    """A backend that answers an HTTP route of the collector's own (Prometheus's ``/metrics``)."""

    def add_routes(app: Any, reactor: Any, threadpool: Any) -> None:
        """Route its endpoint on the klein ``app``; blocking work goes to ``threadpool``."""


def resolve_host(host: str, port: int) -> str:
    """
    STATSD_HOST as a numeric address, looked up once at start-up: the client
    reopens its socket after a send error, and must not ask DNS on the
    reactor thread when it does.
    """
    try:
        return str(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0])
    except (OSError, UnicodeError) as error:
        raise ValueError(f"STATSD_HOST={host!r} does not resolve: {error}") from None


def build_metrics(settings: AppSettings) -> Metrics:
    """A Metrics with a backend for each name in ``METRICS_CLASS``."""
    options: dict[str, Any] = {
        "statsd_host": settings.statsd_host,
        "statsd_port": settings.statsd_port,
        "statsd_namespace": settings.statsd_namespace,
    }
    backends = []
    given = settings.metrics_class.split(",")
    for name, key in zip(given, metrics_class_names(settings.metrics_class), strict=True):
        if key == "none":
            continue
        if key not in BACKENDS:
            raise ValueError(
                f"METRICS_CLASS={settings.metrics_class!r}: {name.strip()!r} is not "
                "statsd, prometheus, logging or none")
        if key == "statsd" and "statsd_address" not in options:
            options["statsd_address"] = resolve_host(settings.statsd_host, settings.statsd_port)
        backends.append(BACKENDS[key](options))
    return Metrics(backends)
