"""
Metrics with the seed's statsd names (SPEC.md section 8).

``METRICS_CLASS`` picks the backend: ``statsd`` sends DogStatsd packets over
UDP to STATSD_HOST:STATSD_PORT under STATSD_NAMESPACE, ``logging`` writes one
debug log line per metric, ``none`` drops them.
"""

from __future__ import annotations

import socket

import attr
from twisted.logger import Logger
from zope.interface import Interface, implementer


class IMetrics(Interface):
    def incr(name, value=1, tags=None):
        """Count something."""

    def gauge(name, value, tags=None):
        """Report a level."""

    def timing(name, milliseconds, tags=None):
        """Report a duration."""

    def histogram(name, value, tags=None):
        """Report a distribution sample."""


def _tag_text(tags):
    return "|#" + ",".join(tags) if tags else ""


@implementer(IMetrics)
class NullMetrics:
    def incr(self, name, value=1, tags=None):
        pass

    def gauge(self, name, value, tags=None):
        pass

    def timing(self, name, milliseconds, tags=None):
        pass

    def histogram(self, name, value, tags=None):
        pass


@implementer(IMetrics)
@attr.s
class LoggingMetrics:
    """``METRICS|<type>|<name>|<value>|<tags>`` at debug level, as Antenna's LoggingMetrics."""

    namespace = attr.ib(default="")
    log = Logger(namespace="antenna.metrics")

    def _emit(self, kind, name, value, tags):
        full = f"{self.namespace}.{name}" if self.namespace else name
        self.log.debug("METRICS|{kind}|{name}|{value}|{tags}", kind=kind, name=full,
                       value=value, tags=",".join(tags or ()))

    def incr(self, name, value=1, tags=None):
        self._emit("incr", name, value, tags)

    def gauge(self, name, value, tags=None):
        self._emit("gauge", name, value, tags)

    def timing(self, name, milliseconds, tags=None):
        self._emit("timing", name, milliseconds, tags)

    def histogram(self, name, value, tags=None):
        self._emit("histogram", name, value, tags)


@implementer(IMetrics)
@attr.s
class StatsdMetrics:
    """DogStatsd over a non-blocking UDP socket; a lost packet is never an error."""

    host = attr.ib()
    port = attr.ib()
    namespace = attr.ib(default="")
    _socket = attr.ib(init=False, default=None)

    def __attrs_post_init__(self):
        family, _, _, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._address = address

    def _send(self, name, value, kind, tags):
        full = f"{self.namespace}.{name}" if self.namespace else name
        packet = f"{full}:{value}|{kind}{_tag_text(tags)}".encode("utf-8")
        try:
            self._socket.sendto(packet, self._address)
        except OSError:
            pass

    def incr(self, name, value=1, tags=None):
        self._send(name, value, "c", tags)

    def gauge(self, name, value, tags=None):
        self._send(name, value, "g", tags)

    def timing(self, name, milliseconds, tags=None):
        self._send(name, f"{milliseconds:.3f}", "ms", tags)

    def histogram(self, name, value, tags=None):
        self._send(name, value, "h", tags)


METRICS_ALIASES = {
    "antenna.metrics.LoggingMetrics": "logging",
    "antenna.metrics.DogStatsdMetrics": "statsd",
}


def build_metrics(settings):
    """The backend named by ``METRICS_CLASS`` (comma lists take the first)."""
    name = settings.metrics_class.split(",")[0].strip()
    name = METRICS_ALIASES.get(name, name).lower()
    if name == "statsd":
        return StatsdMetrics(settings.statsd_host, settings.statsd_port, settings.statsd_namespace)
    if name == "logging":
        return LoggingMetrics(settings.statsd_namespace)
    if name in ("none", "null", ""):
        return NullMetrics()
    raise ValueError(f"METRICS_CLASS={settings.metrics_class!r} is not statsd, logging or none")
