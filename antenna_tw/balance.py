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
every worker maps (``LoadBoard``). When the sibling cannot take it (its
queue is full, it is restarting), the worker serves the connection itself.
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

import attr
from twisted.internet.interfaces import IProtocolFactory, IReadDescriptor, IStreamServerEndpoint
from zope.interface import implementer

from antenna_tw.logs import Logger

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

    path = attr.ib()
    workers = attr.ib()
    index = attr.ib()
    _map = attr.ib(default=None, init=False, repr=False)

    def open(self):
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

    def close(self):
        if self._map is not None:
            self.publish(_CLOSED)
            self._map.close()
            self._map = None

    def publish(self, count):
        """Show this worker holding ``count`` connections."""
        if self._map is not None:
            _SLOT.pack_into(self._map, _SLOT.size * self.index, count)

    def count(self, index):
        return _SLOT.unpack_from(self._map, _SLOT.size * index)[0]

    def lightest_sibling(self):
        """``(index, connections)`` of the sibling showing the fewest, or ``(None, None)``."""
        if self._map is None:
            return None, None
        fewest, sibling = min(((self.count(other), other) for other in range(self.workers)
                               if other != self.index), default=(None, None))
        return sibling, fewest


def channel_address(name, index):
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

    reactor = attr.ib()
    name = attr.ib()
    index = attr.ib()
    factory = attr.ib(default=None, init=False)
    sent = attr.ib(default=0, init=False)
    taken = attr.ib(default=0, init=False)
    _socket = attr.ib(default=None, init=False, repr=False)
    log = Logger(namespace="antenna.balance")

    def start(self, factory):
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
    def unbalanced(cls, error):
        cls.log.warn("connections are not balanced between workers: {error}", error=str(error))

    def stop(self):
        """Serve what siblings already sent, then take no more."""
        if self._socket is None:
            return
        self.doRead()
        self.reactor.removeReader(self)
        self._socket.close()
        self._socket = None
        self.log.info("passed {sent} connections to other workers and took {taken}",
                      sent=self.sent, taken=self.taken)

    def send(self, sibling, connection):
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

    def fileno(self):
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self):
        return "HandOffChannel"

    def connectionLost(self, reason):
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def doRead(self):
        for _ in range(RECEIVE_BATCH):
            try:
                _, fds, _, _ = socket.recv_fds(self._socket, 1, 4, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            for fd in fds:
                self._serve(fd)

    def _serve(self, fd):
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


def balanced(endpoint, reactor, board_path, workers, index, name):
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
    The factory is a CrashSite: it reports its open connections.
    """

    endpoint = attr.ib()
    board = attr.ib()
    channel = attr.ib()

    def listen(self, factory):
        factory.channels_changed = self.board.publish
        self.channel.start(factory)
        return self.endpoint.listen(BalancingFactory(factory, self.board, self.channel))


@implementer(IProtocolFactory)
@attr.s
class BalancingFactory:
    """``factory`` for the connections this worker keeps; ``HandOff`` for the others."""

    factory = attr.ib()
    board = attr.ib()
    channel = attr.ib()

    def doStart(self):
        self.factory.doStart()

    def doStop(self):
        self.board.close()
        self.channel.stop()
        self.factory.doStop()

    def buildProtocol(self, addr):
        sibling, theirs = self.board.lightest_sibling()
        if sibling is not None and self.factory.open_channels - theirs >= HAND_OFF_MARGIN:
            return HandOff(self, sibling, addr)
        return self.factory.buildProtocol(addr)


@attr.s(eq=False)
class HandOff:
    """Takes the place of a channel on a connection for ``sibling``; serves it here if it cannot go."""

    balancer = attr.ib()
    sibling = attr.ib()
    addr = attr.ib()

    def makeConnection(self, transport):
        if self.balancer.channel.send(self.sibling, transport.getHandle()):
            # The connection lives on in the sibling: close this descriptor
            # without the shutdown() that would end it there too.
            transport._shouldShutdown = False
            transport.loseConnection()
            return
        channel = self.balancer.factory.buildProtocol(self.addr)
        transport.protocol = channel
        channel.makeConnection(transport)

    def dataReceived(self, data):
        pass  # never read: the transport stops reading at once

    def connectionLost(self, reason):
        pass
