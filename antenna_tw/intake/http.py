"""
Reading uploads as they arrive: a twisted.web Request and Site for /submit.

``CrashRequest`` feeds each body chunk of a request whose route takes a body
(``CrashSite.takes_body``: POST /submit and its spellings) to an
``UploadReader`` instead of buffering the body, so memory holds the dumps and
nothing else; the handler takes the result as one ``Upload``. Other requests'
bodies are counted and dropped unparsed. No body is ever buffered whole.
Oversized bodies are answered 413 at once and the rest is read and dropped
for a bounded time, so a client that is still sending can read the answer
(nginx's lingering close).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import attr
from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import connectionDone
from twisted.protocols import basic
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import Resource
from zope.interface import implementer

from antenna_tw import answers, metricnames
from antenna_tw.adapters.twisted import (
    channel_is_handling_request,
    channel_is_receiving,
    request_line,
)
from antenna_tw.admission import Admission, Hold
from antenna_tw.intake import heap
from antenna_tw.intake.connections import (
    BusyProtocol,
    ConnectionWatch,
    Watched,
    connection_cap,
    descriptor_limit,
)
from antenna_tw.intake.payload import CrashReport, MalformedCrashReport, UploadReader
from antenna_tw.logs import LineBudget, Logger, address_text
from antenna_tw.pooljobs import Idle

UPLOAD_READ_SIZE = 256 * 1024
# Body bytes after a header block, in the same read, past which the block is
# parsed on its own (CrashChannel.dataReceived).
HEAD_SPLIT_MIN = 1024


if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
    from twisted.internet.protocol import Protocol as TwistedProtocol

    from antenna_tw.config import IntakeSettings
    from antenna_tw.metrics import Metrics

    # What intake uses of a connection's transport: ITCPTransport's methods
    # and attributes of twisted's TCP connections that it does not declare.
    class Connection(Protocol):
        """A TCP connection's transport, as intake drives it."""

        bufferSize: int
        disconnecting: bool

        def write(self, data: bytes) -> None:
            """Send ``data``."""

        def loseConnection(self) -> None:
            """Close once what was written is sent."""

        def abortConnection(self) -> None:
            """Close at once."""


def _connection(channel: http.HTTPChannel) -> Connection:
    return cast("Connection", channel.transport)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Upload:
    """
    What a request's body came to, for its handler: the parsed ``report``,
    or the ``Discarded=`` reason it was ``refused`` for; and ``arrived``,
    the reactor time when its headers were complete.
    """

    arrived: float
    report: CrashReport | None = None
    refused: str | None = None


class _Drain:
    """Counts and drops the body of a request whose route takes none, up to MAX_PAYLOAD_SIZE."""

    held_bytes = 0
    dropped_bytes = 0

    def __init__(self, declared_length: int | None, max_payload_size: int) -> None:
        self.declared_length = declared_length
        self.max_payload_size = max_payload_size
        self.wire_bytes = 0

    @property
    def too_large(self) -> bool:
        """True once the wire size passes the limit (declared or counted)."""
        return (self.declared_length is not None
                and self.declared_length > self.max_payload_size
                ) or self.wire_bytes > self.max_payload_size

    def feed(self, data: bytes) -> None:
        self.wire_bytes += len(data)

    def abandon(self) -> None:
        pass


class _FinishedUpload:
    """Stands in for the reader once the body is judged, so chunks can't sneak in."""

    held_bytes = 0
    dropped_bytes = 0
    too_large = False

    def feed(self, data: bytes) -> None:
        pass

    def abandon(self) -> None:
        pass


_Finished = _FinishedUpload()


class CrashRequest(server.Request):
    """A Request that reads its body as it arrives: parsed as an upload, or dropped."""

    channel: CrashChannel
    _reader: UploadReader | _Drain | _FinishedUpload | None = None
    _upload: Upload | None = None  # the parsed body until the handler takes it
    _hold: Hold | None = None  # this upload's share of the in-flight budget
    _linger: IDelayedCall | None = None
    answered_early = False
    body_cut_short = False  # the client stopped sending before the body's end
    # The namespace this class's log lines have always had (mozlog's Type).
    log = Logger(namespace="antenna_tw.intake.CrashRequest")

    @property
    def awaiting_body(self) -> bool:
        """The headers are in and the body is still arriving."""
        return self._reader is not None and self._reader is not _Finished

    def take_upload(self) -> Upload:
        """
        The parsed body, once: the request lets go of it, so that a request
        that outlives its answer (klein keeps the requests it routes in a
        reference cycle) does not keep the dumps too.
        """
        upload, self._upload = self._upload, None
        if upload is None:
            raise RuntimeError("this request's body was not read as an upload")
        return upload

    def gotLength(self, length: int | None) -> None:
        site = self._site = self.channel.site
        self._arrived = site.clock.seconds()
        channel = self.channel
        if length != 0:  # the body's average rate is checked from now (ConnectionWatch)
            channel.body_since, channel.body_bytes = self._arrived, 0
        self.content = io.BytesIO()  # stays empty: the body goes to the reader
        # Fewer, larger reads: each read costs a trip through the HTTP parser.
        _connection(self.channel).bufferSize = UPLOAD_READ_SIZE
        limits = site.limits
        self._hold = site.admission.hold()
        if site.takes_body(*request_line(self.channel)):
            headers = self.requestHeaders
            self._reader = UploadReader(
                _header(headers, b"content-type"),
                _header(headers, b"content-encoding"),
                length,
                max_payload_size=limits.max_payload_size,
                max_decompressed_size=limits.max_decompressed_size,
                max_parts=limits.max_parts,
            )
        else:
            self._reader = _Drain(length, limits.max_payload_size)
        if self._reader.too_large:
            self._answer_too_large()

    def handleContentChunk(self, data: bytes) -> None:
        reader = self._reader
        assert reader is not None and self._hold is not None  # set by gotLength
        self.channel.body_bytes += len(data)
        reader.feed(data)
        if self.answered_early:
            return
        if reader.too_large:
            self._answer_too_large()
        elif self._hold.update(reader.held_bytes):
            # Past MAX_INFLIGHT_BYTES while other uploads hold bytes too.
            self._answer_busy()

    def _release_held(self) -> None:
        if self._hold is not None:
            self._hold.release()

    def _let_go_of_upload(self) -> None:
        """Drop what a refused upload holds, and give a large one's memory back."""
        reader = self._reader
        assert reader is not None
        reader.abandon()
        self._release_held()
        if reader.dropped_bytes >= heap.TRIM_AFTER_BYTES:
            self._site.free_memory()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.channel.body_since = None
        if self.answered_early:
            # The answer is out and the body is drained: close the connection.
            self._cancel_linger()
            _connection(self.channel).loseConnection()
            return
        reader = self._reader
        if isinstance(reader, UploadReader):
            try:
                report = reader.finish(complete=not self.body_cut_short)
            except MalformedCrashReport as error:
                self._upload = Upload(self._arrived, refused=error.reason)
            else:
                self._upload = Upload(self._arrived, report=report)
        self._reader = _Finished
        super().requestReceived(command, path, version)

    def _answer_too_large(self) -> None:
        """413 now, then drop what the client still sends for a bounded time."""
        site = self._site
        if site.refusals.allows():
            self.log.info("refused: too_large, from {client}: the body is over "
                          "MAX_PAYLOAD_SIZE ({limit} bytes); answered 413",
                          client=address_text(self.getClientAddress()),
                          limit=site.limits.max_payload_size)
        self._let_go_of_upload()
        site.metrics.incr(metricnames.MALFORMED, tags=["reason:too_large"])
        self._answer_early(answers.too_large())

    def _answer_busy(self) -> None:
        """503 busy now: the uploads in flight hold too much memory."""
        site = self._site
        if site.refusals.allows():
            self.log.warn("upload answered busy: uploads in flight hold {held} bytes, over "
                          "MAX_INFLIGHT_BYTES; from {client}", held=site.admission.inflight_bytes,
                          client=address_text(self.getClientAddress()))
        self._let_go_of_upload()
        site.metrics.incr(metricnames.BUSY)
        self._answer_early(answers.busy())

    def refuse_stopping(self) -> None:
        """503 busy now: the upload is still arriving when the shutdown's grace ends."""
        self._let_go_of_upload()
        self._site.metrics.incr(metricnames.BUSY)
        self._answer_early(answers.busy())

    def _answer_early(self, answer: answers.Answer) -> None:
        """Answer before the body is in, then drop what the client sends for a bounded time."""
        self.answered_early = True
        self.channel.body_since = None  # what is left is bounded by the linger instead
        # Twisted would otherwise send "100 Continue" after our answer.
        self.requestHeaders.removeHeader(b"expect")
        transport = _connection(self.channel)
        transport.write(answers.raw(answer))
        self._linger = self._site.clock.callLater(
            self._site.linger_seconds, transport.abortConnection)

    def _cancel_linger(self) -> None:
        linger = self._linger
        if linger is not None and linger.active():
            linger.cancel()

    def finish(self) -> None:
        self._upload = None
        self._release_held()
        return super().finish()

    def connectionLost(self, reason: Failure) -> None:
        self._cancel_linger()
        # klein leaves every request it routes in a reference cycle (its
        # render closures), so whatever such a request still holds is freed
        # by a cyclic garbage collection, which under load comes after
        # hundreds of requests: tens of MB of dumps per worker
        # (docs/performance.rst, "Process memory at idle"). POST /submit
        # itself skips klein (SubmitResource) and is freed at once; its other
        # spellings (//submit) are not.
        self._upload = None
        self._release_held()
        super().connectionLost(reason)

    def processingFailed(self, reason: Failure) -> Failure:
        """Log an unhandled error and answer a plain 500 without details."""
        self.log.failure("unhandled error in {method} {path}", reason,
                         method=self.method.decode("latin-1"), path=self.path.decode("latin-1"))
        if not self.startedWriting and not self.finished:
            self.write(answers.write(self, answers.INTERNAL_ERROR))
        if not self.finished:
            self.finish()
        return reason


_log = Logger(namespace="antenna_tw.intake.CrashSite")


def _header(headers: http.Headers, name: bytes) -> str | None:
    values = headers.getRawHeaders(name)
    if not values:
        return None
    return values[0].decode("latin-1")


@implementer(IHalfCloseableProtocol)
class CrashChannel(http.HTTPChannel, Watched):
    """
    An HTTPChannel that hears a client shut down its sending side (a TCP
    half-close) instead of taking it for a lost connection, so the client
    still reads an answer: the usual one to a complete request, and 400
    ``malformed_invalid_payload_structure`` to a body that ended before its
    declared end (docs/intake.rst, *The order of checks*, row 9). The connection closes after it.

    The site's ``ConnectionWatch`` reads ``head_since``, ``body_since`` and
    ``body_bytes`` (``Watched``) to close it past ``REQUEST_HEADER_TIMEOUT`` or under
    ``REQUEST_MIN_BODY_RATE``.
    """

    site: CrashSite
    _between_requests = True  # no request line has arrived since the last request's end

    def connectionMade(self) -> None:
        site = self.site
        self.head_since = site.clock.seconds()
        site.channels.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.channel_closed(self)
        self.head_since = self.body_since = None
        super().connectionLost(reason)

    def allHeadersReceived(self) -> None:
        self.head_since = None
        self._between_requests = False
        super().allHeadersReceived()

    def requestDone(self, request: http.Request) -> None:
        self._between_requests = True
        if self.site.draining:
            self.persistent = False  # stopping: the connection closes after this answer
        super().requestDone(request)

    def close_now(self) -> None:
        """Close at once (a missed deadline): nothing of the request is kept."""
        self.head_since = self.body_since = None
        _connection(self).abortConnection()

    def dataReceived(self, data: bytes) -> Any:
        if self.head_since is None and self._between_requests:
            # The first byte of a later request: its header deadline starts.
            self.head_since = self.site.clock.seconds()
        # LineReceiver takes one line at a time with split(b"\r\n", 1),
        # copying everything after the line each time: a read that brings
        # the headers and 64 KiB of body copied the body once per header
        # line. Give it the header block alone, then the body. (Any split
        # point gives the same parse: LineReceiver is a streaming parser.)
        if self.line_mode and not channel_is_receiving(self):
            end = data.find(b"\r\n\r\n")
            if end >= 0 and len(data) - end > HEAD_SPLIT_MIN:
                end += 4
                why = basic.LineReceiver.dataReceived(self, data[:end])
                if why or _connection(self).disconnecting:
                    return why
                # Looked up again: the channel may have replaced it to drop
                # what a non-persistent client sends after its request.
                return self.dataReceived(data[end:])
        return super().dataReceived(data)

    def readConnectionLost(self) -> None:
        self.persistent = False  # requestDone closes the connection after the answer
        if channel_is_handling_request(self):
            return  # a complete request is being answered
        request = self.requests[-1] if self.requests else None
        if request is not None and getattr(request, "awaiting_body", False):
            request.body_cut_short = True
            self.allContentReceived()
        else:
            self.loseConnection()  # idle, or the headers were not complete

    def writeConnectionLost(self) -> None:
        self.loseConnection()


class CrashSite(server.Site):
    """
    A Site for the collector: streaming uploads, no form parsing, no
    per-request access log (the crash lifecycle lines say what happened).
    Its channels are plain HTTP/1.x ``CrashChannel`` objects (no TLS, so
    no HTTP/2 negotiation wrapper). ``takes_body(method, raw_path)`` says
    which requests' bodies are read as uploads.
    """

    protocol = CrashChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource, *, limits: IntakeSettings, metrics: Metrics,
                 clock: IReactorTime, admission: Admission,
                 takes_body: Callable[[bytes, bytes], bool],
                 linger_seconds: float = 30.0,
                 free_memory: Callable[[], object] | None = None,
                 max_connections: int | None = None,
                 refusals: LineBudget | None = None) -> None:
        super().__init__(
            resource,
            requestFactory=CrashRequest,
            parsePOSTFormSubmission=False,
            timeout=limits.request_timeout or None,
        )
        self.limits = limits
        self.admission = admission
        self.takes_body = takes_body
        self.metrics = metrics
        self.clock = clock
        self.linger_seconds = linger_seconds
        #: How many refusal lines may be logged (LOGGING_REFUSALS_PER_SECOND).
        self.refusals = refusals or LineBudget(clock, 50.0)
        # Called after a large upload is refused part way (antenna_tw.intake.heap).
        self.free_memory = free_memory or heap.find_malloc_trim()
        self.displayTracebacks = False
        #: The open connections, for the cap, the deadlines and the shutdown.
        self.channels: set[CrashChannel] = set()
        #: From SIGTERM on (``drain``): no connection starts another request.
        self.draining = False
        self._all_closed = Idle()
        #: How many of them this process serves at once (MAX_CONNECTIONS).
        self.max_connections = max_connections or connection_cap(
            limits.max_connections, descriptor_limit())
        self.watch = ConnectionWatch(
            lambda: self.channels, clock, header_timeout=limits.header_timeout,
            min_body_rate=limits.min_body_rate, body_rate_grace=limits.body_rate_grace,
            cap=self.max_connections)

    # HTTPFactory narrows buildProtocol's return to its channel; IProtocolFactory,
    # which the reactor calls it through, allows any protocol.
    def buildProtocol(  # type: ignore[override]
            self, addr: IAddress | None) -> TwistedProtocol | None:
        """A channel, or past the cap a ``BusyProtocol`` that answers busy and closes."""
        if len(self.channels) >= self.max_connections:
            self.watch.turned_away += 1
            self.metrics.incr(metricnames.BUSY)
            if self.refusals.allows():
                _log.warn("connection answered busy: {open} connections open, the most this "
                          "process serves (MAX_CONNECTIONS); from {client}",
                          open=len(self.channels), client=address_text(addr))
            return BusyProtocol(self.clock)
        return super().buildProtocol(addr)

    def startFactory(self) -> None:
        super().startFactory()
        self.watch.start()

    def stopFactory(self) -> None:
        self.watch.stop()
        super().stopFactory()

    def log(self, request: http.Request) -> None:
        pass

    # -- shutdown (docs/spool.rst, *Shutdown*) ------------------------------

    def drain(self) -> defer.Deferred[None]:
        """
        Take no more requests (SIGTERM, the port closed): an idle connection
        closes now, as does one answered early (413, busy); one whose
        request is in progress closes once it is answered. A Deferred that
        fires once every connection has closed.
        """
        self.draining = True
        in_progress = 0
        for channel in list(self.channels):
            request = channel.requests[-1] if channel.requests else None
            if request is None:
                channel.loseConnection()  # idle, or its request line not yet whole
            elif request.answered_early:
                channel.close_now()
            else:
                in_progress += 1
                if not request.startedWriting:
                    request.setHeader(b"connection", b"close")
        if in_progress:
            _log.info("stopping: waiting for {count} requests in progress", count=in_progress)
        return self._all_closed.wait(bool(self.channels))

    def cut_off(self, linger: float) -> defer.Deferred[None]:
        """
        The end of the shutdown's grace: an upload still arriving is answered
        503 busy now, and its connection, like one whose headers are not all
        in, is aborted ``linger`` seconds later (time for the client to read
        the answer). A request being answered (its spool write) is left to
        finish. A Deferred that fires once every connection has closed, or
        after ``linger``.
        """
        cut: list[CrashChannel] = []
        refused = 0
        for channel in list(self.channels):
            if channel_is_handling_request(channel):
                continue
            request = channel.requests[-1] if channel.requests else None
            if request is not None and request.awaiting_body and not request.answered_early:
                request.refuse_stopping()
                refused += 1
            cut.append(channel)
        if cut:
            _log.warn("stopping: {refused} uploads still arriving answered busy, {count} "
                      "connections closed", refused=refused, count=len(cut))

        def abort(result: object, timeout: float) -> None:
            for channel in cut:
                if channel in self.channels:
                    channel.close_now()

        closed = self._all_closed.wait(bool(self.channels))
        return closed.addTimeout(linger, self.clock, onTimeoutCancel=abort)

    def channel_closed(self, channel: CrashChannel) -> None:
        """``channel``'s connection is gone."""
        self.channels.discard(channel)
        if self.draining and not self.channels:
            for closed in self._all_closed.take():
                closed.callback(None)  # one that timed out ignores it
