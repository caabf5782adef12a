"""The twistd service: start-up order, the listening port, orderly shutdown."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.application.service import IServiceCollection, MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import ILogObserver
from twisted.python.failure import Failure

from antenna_tw import __version__
from antenna_tw.logs import Logger
from antenna_tw.sentry import flush

if TYPE_CHECKING:
    from antenna_tw.app import Collector


class CollectorService(MultiService):
    """
    Starts the crash movers and re-queues the spool before the port opens;
    on stop, closes the port first, then lets the movers drain for up to
    SHUTDOWN_TIMEOUT. Whatever is left stays in the spool.

    The port is opened with the endpoint's own ``listen``: a port that
    cannot be opened (in use, no permission) fails ``startService`` with the
    endpoint's error, so twistd stops instead of running without a port.
    """

    log = Logger(namespace="antenna.service")

    def __init__(self, collector: Collector, endpoint: IStreamServerEndpoint,
                 port_description: str, entries: Iterable[Any] = (),
                 log_observer: ILogObserver | None = None) -> None:
        super().__init__()
        self.collector = collector
        self.endpoint = endpoint
        self.entries = list(entries)
        self.log_observer = log_observer
        self.port_description = port_description
        # endpoint.listen's Deferred once started: the port, or None if it failed.
        self.listening: defer.Deferred[IListeningPort | None] | None = None

    def setServiceParent(self, parent: IServiceCollection) -> None:
        """Joins ``parent``, first giving it our log observer when it takes components."""
        # twistd asks its Application for an ILogObserver before starting
        # logging: this is how `twistd -n antenna` logs mozlog JSON.
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self) -> None:
        """Starts the collector, then opens the port (raising if it cannot)."""
        # The options were logged once for the node, as one line (tap.py).
        self.log.info("antenna-tw {version} starting", version=__version__)
        self.collector.start(self.entries)
        self.entries = []
        super().startService()
        self._listen()
        self.log.info("listening on {port}", port=self.port_description)

    def _listen(self) -> None:
        # Every endpoint we use (TCP, SSL, UNIX, ours) listens or fails at
        # once; a failure then is raised here. One that came later would be
        # logged, as StreamServerEndpointService does.
        starting = True
        failed: list[Failure] = []

        def cannot_listen(failure: Failure) -> None:
            if starting:
                failed.append(failure)
            elif not failure.check(defer.CancelledError):
                self.log.failure("cannot listen on {port}", failure, port=self.port_description)

        listening = self.endpoint.listen(self.collector.site)
        self.listening = listening.addErrback(cannot_listen)
        starting = False
        if failed:
            failed[0].raiseException()

    def _stop_listening(self) -> defer.Deferred[None]:
        listening, self.listening = self.listening, None
        if listening is None:
            return defer.succeed(None)
        listening.cancel()  # a port not yet open never opens

        def stop(port: IListeningPort | None) -> defer.Deferred[None] | None:
            return None if port is None else port.stopListening()

        return listening.addCallback(stop)

    def stopService(self) -> defer.Deferred[None]:
        """Closes the port, stops the collector, then flushes the error reporter."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        await self._stop_listening()  # the port closes first
        await super().stopService()
        await defer.ensureDeferred(self.collector.stop())
        self.log.info("stopped")
        await flush(self.log_observer, self.collector.reactor)  # Sentry: what is still queued
