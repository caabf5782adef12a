"""
Metrics under Antenna's statsd names, sent by markus backends (Mozilla's
metrics library, which Antenna uses). The names, types and tags are listed
once, in ``antenna_tw.metricnames``; docs/metrics.rst is rendered from it.

``METRICS_CLASS`` is a comma list of backends: ``statsd`` sends DogStatsd
packets over UDP to STATSD_HOST:STATSD_PORT under STATSD_NAMESPACE (markus's
Datadog backend), ``logging`` writes one debug log line per metric
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

import attr
from markus.backends import BackendBase
from markus.main import MetricsRecord
from zope.interface import Interface, implementer

from antenna_tw import metricnames
from antenna_tw.config import METRICS_CLASS_ALIASES
from antenna_tw.logs import Logger


class IMetrics(Interface):
    def incr(name, value=1, tags=None):
        """Count something."""

    def gauge(name, value, tags=None):
        """Report a level."""

    def timing(name, milliseconds, tags=None):
        """Report a duration."""

    def histogram(name, value, tags=None):
        """Report a distribution sample."""


@implementer(IMetrics)
@attr.s
class Metrics:
    """
    Hands every metric, as a markus MetricsRecord, to each of its backends.
    ``checked`` (tests): a metric not in ``antenna_tw.metricnames`` as
    registered (name, type, tag names) raises UnregisteredMetric.
    """

    backends = attr.ib(factory=list)
    checked = attr.ib(default=False, kw_only=True)

    def _emit(self, stat_type, name, value, tags):
        if self.checked:
            metricnames.check(stat_type, name, tags)
        if not self.backends:
            return
        record = MetricsRecord(stat_type, name, value, list(tags or ()))
        for backend in self.backends:
            backend.emit_to_backend(record)

    def incr(self, name, value=1, tags=None):
        self._emit("incr", name, value, tags)

    def gauge(self, name, value, tags=None):
        self._emit("gauge", name, value, tags)

    def timing(self, name, milliseconds, tags=None):
        self._emit("timing", name, milliseconds, tags)

    def histogram(self, name, value, tags=None):
        self._emit("histogram", name, value, tags)


class TwistedLoggingMetrics(BackendBase):
    """
    ``METRICS|<type>|<name>|<value>|<tags>`` at debug level through
    twisted.logger, so metric lines are mozlog JSON like every other line
    (markus's own LoggingMetrics writes to the stdlib ``logging`` module,
    which twistd does not route to stdout).
    """

    log = Logger(namespace="antenna.metrics")

    def __init__(self, options=None, filters=None):
        super().__init__(options, filters)
        self.namespace = self.options.get("statsd_namespace", "")

    def emit(self, record):
        name = f"{self.namespace}.{record.key}" if self.namespace else record.key
        self.log.debug("METRICS|{kind}|{name}|{value}|{tags}", kind=record.stat_type,
                       name=name, value=record.value, tags=",".join(record.tags or ()))


def _statsd_backend(options):
    # Imported only when used: the datadog package costs each process ~10 MB.
    from antenna_tw.statsd import DogStatsdMetrics

    return DogStatsdMetrics(options)


BACKENDS = {
    "statsd": _statsd_backend,
    "logging": TwistedLoggingMetrics,
}

# The accepted other names are declared once, beside METRICS_CLASS; read lowercased.
METRICS_ALIASES = {
    **{name.lower(): short for name, short in METRICS_CLASS_ALIASES.items()},
    "": "none",
}


def resolve_host(host, port):
    """
    STATSD_HOST as a numeric address, looked up once at start-up: the client
    reopens its socket after a send error, and must not ask DNS on the
    reactor thread when it does.
    """
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0]
    except (OSError, UnicodeError) as error:
        raise ValueError(f"STATSD_HOST={host!r} does not resolve: {error}") from None


def build_metrics(settings):
    """A Metrics with a backend for each name in ``METRICS_CLASS``."""
    options = {
        "statsd_host": settings.statsd_host,
        "statsd_port": settings.statsd_port,
        "statsd_namespace": settings.statsd_namespace,
    }
    backends = []
    for name in settings.metrics_class.split(","):
        key = name.strip().lower()
        key = METRICS_ALIASES.get(key, key)
        if key == "none":
            continue
        if key not in BACKENDS:
            raise ValueError(
                f"METRICS_CLASS={settings.metrics_class!r}: {name.strip()!r} is not "
                "statsd, logging or none")
        if key == "statsd" and "statsd_address" not in options:
            options["statsd_address"] = resolve_host(settings.statsd_host, settings.statsd_port)
        backends.append(BACKENDS[key](options))
    return Metrics(backends)
