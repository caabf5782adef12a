"""
Evening out connections between ``--workers``.

SO_REUSEPORT gives each new connection to a worker by a hash of its
addresses, blind to how busy the worker is. With clients that send their
next crash when the last one is answered, a worker that happens to hold more
connections answers each later, so it keeps them longer and gathers more:
at 32 connections on 2 workers the split was 8-10 connections apart half
the time, up to 24 to 4, and the crashes on the busier worker waited
longest (docs/performance.rst, *Balancing connections between workers*).
So a worker that accepts a connection while it holds ``HAND_OFF_MARGIN`` or
more connections than its least busy sibling passes it on before reading a
byte of it: the socket goes over a Unix
datagram socket (SCM_RIGHTS) and the sibling serves it as if it had accepted
it. Each worker publishes how many connections it holds in a small file
every worker maps (``LoadBoard``); the connections are counted here, as
the listening port's factory builds their protocols (``CountingFactory``).
When the sibling cannot take it (its queue is full, it is restarting), the
worker serves the connection itself.
A connection sent in the moment its sibling stops, or to one that is
killed, is closed unanswered, as those waiting in the killed worker's
accept queue are: nothing of it was read, and the client sends it again.
"""

from __future__ import annotations

import array
import mmap
import os
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IListeningPort,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IReadDescriptor,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer

from antenna_tw.adapters.twisted import close_without_shutdown
from antenna_tw.logs import Logger

if TYPE_CHECKING:
    from twisted.internet import tcp

_SLOT = struct.Struct("=i")
# What a worker that is not serving shows on the board: no one picks it.
_CLOSED = 2**31 - 1
# Hand a connection on only when this worker holds at least this many more.
HAND_OFF_MARGIN = 2
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# Connections taken from the channel per wake-up.
RECEIVE_BATCH = 64


@attr.s
class LoadBoard:
    """Open connections per worker, one 4-byte slot each, in a file every worker maps."""

    path: str | os.PathLike[str] = attr.ib()
    workers: int = attr.ib()
    index: int = attr.ib()
    _map: mmap.mmap | None = attr.ib(default=None, init=False, repr=False)

    def open(self) -> LoadBoard:
        """Map the board (made or grown as needed) and show this worker at 0; self."""
        size = _SLOT.size * self.workers
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.publish(0)
        return self

    def close(self) -> None:
        """Show this worker as not serving, and unmap the board."""
        if self._map is not None:
            self.publish(_CLOSED)
            self._map.close()
            self._map = None

    def publish(self, count: int) -> None:
        """Show this worker holding ``count`` connections."""
        if self._map is not None:
            _SLOT.pack_into(self._map, _SLOT.size * self.index, count)

    def count(self, index: int) -> int:
        """The connections worker ``index`` shows."""
        assert self._map is not None
        count: int = _SLOT.unpack_from(self._map, _SLOT.size * index)[0]
        return count

    def lightest_sibling(self) -> tuple[int, int] | tuple[None, None]:
        """``(index, connections)`` of the sibling showing the fewest, or ``(None, None)``."""
        if self._map is None:
            return None, None
        fewest, sibling = min(((self.count(other), other) for other in range(self.workers)
                               if other != self.index), default=(None, None))
        if sibling is None or fewest is None:
            return None, None
        return sibling, fewest


def channel_address(name: str, index: int) -> bytes:
    """The abstract Unix socket name of worker ``index`` of the collector called ``name``."""
    return b"\0antenna-tw/" + name.encode() + b"/%d" % index


@implementer(IReadDescriptor)
@attr.s(eq=False)
class HandOffChannel:
    """
    A worker's Unix datagram socket (in the abstract namespace, so nothing
    to clean up): it sends connections to siblings and serves those they
    send it with ``factory``. ``name`` tells this collector's workers from
    another's on the same machine (the parent's pid).
    """

    # IReactorFDSet and IReactorSocket
    reactor: Any = attr.ib()
    name: str = attr.ib()
    index: int = attr.ib()
    factory: IProtocolFactory | None = attr.ib(default=None, init=False)
    sent: int = attr.ib(default=0, init=False)
    taken: int = attr.ib(default=0, init=False)
    _socket: socket.socket | None = attr.ib(default=None, init=False, repr=False)
    log = Logger(namespace="antenna.balance")

    def start(self, factory: IProtocolFactory) -> bool:
        """Take connections for ``factory``; False (with a warning) if the socket cannot be made."""
        self.factory = factory
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(channel_address(self.name, self.index))
        except OSError as error:
            sock.close()
            self.unbalanced(error)
            return False
        sock.setblocking(False)
        self._socket = sock
        self.reactor.addReader(self)
        return True

    @classmethod
    def unbalanced(cls, error: Exception) -> None:
        """Say that this worker will not balance, and why."""
        cls.log.warn("connections are not balanced between workers: {error}", error=str(error))

    def stop(self) -> None:
        """Serve what siblings already sent, then take no more."""
        if self._socket is None:
            return
        self.doRead()
        self.reactor.removeReader(self)
        self._socket.close()
        self._socket = None
        self.log.info("passed {sent} connections to other workers and took {taken}",
                      sent=self.sent, taken=self.taken)

    def send(self, sibling: int, connection: socket.socket) -> bool:
        """Pass ``connection`` (a socket) to worker ``sibling``; False if it cannot take it now."""
        if self._socket is None:
            return False
        rights = array.array("i", [connection.fileno()])
        try:
            # Not socket.send_fds: it drops its address argument (Python 3.11).
            self._socket.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)],
                                 0, channel_address(self.name, sibling))
        except OSError:
            return False  # its queue is full, or it is not there (restarting, stopped)
        self.sent += 1
        return True

    def fileno(self) -> int:
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self) -> str:
        return "HandOffChannel"

    def connectionLost(self, reason: Failure) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def doRead(self) -> None:
        assert self._socket is not None
        for _ in range(RECEIVE_BATCH):
            try:
                _, fds, _, _ = socket.recv_fds(self._socket, 1, 4, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            for fd in fds:
                self._serve(fd)

    def _serve(self, fd: int) -> None:
        try:
            connection = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)  # not a socket: not from a sibling
            return
        try:
            if connection.type == socket.SOCK_STREAM and connection.family in _TCP_FAMILIES:
                self.reactor.adoptStreamConnection(connection.fileno(), connection.family,
                                                   self.factory)
                self.taken += 1
        except OSError:
            pass  # the client left before it got here
        finally:
            connection.close()  # the reactor has its own descriptor


def balanced(endpoint: IStreamServerEndpoint, reactor: Any, board_path: str | os.PathLike[str],
             workers: int, index: int, name: str) -> IStreamServerEndpoint:
    """
    ``endpoint`` with the balancing of worker ``index`` of ``workers``; as
    it is, with a warning, when the board cannot be made at ``board_path``
    (a filesystem without shared ``mmap``): balancing is worth having, not
    worth refusing to start over.
    """
    try:
        board = LoadBoard(board_path, workers, index).open()
    except (OSError, ValueError) as error:
        HandOffChannel.unbalanced(error)
        return endpoint
    return BalancingEndpoint(endpoint, board, HandOffChannel(reactor, name, index))


@implementer(IStreamServerEndpoint)
@attr.s
class BalancingEndpoint:
    """
    Listens on ``endpoint``; a connection accepted while this worker holds
    more than a sibling goes to that sibling (``board``, ``channel``).
    ``connections`` counts what this worker serves, on the board.
    """

    endpoint: IStreamServerEndpoint = attr.ib()
    board: LoadBoard = attr.ib()
    channel: HandOffChannel = attr.ib()
    connections: ConnectionCount = attr.ib(init=False)

    @connections.default
    def _count_on_the_board(self) -> ConnectionCount:
        return ConnectionCount(self.board.publish)

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        counted = CountingFactory(protocolFactory, self.connections)
        self.channel.start(counted)  # what siblings send is served here, never passed on
        return self.endpoint.listen(BalancingFactory(counted, self.board, self.channel))


@attr.s
class ConnectionCount:
    """The connections this worker serves; ``publish`` hears each change."""

    publish: Callable[[int], None] = attr.ib()
    open: int = attr.ib(default=0)

    def opened(self) -> None:
        self.open += 1
        self.publish(self.open)

    def closed(self) -> None:
        self.open -= 1
        self.publish(self.open)


@implementer(IProtocolFactory)
@attr.s
class CountingFactory:
    """``factory``, with each connection its protocols serve counted in ``connections``."""

    factory: IProtocolFactory = attr.ib()
    connections: ConnectionCount = attr.ib()

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        protocol = self.factory.buildProtocol(addr)
        if protocol is None:
            return None
        self.connections.opened()
        return CountedProtocol(protocol, self.connections)


@implementer(IProtocol, ILoggingContext)
@attr.s(eq=False)
class CountedProtocol:
    """
    ``protocol`` on the transport as if it were there itself (it gets the
    transport, and the half-closes when it hears them); counted out of
    ``connections`` when its connection is lost.
    """

    protocol: IProtocol = attr.ib()
    connections: ConnectionCount = attr.ib()

    def __attrs_post_init__(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.protocol):
            directlyProvides(self, IHalfCloseableProtocol)

    def makeConnection(self, transport: Any) -> None:
        self.protocol.makeConnection(transport)

    def connectionMade(self) -> None:
        pass  # makeConnection made it for the protocol

    def dataReceived(self, data: bytes) -> Any:
        # What it returns (a reason to close) is the transport's to act on.
        return self.protocol.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        try:
            self.protocol.connectionLost(reason)
        finally:
            self.connections.closed()

    def readConnectionLost(self) -> None:
        IHalfCloseableProtocol(self.protocol).readConnectionLost()

    def writeConnectionLost(self) -> None:
        IHalfCloseableProtocol(self.protocol).writeConnectionLost()

    def logPrefix(self) -> str:
        # The transport names its log lines after this: the protocol's name, as without us.
        context = ILoggingContext(self.protocol, None)
        return context.logPrefix() if context is not None else self.protocol.__class__.__name__


@implementer(IProtocolFactory)
@attr.s
class BalancingFactory:
    """``factory`` for the connections this worker keeps; ``HandOff`` for the others."""

    factory: CountingFactory = attr.ib()
    board: LoadBoard = attr.ib()
    channel: HandOffChannel = attr.ib()

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.board.close()
        self.channel.stop()
        self.factory.doStop()

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        sibling, theirs = self.board.lightest_sibling()
        if (sibling is not None and theirs is not None
                and self.factory.connections.open - theirs >= HAND_OFF_MARGIN):
            return HandOff(self, sibling, addr)
        return self.factory.buildProtocol(addr)


@implementer(IProtocol)
@attr.s(eq=False)
class HandOff:
    """
    Takes the place of a channel on a connection for ``sibling``; serves it
    here if it cannot go.
    """

    balancer: BalancingFactory = attr.ib()
    sibling: int = attr.ib()
    addr: IAddress = attr.ib()

    def makeConnection(self, transport: ITransport) -> None:
        # What the listening port (ReusePortEndpoint's) gives its protocols.
        connection = cast("tcp.Server", transport)
        if self.balancer.channel.send(self.sibling, connection.getHandle()):
            # The connection lives on in the sibling: close this descriptor
            # without the shutdown() that would end it there too.
            close_without_shutdown(connection)
            return
        channel = self.balancer.factory.buildProtocol(self.addr)
        assert channel is not None  # a CountingFactory's
        connection.protocol = channel
        channel.makeConnection(connection)

    def connectionMade(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass  # never read: the transport stops reading at once

    def connectionLost(self, reason: Failure) -> None:
        pass
