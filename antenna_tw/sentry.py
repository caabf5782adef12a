"""
Errors to Sentry when ``SECRET_SENTRY_DSN`` is set: an ILogObserver that
sends every logged failure (an unhandled error in a request, a crash mover
that could not read an entry, ...) as a Sentry event.

sentry_sdk is imported only when a DSN is set. Its client is our own, not
sentry_sdk's global one, and none of its default integrations (logging,
threading, excepthook) are installed: what reaches Sentry is exactly what
the collector logs as a failure. The client sends
from its own background thread, never from the reactor's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver, LogEvent, LogLevel
from zope.interface import implementer

from antenna_tw.config import ConfigError

REPORTED_LEVELS = frozenset({LogLevel.error, LogLevel.critical})


@implementer(ILogObserver)
class SentryObserver:
    """Sends the failures in logged events at error or critical level to Sentry."""

    def __init__(self, client: Any, event_from_exception: Callable[..., tuple[Any, Any]]) -> None:
        # client: a sentry_sdk.Client (sentry_sdk is imported only when used).
        self.client = client
        self._event_from_exception = event_from_exception

    @classmethod
    def from_dsn(cls, dsn: str, host_id: str, release: str) -> SentryObserver:
        """The observer for ``dsn``; ConfigError (never showing the DSN) when it is unusable."""
        import sentry_sdk
        from sentry_sdk.utils import BadDsn, event_from_exception

        try:
            client = sentry_sdk.Client(
                dsn=dsn, server_name=host_id or None, release=release,
                default_integrations=False, auto_enabling_integrations=False)
        except BadDsn:
            raise ConfigError("SECRET_SENTRY_DSN is not a Sentry DSN") from None
        return cls(client, event_from_exception)

    def __call__(self, event: LogEvent) -> None:
        failure = event.get("log_failure")
        if failure is None or event.get("log_level") not in REPORTED_LEVELS:
            return
        exc_info = (failure.type, failure.value, failure.getTracebackObject())
        sentry_event, hint = self._event_from_exception(
            exc_info, client_options=self.client.options)
        self.client.capture_event(sentry_event, hint=hint)

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued, for up to ``timeout`` seconds."""
        self.client.close(timeout=timeout)


@implementer(ILogObserver)
class BothObservers:
    """Log lines as before, and failures to Sentry too."""

    def __init__(self, observer: ILogObserver, sentry: SentryObserver) -> None:
        self.observer = observer
        self.sentry = sentry

    def __call__(self, event: LogEvent) -> None:
        self.observer(event)
        self.sentry(event)

    def close(self, timeout: float = 2.0) -> None:
        """Send what Sentry still has queued (blocking: call it from a thread)."""
        self.sentry.close(timeout)


def flush(observer: object, reactor: IReactorThreads) -> defer.Deferred[None]:
    """
    A Deferred that fires once the error reporter behind ``observer``, if
    it has one, has sent what it still holds. The wait (bounded by its
    ``close`` timeout) runs in the reactor's thread pool, so the reactor
    goes on serving meanwhile; call it last at shutdown.
    """
    close = getattr(observer, "close", None)
    if close is None:
        return defer.succeed(None)
    return deferToThreadPool(reactor, reactor.getThreadPool(), close)


def with_sentry(observer: ILogObserver, dsn: str, host_id: str,
                release: str) -> ILogObserver:
    """``observer``, and Sentry too when ``dsn`` is set."""
    if not dsn:
        return observer
    return BothObservers(observer, SentryObserver.from_dsn(dsn, host_id, release))
