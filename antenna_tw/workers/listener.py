"""
The listening sockets of ``--workers N``.

The parent opens one per ``--port`` (``ports.py``), before the reactor and
with the plain ``socket`` module (it loads neither Twisted's endpoints nor
pyOpenSSL: ``footprint.py``), or takes the ones systemd passed it; keeps
them open across worker restarts, and passes them to every worker as
descriptors ``WORKER_FD``, ``WORKER_FD + 1``, ... in ``--port`` order
(``spawnProcess``'s ``childFDs``). Each worker adopts each with
``reactor.adoptStreamPort``, behind TLS for an ``ssl:`` port: one accept
queue per port for all of them, from which whichever worker is free first
takes the next connection, one per wake-up (``ACCEPTS_PER_WAKEUP``). Why
this design: docs/architecture.rst, *Several processes*.
"""

from __future__ import annotations

import socket
from typing import Any

import attr
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

from antenna_tw.adapters.twisted import bound_accepts
from antenna_tw.workers.ports import TLSFiles

# The descriptor a worker finds the first --port's listening socket on.
WORKER_FD = 3
# Connections a worker accepts each time the shared socket wakes it: more lets
# a worker back from a long turn take a burst of queued ones while its
# sibling idles (docs/performance.rst, "Measured choices").
ACCEPTS_PER_WAKEUP = 4


@implementer(IStreamServerEndpoint)
@attr.s
class AdoptedPortEndpoint:
    """
    Serves the listening socket this process inherited as descriptor ``fd``
    (``WORKER_FD`` and up), with the public ``reactor.adoptStreamPort``;
    behind TLS (``twisted.protocols.tls``) when ``tls`` names its files.
    """

    reactor: Any = attr.ib()  # IReactorSocket
    fd: int = attr.ib(default=WORKER_FD)
    tls: TLSFiles | None = attr.ib(default=None)

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        """Adopt the inherited socket; fails if ``fd`` is not a listening stream socket."""
        try:
            sock = socket.socket(fileno=self.fd)
        except OSError as error:
            return defer.fail(OSError(
                f"no listening socket on descriptor {self.fd} ({error}): a worker is "
                "started by its --workers parent"))
        try:
            if (sock.type != socket.SOCK_STREAM
                    or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
                raise OSError(f"descriptor {self.fd} is not a listening stream socket")
            if self.tls is not None:
                from twisted.protocols.tls import TLSMemoryBIOFactory

                protocolFactory = TLSMemoryBIOFactory(
                    self.tls.context_factory(), False, protocolFactory)
            # adoptStreamPort dup()s the descriptor; the inherited one is closed below.
            port: IListeningPort = self.reactor.adoptStreamPort(
                sock.fileno(), sock.family, protocolFactory)
            bound_accepts(port, ACCEPTS_PER_WAKEUP)
        except Exception as error:  # noqa: BLE001 - any failure is the listen's
            return defer.fail(error)
        finally:
            sock.close()
        return defer.succeed(port)


@implementer(IListeningPort)
@attr.s
class EveryListeningPort:
    """The ports of every ``--port``, as one: stopping it stops them all."""

    ports: list[IListeningPort] = attr.ib()

    def startListening(self) -> None:
        """Every port listens (they already do once an endpoint gave them)."""
        for port in self.ports:
            port.startListening()

    def stopListening(self) -> defer.Deferred[None]:
        """Every port stops; fires when all have."""
        stopping = [defer.maybeDeferred(port.stopListening) for port in self.ports]
        return defer.gatherResults(stopping, consumeErrors=True).addCallback(lambda _: None)

    def getHost(self) -> Any:
        """The first port's address."""
        return self.ports[0].getHost()


@implementer(IStreamServerEndpoint)
@attr.s
class EveryPortEndpoint:
    """
    Listens on every endpoint, in order, with one factory; if one fails,
    those already listening stop and the failure is the result.
    """

    endpoints: list[IStreamServerEndpoint] = attr.ib()

    async def _listen(self, protocolFactory: IProtocolFactory) -> IListeningPort:
        ports: list[IListeningPort] = []
        try:
            for endpoint in self.endpoints:
                ports.append(await endpoint.listen(protocolFactory))
        except BaseException:
            await EveryListeningPort(ports).stopListening()
            raise
        return EveryListeningPort(ports)

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        """Listen on every endpoint; the ports as one ``EveryListeningPort``."""
        return defer.ensureDeferred(self._listen(protocolFactory))
