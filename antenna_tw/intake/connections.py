"""
Deadlines and limits for connections (docs/intake.rst, *Connections*).

``REQUEST_TIMEOUT`` (Twisted's channel timeout) counts only silence: a client
sending one header line or a few body bytes every few seconds is never cut
off by it. So each process also:

- raises its soft descriptor limit to the hard limit at start
  (``raise_descriptor_limit``), so that connections and files do not run out
  at the usual soft limit of 1,024;
- serves at most ``connection_cap()`` connections at once; one more is
  answered 503 ``Discarded=busy`` by ``BusyProtocol`` and closed, so the
  process never reaches its descriptor limit, where it could neither accept
  connections (``/__lbheartbeat__`` included) nor open spool files;
- closes, at a once-a-second tick (``ConnectionWatch``), the connections
  whose request line and headers took longer than ``REQUEST_HEADER_TIMEOUT`` and
  those whose body averages less than ``REQUEST_MIN_BODY_RATE`` after
  ``REQUEST_BODY_GRACE``. The tick costs nothing per chunk: a chunk only adds
  its length to a counter.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

import attr
from twisted.internet import task
from twisted.internet.interfaces import IHalfCloseableProtocol, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from antenna_tw import answers
from antenna_tw.logs import Logger

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Descriptors kept out of the connection cap: the listening socket, spool
#: and storage files, storage and log connections, the thread pool's pipes.
MIN_RESERVED_DESCRIPTORS = 64
#: How often the deadlines are checked, in seconds.
TICK_SECONDS = 1.0
#: How long a connection answered busy may still send before it is dropped.
BUSY_LINGER_SECONDS = 2.0


def raise_descriptor_limit() -> int:
    """
    Raise the soft RLIMIT_NOFILE to the hard limit (each serving process does
    it at start); return the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft and (soft != resource.RLIM_INFINITY):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # e.g. an unlimited hard limit the kernel caps lower: keep the soft one
    return soft


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE in force (a large figure when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def connection_cap(max_connections: int, descriptors: int) -> int:
    """
    The connections one process serves at once: ``max_connections`` when
    set, else the descriptor limit less an eighth of it (at least
    ``MIN_RESERVED_DESCRIPTORS``), at least 1 either way.
    """
    if max_connections > 0:
        return max_connections
    reserved = max(MIN_RESERVED_DESCRIPTORS, descriptors // 8)
    return max(1, descriptors - reserved)


@implementer(IHalfCloseableProtocol)
class BusyProtocol(Protocol):
    """
    A connection past the cap: answered 503 ``Discarded=busy`` with
    ``Retry-After`` at once, its sending side shut, what the client still
    sends read and dropped for ``BUSY_LINGER_SECONDS`` (so that it reads the
    answer rather than a reset), then closed.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._linger: IDelayedCall | None = None

    def connectionMade(self) -> None:
        transport = cast(ITCPTransport, self.transport)
        transport.write(answers.raw(answers.busy()))
        transport.loseWriteConnection()
        self._linger = self.clock.callLater(BUSY_LINGER_SECONDS, transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass

    def readConnectionLost(self) -> None:
        # The client is done sending and has the answer (IHalfCloseableProtocol).
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        linger = self._linger
        if linger is not None and linger.active():
            linger.cancel()


class Watched:
    """What ``ConnectionWatch`` reads of a connection (``CrashChannel`` provides it)."""

    #: Reactor time when the request line began to arrive; None between requests.
    head_since: float | None = None
    #: Reactor time when the body began to arrive; None when no body is arriving.
    body_since: float | None = None
    #: Body bytes received since ``body_since``.
    body_bytes: int = 0

    def close_now(self) -> None:
        """Close the connection at once, keeping nothing of it."""
        raise NotImplementedError


@attr.s
class ConnectionWatch:
    """
    Once a second, closes the connections past their header deadline or
    under the minimum body rate; one log line per tick says how many, and
    one how many connections past the cap (``cap``) were answered busy.
    """

    log = Logger(namespace="antenna_tw.intake.connections")

    connections: Callable[[], Iterable[Watched]] = attr.ib()
    clock: IReactorTime = attr.ib()
    header_timeout: float = attr.ib(kw_only=True)
    min_body_rate: int = attr.ib(kw_only=True)
    body_rate_grace: float = attr.ib(kw_only=True)
    cap: int = attr.ib(default=0, kw_only=True)
    #: Connections answered busy past the cap since the last tick.
    turned_away: int = attr.ib(default=0, init=False)
    _loop: task.LoopingCall | None = attr.ib(default=None, init=False)

    def start(self) -> None:
        """Tick once a second from now on."""
        if self._loop is None:
            loop = self._loop = task.LoopingCall(self.tick)
            loop.clock = self.clock
            loop.start(TICK_SECONDS, now=False)

    def stop(self) -> None:
        """Stop ticking; the connections turned away since the last tick are logged now."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        self._log_turned_away()

    def tick(self) -> None:
        """Close every connection past a deadline now."""
        now = self.clock.seconds()
        slow_heads: list[Watched] = []
        slow_bodies: list[Watched] = []
        header_timeout = self.header_timeout
        rate, grace = self.min_body_rate, self.body_rate_grace
        for connection in self.connections():
            head_since = connection.head_since
            if head_since is not None:
                if header_timeout > 0 and now - head_since > header_timeout:
                    slow_heads.append(connection)
                continue
            body_since = connection.body_since
            if body_since is not None and rate > 0:
                elapsed = now - body_since
                if elapsed > grace and connection.body_bytes < rate * elapsed:
                    slow_bodies.append(connection)
        # Closed after the walk: closing changes the set being walked.
        for connection in slow_heads + slow_bodies:
            connection.close_now()
        if slow_heads or slow_bodies:
            self.log.info("closed {heads} connections past REQUEST_HEADER_TIMEOUT and {bodies} "
                          "under REQUEST_MIN_BODY_RATE",
                          heads=len(slow_heads), bodies=len(slow_bodies))
        self._log_turned_away()

    def _log_turned_away(self) -> None:
        if self.turned_away:
            self.log.warn("answered {count} connections busy: MAX_CONNECTIONS ({cap}) reached",
                          count=self.turned_away, cap=self.cap)
            self.turned_away = 0
