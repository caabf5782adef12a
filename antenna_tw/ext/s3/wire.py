"""
The S3 client's HTTP/1.1: one request at a time per connection, kept alive
in a small pool, answers parsed by ``httptools`` (llhttp, in C).

The S3 exchange needs little of an HTTP client: a request whose body is
already in memory and whose headers are already signed, one endpoint, and
the status, one header and a short body of the answer. ``HTTPConnection``
sends the request head and the body in one ``writeSequence`` and hands
every byte of the answer to llhttp, which frames it (Content-Length,
chunked, 204 and 304, keep-alive or not); ``ConnectionPool`` keeps the idle
connections to each endpoint. Against Twisted's ``Agent`` and
``HTTPConnectionPool`` this skips the per-request ``Headers`` objects, the
body producer, the request and response state machines and their
Deferreds (docs/s3.rst, *Throughput*, says what it saved, measured).

A connection is used again only after an answer llhttp calls complete and
keep-alive. It is closed after ``Connection: close``, an error, a timeout
or cancel (which abort it: the rest of the answer is never read), a HEAD
(llhttp cannot be told that a HEAD's answer has no body), or
``idle_seconds`` unused. A request that finds its reused connection closed
by the server before any byte of the answer is sent once more on a new
connection, at once (every S3 request is idempotent): servers close idle
connections when they like.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from urllib.parse import SplitResult, urlsplit

import attr
from httptools import HttpParserError, HttpResponseParser
from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from antenna_tw.adapters.twisted import send_in_one_turn

DEFAULT_PORTS = {"http": 80, "https": 443}


class BadAnswer(Exception):
    """The server's bytes are not an HTTP/1.1 answer (llhttp refused them)."""


@attr.s(frozen=True, slots=True)
class Response:
    """A whole answer: status, reason phrase, headers (names lower-cased), body."""

    status: int = attr.ib()
    phrase: str = attr.ib()
    headers: dict[bytes, bytes] = attr.ib(repr=False)
    body: bytes = attr.ib(repr=False)


class IHTTP(Interface):
    """What ``S3Connection`` asks of its HTTP client."""

    def request(method: str, url: str, body: bytes,  # noqa: N805 (zope interface)
                headers: dict[str, str]) -> Deferred[Response]:
        """
        Send ``method`` to ``url`` (percent-encoded) with ``headers`` (Host
        and Content-Length are added) and ``body``; a Deferred of the whole
        answer. Cancelling it aborts the request.
        """

    def close() -> Deferred[None]:
        """Close the idle connections."""


def request_head(method: str, path: str, host: str, headers: dict[str, str],
                 body_length: int) -> bytes:
    """The request line and headers, ending with the empty line."""
    lines = [f"{method} {path} HTTP/1.1\r\n", f"Host: {host}\r\n"]
    if body_length or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {body_length}\r\n")
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    lines.append("\r\n")
    head = "".join(lines)
    if head.count("\n") != len(lines) or head.count("\r") != len(lines):
        # A line break in a header would end the head early (request splitting).
        raise ValueError("a request line or header holds a line break")
    return head.encode("latin-1")


class HTTPConnection(Protocol):
    """
    One client connection: ``send`` writes a request and returns a Deferred
    of its answer; one request at a time. ``reusable`` says whether the
    connection may carry another request; ``on_lost`` is called when it
    closes.
    """

    def __init__(self, send_limit: int = 0) -> None:
        self.send_limit = send_limit
        self.reusable = False
        self.heard = False  # any byte of the current answer
        self.on_lost: Callable[[HTTPConnection], None] | None = None
        self._waiting: Deferred[Response] | None = None
        self._head_only = False
        self._parser = HttpResponseParser(self)
        self._phrase = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._framed = False  # the answer names its length (Content-Length or chunked)
        self._headers_done = False
        self._done = False
        self._keep_alive = False

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        """Let a whole body go out in one reactor turn when ``send_limit`` is set."""
        self.reusable = True
        if self.send_limit:
            send_in_one_turn(self.transport, self.send_limit)

    def send(self, head: bytes, body: bytes, head_only: bool) -> Deferred[Response]:
        """Write the request; a Deferred of its answer (cancel: abort the connection)."""
        if self._waiting is not None:
            raise RuntimeError("one request at a time")
        if not self.reusable:  # closed under us: a transport error, retried
            return defer.fail(error.ConnectionLost("the connection is closed"))
        self.reusable = False
        self.heard = self._framed = self._headers_done = self._done = False
        self._phrase, self._headers, self._body = b"", {}, []
        self._head_only = head_only
        waiting: Deferred[Response] = Deferred(self._cancel)
        self._waiting = waiting
        assert self.transport is not None
        if body:
            self.transport.writeSequence((head, body))
        else:
            self.transport.write(head)
        return waiting

    def _cancel(self, waiting: Deferred[Response]) -> None:
        self._waiting = None
        self._abort()

    def close(self) -> None:
        """Close the connection once what it was given is sent."""
        self.reusable = False
        if self.transport is not None:
            self.transport.loseConnection()

    def _abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]  # ITCPTransport

    # -- llhttp's callbacks (``HttpResponseParser`` calls them by these names)

    def on_status(self, status: bytes) -> None:
        """A piece of the reason phrase."""
        self._phrase += status

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header, whole."""
        name = name.lower()
        if name in (b"content-length", b"transfer-encoding"):
            self._framed = True
        self._headers[name] = value

    def on_headers_complete(self) -> None:
        """A HEAD's answer ends here, whatever its Content-Length says."""
        self._headers_done = True
        if self._head_only:
            self._finish(keep_alive=False)

    def on_body(self, body: bytes) -> None:
        """A piece of the body."""
        self._body.append(body)

    def on_message_complete(self) -> None:
        """The whole answer is in; an interim one (100 Continue) is skipped."""
        if 100 <= self._parser.get_status_code() < 200:
            self._phrase, self._headers, self._body = b"", {}, []
            self._framed = self._headers_done = False
        elif not self._done:
            self._finish(self._parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        self._done = True
        self._keep_alive = keep_alive

    # -- the transport's calls

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        """Parse; deliver the answer once llhttp has framed it."""
        waiting = self._waiting
        if waiting is None:
            self._abort()  # nothing was asked: a server out of step
            return
        self.heard = True
        try:
            self._parser.feed_data(data)
        except HttpParserError as failure:
            self._waiting = None
            self._abort()
            waiting.errback(BadAnswer(f"{type(failure).__name__}: {failure}"))
            return
        if self._done:
            self._deliver(waiting)

    def _deliver(self, waiting: Deferred[Response]) -> None:
        self._waiting = None
        if self._keep_alive:
            self.reusable = True
            # llhttp starts on the next answer after a complete one; a HEAD's
            # never completes for it, so its connection is not kept.
        else:
            self.close()
        waiting.callback(self._response())

    def _response(self) -> Response:
        return Response(self._parser.get_status_code(), self._phrase.decode("latin-1"),
                        self._headers, b"".join(self._body))

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        """An answer that runs to the close ends here; any other is lost."""
        self.reusable = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            if self._headers_done and not self._framed and not self._done:
                self._finish(keep_alive=False)  # the body ran to the close (HTTP/1.0 style)
            if self._done:
                waiting.callback(self._response())
            else:
                why = "" if reason.check(error.ConnectionDone, error.ConnectionLost) else (
                    f" ({type(reason.value).__name__}: {reason.value})")  # TLS refused...
                waiting.errback(error.ConnectionLost(
                    f"the connection closed before the whole answer{why}"))
        if self.on_lost is not None:
            self.on_lost(self)


class _Factory(Factory):
    """Builds ``HTTPConnection``s, quietly: no "Starting factory" line per connection."""

    noisy = False

    def __init__(self, send_limit: int) -> None:
        self.send_limit = send_limit

    def buildProtocol(self, addr: Any) -> HTTPConnection:  # noqa: N802 (Twisted's name)
        """A new connection."""
        return HTTPConnection(self.send_limit)


def endpoint_for(reactor: Any, scheme: str, host: str, port: int) -> IStreamClientEndpoint:
    """TCP to ``host``:``port``, with TLS (the system's trust roots) for https."""
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port)
    if scheme == "https":
        # Imported here: the --workers parent must not load pyOpenSSL
        # (antenna_tw/workers/footprint.py), and it imports this module.
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


@attr.s(slots=True)
class _Place:
    """Where requests go: the endpoint, the Host header, the idle connections."""

    endpoint: IStreamClientEndpoint = attr.ib()
    host: str = attr.ib()
    idle: list[tuple[HTTPConnection, float]] = attr.ib(factory=list)


def host_header(parts: SplitResult) -> str:
    """The Host header of a URL, as sent and as SigV4 signs it: no default port."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


@implementer(IHTTP)
@attr.s
class ConnectionPool:
    """
    Requests on kept-alive ``HTTPConnection``s: at most ``max_idle`` idle
    connections per endpoint, the most recently used first, none older than
    ``idle_seconds``. ``endpoint_for(reactor, scheme, host, port)`` makes
    the endpoints (tests give their own). ``send_limit``: bytes a connection
    may hand the kernel per reactor turn (0: Twisted's default, 128 KiB).
    """

    reactor: Any = attr.ib(repr=False)
    max_idle: int = attr.ib(default=2)
    idle_seconds: float = attr.ib(default=30.0)
    send_limit: int = attr.ib(default=0)
    endpoint_for: Callable[[Any, str, str, int], IStreamClientEndpoint] = attr.ib(
        default=endpoint_for, repr=False)
    _places: dict[str, _Place] = attr.ib(factory=dict, init=False, repr=False)
    _factory: _Factory = attr.ib(init=False, repr=False)

    @_factory.default
    def _make_factory(self) -> _Factory:
        return _Factory(self.send_limit)

    def _place(self, url: str) -> tuple[_Place, str]:
        parts = urlsplit(url)
        scheme, netloc, path, query = parts.scheme, parts.netloc, parts.path, parts.query
        place = self._places.get(netloc)
        if place is None:
            host = parts.hostname or ""
            endpoint = self.endpoint_for(self.reactor, scheme, host,
                                         parts.port or DEFAULT_PORTS[scheme])
            place = _Place(endpoint, host_header(parts))
            self._places[netloc] = place
        return place, (f"{path or '/'}?{query}" if query else path or "/")

    def request(self, method: str, url: str, body: bytes,
                headers: dict[str, str]) -> Deferred[Response]:
        """See ``IHTTP.request``."""
        place, target = self._place(url)
        head = request_head(method, target, place.host, headers, len(body))
        return self._send(place, head, body, method == "HEAD", fresh=False)

    def _send(self, place: _Place, head: bytes, body: bytes, head_only: bool,
              fresh: bool) -> Deferred[Response]:
        connection = None if fresh else self._idle(place)
        if connection is None:
            connecting = cast("Deferred[HTTPConnection]", place.endpoint.connect(self._factory))
            return connecting.addCallback(self._first_send, place, head, body, head_only)
        answer = connection.send(head, body, head_only)
        answer.addCallbacks(self._release, self._stale, callbackArgs=(place, connection),
                            errbackArgs=(place, connection, head, body, head_only))
        return answer

    def _first_send(self, connection: HTTPConnection, place: _Place, head: bytes, body: bytes,
                    head_only: bool) -> Deferred[Response]:
        connection.on_lost = self._forget(place)
        answer = connection.send(head, body, head_only)
        return answer.addCallback(self._release, place, connection)

    def _stale(self, failure: Failure, place: _Place, connection: HTTPConnection, head: bytes,
               body: bytes, head_only: bool) -> Deferred[Response] | Failure:
        # A reused connection the server had closed: not S3's answer, try a new one.
        if not connection.heard and failure.check(error.ConnectionLost):
            return self._send(place, head, body, head_only, fresh=True)
        return failure

    def _idle(self, place: _Place) -> HTTPConnection | None:
        idle = place.idle
        while idle:
            connection, since = idle.pop()
            if self.reactor.seconds() - since > self.idle_seconds:
                # The rest are older still.
                for old, _ in [(connection, since), *idle]:
                    old.close()
                idle.clear()
                return None
            if connection.reusable:
                return connection
        return None

    def _release(self, response: Response, place: _Place,
                 connection: HTTPConnection) -> Response:
        if connection.reusable:
            if len(place.idle) < self.max_idle:
                place.idle.append((connection, self.reactor.seconds()))
            else:
                connection.close()
        return response

    @staticmethod
    def _forget(place: _Place) -> Callable[[HTTPConnection], None]:
        def lost(connection: HTTPConnection) -> None:
            place.idle[:] = [entry for entry in place.idle if entry[0] is not connection]
        return lost

    def close(self) -> Deferred[None]:
        """Close every idle connection; a Deferred fired once they are closed."""
        closing = []
        for place in self._places.values():
            for connection, _ in place.idle:
                lost: Deferred[None] = Deferred()
                connection.on_lost = lambda _, lost=lost: lost.callback(None)
                connection.close()
                closing.append(lost)
            place.idle.clear()
        return defer.gatherResults(closing).addCallback(lambda _: None)
