"""The twistd service: start-up order, the listening port, orderly shutdown."""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import ILogObserver

from antenna_tw import __version__
from antenna_tw.logs import Logger
from antenna_tw.sentry import flush


class CollectorService(MultiService):
    """
    Starts the crash movers and re-queues the spool before the port opens;
    on stop, closes the port first, then lets the movers drain for up to
    SHUTDOWN_TIMEOUT. Whatever is left stays in the spool.
    """

    log = Logger(namespace="antenna.service")

    def __init__(self, collector, endpoint, port_description, entries=(), log_observer=None):
        super().__init__()
        self.collector = collector
        self.entries = list(entries)
        self.log_observer = log_observer
        self.port_service = StreamServerEndpointService(endpoint, collector.site)
        self.port_service._raiseSynchronously = True
        self.port_description = port_description

    def setServiceParent(self, parent):
        # twistd asks its Application for an ILogObserver before starting
        # logging: this is how `twistd -n antenna` logs mozlog JSON.
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self):
        self.log.info("antenna-tw {version} starting", version=__version__)
        for line in self.collector.config.log_lines():
            self.log.info("{line}", line=line)
        self.collector.start(self.entries)
        self.entries = []
        super().startService()
        self.port_service.setServiceParent(self)
        self.log.info("listening on {port}", port=self.port_description)

    @defer.inlineCallbacks
    def stopService(self):
        yield super().stopService()  # the port closes first
        yield defer.ensureDeferred(self.collector.stop())
        self.log.info("stopped")
        yield flush(self.log_observer, self.collector.reactor)  # Sentry: what is still queued
