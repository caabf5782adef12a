"""
Reading uploads as they arrive: a twisted.web Request and Site for /submit.

``CrashRequest`` feeds each body chunk to an ``UploadReader`` instead of
buffering the body, so memory holds the dumps and nothing else. Every
request is read this way, whatever its method and path: the routing
(``submit.SubmitResource``, then klein) decides afterwards what reaches
/submit, and no body is ever buffered whole. Oversized bodies are answered 413 at once and the rest is
read and dropped for a bounded time, so a client that is still sending can
read the answer (nginx's lingering close).
"""

from __future__ import annotations

import io

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.protocols import basic
from twisted.web import http, server
from zope.interface import implementer

from antenna_tw import metricnames
from antenna_tw.intake import heap
from antenna_tw.intake.payload import MalformedCrashReport, UploadReader

TOO_LARGE_BODY = b"Discarded=too_large"
BUSY_BODY = b"Discarded=busy"
RETRY_AFTER_SECONDS = b"60"
UPLOAD_READ_SIZE = 256 * 1024
# Body bytes after a header block, in the same read, past which the block is
# parsed on its own (CrashChannel.dataReceived).
HEAD_SPLIT_MIN = 1024


def write_answer(request, code, body, content_type=b"text/plain; charset=utf-8", headers=()):
    """Set status and headers for a complete answer with a Content-Length; return the body."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    for name, value in headers:
        request.setHeader(name, value)
    return body


class CrashRequest(server.Request):
    """A Request that parses its body as an upload while it arrives."""

    upload = None  # the UploadReader while the body arrives
    arrived = None  # reactor time when the headers were complete
    answered_early = False
    crash_report = None  # the parsed CrashReport once the body is complete
    malformed = None  # or the MalformedCrashReport that refused it
    body_cut_short = False  # the client stopped sending before the body's end
    held = 0  # bytes of this upload counted in its site's inflight_bytes
    log = Logger()

    @property
    def awaiting_body(self):
        """The headers are in and the body is still arriving."""
        return self.upload is not None and self.upload is not _Finished

    def gotLength(self, length):
        # Werkzeug routes "//submit" and "/%73ubmit" to /submit too, so the
        # body is read as an upload whatever the path says; other routes
        # ignore the result.
        site = self._site = self.channel.site
        self.arrived = site.clock.seconds()
        self.content = io.BytesIO()  # stays empty: the body goes to the reader
        # Fewer, larger reads: each read costs a trip through the HTTP parser.
        self.channel.transport.bufferSize = UPLOAD_READ_SIZE
        headers = self.requestHeaders
        limits = site.limits
        self.upload = UploadReader(
            _header(headers, b"content-type"),
            _header(headers, b"content-encoding"),
            length,
            max_payload_size=limits.max_payload_size,
            max_decompressed_size=limits.max_decompressed_size,
            max_parts=limits.max_parts,
        )
        if self.upload.too_large:
            self._answer_too_large()

    def handleContentChunk(self, data):
        upload = self.upload
        upload.feed(data)
        if self.answered_early:
            return
        if upload.too_large:
            self._answer_too_large()
        else:
            self._count_held(upload.held_bytes)

    def _count_held(self, held):
        """
        Count what this upload holds against MAX_INFLIGHT_BYTES, shared by
        every upload the process is receiving; past it, while other uploads
        hold bytes too, this one is answered busy at once. A lone upload is
        bounded by MAX_DECOMPRESSED_SIZE alone.
        """
        site = self._site
        site.inflight_bytes += held - self.held
        self.held = held
        if site.inflight_bytes > site.limits.max_inflight_bytes and site.inflight_bytes > held:
            self._answer_busy()

    def _release_held(self):
        if self.held:
            self._site.inflight_bytes -= self.held
            self.held = 0

    def _let_go_of_upload(self):
        """Drop what a refused upload holds, and give a large one's memory back."""
        self.upload.abandon()
        self._release_held()
        if self.upload.dropped_bytes >= heap.TRIM_AFTER_BYTES:
            self._site.free_memory()

    def requestReceived(self, command, path, version):
        if self.answered_early:
            # The answer is out and the body is drained: close the connection.
            self._cancel_linger()
            self.channel.transport.loseConnection()
            return
        try:
            self.crash_report = self.upload.finish(complete=not self.body_cut_short)
        except MalformedCrashReport as error:
            self.malformed = error.with_traceback(None)
        self.upload = _Finished
        super().requestReceived(command, path, version)

    def _answer_too_large(self):
        """413 now, then drop what the client still sends for a bounded time."""
        self._let_go_of_upload()
        self._site.metrics.incr(metricnames.MALFORMED, tags=["reason:too_large"])
        self._answer_early(b"413 Payload Too Large", TOO_LARGE_BODY)

    def _answer_busy(self):
        """503 busy now: the uploads in flight hold too much memory."""
        site = self._site
        self.log.warn("upload answered busy: uploads in flight hold {held} bytes, over "
                      "MAX_INFLIGHT_BYTES", held=site.inflight_bytes)
        self._let_go_of_upload()
        site.metrics.incr(metricnames.BUSY)
        self._answer_early(b"503 Service Unavailable", BUSY_BODY,
                           b"Retry-After: %s\r\n" % RETRY_AFTER_SECONDS)

    def _answer_early(self, status, body, extra_headers=b""):
        """Answer before the body is in, then drop what the client still sends for a bounded time."""
        self.answered_early = True
        # Twisted would otherwise send "100 Continue" after our answer.
        self.requestHeaders.removeHeader(b"expect")
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 %s\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n%sConnection: close\r\n\r\n%s"
            % (status, len(body), extra_headers, body)
        )
        self._linger = self._site.clock.callLater(
            self._site.linger_seconds, transport.abortConnection
        )

    def _cancel_linger(self):
        linger = getattr(self, "_linger", None)
        if linger is not None and linger.active():
            linger.cancel()

    def finish(self):
        self._drop_crash_report()
        self._release_held()
        return super().finish()

    def connectionLost(self, reason):
        self._cancel_linger()
        self._drop_crash_report()
        self._release_held()
        super().connectionLost(reason)

    def _drop_crash_report(self):
        # The /submit handler took the report before its first await. klein
        # leaves every request it routes in a reference cycle (its render
        # closures), so whatever such a request still holds is freed by a
        # cyclic garbage collection, which under load comes after hundreds
        # of requests: tens of MB of dumps per worker (docs/performance.rst,
        # "Process memory at idle"). POST /submit itself skips klein (SubmitResource)
        # and is freed at once; its other spellings (//submit) are not.
        self.crash_report = None

    def processingFailed(self, reason):
        """Log an unhandled error and answer a plain 500 without details."""
        self.log.failure("unhandled error in {method} {path}", reason,
                         method=self.method.decode("latin-1"), path=self.path.decode("latin-1"))
        if not self.startedWriting and not self.finished:
            self.write(write_answer(self, 500, b"Internal Server Error"))
        if not self.finished:
            self.finish()
        return reason


class _FinishedUpload:
    """Stands in for the reader once the body is judged, so chunks can't sneak in."""

    def feed(self, data):
        pass

    too_large = False


_Finished = _FinishedUpload()


def _header(headers, name):
    values = headers.getRawHeaders(name)
    if not values:
        return None
    return values[0].decode("latin-1")


@implementer(IHalfCloseableProtocol)
class CrashChannel(http.HTTPChannel):
    """
    An HTTPChannel that hears a client shut down its sending side (a TCP
    half-close) instead of taking it for a lost connection, so the client
    still reads an answer: the usual one to a complete request, and 400
    ``malformed_invalid_payload_structure`` to a body that ended before its
    declared end (docs/intake.rst, *The order of checks*, row 9). The connection closes after it.
    """

    def dataReceived(self, data):
        # LineReceiver takes one line at a time with split(b"\r\n", 1),
        # copying everything after the line each time: a read that brings
        # the headers and 64 KiB of body copied the body once per header
        # line. Give it the header block alone, then the body. (Any split
        # point gives the same parse: LineReceiver is a streaming parser.)
        if self.line_mode and not self._busyReceiving:
            end = data.find(b"\r\n\r\n")
            if end >= 0 and len(data) - end > HEAD_SPLIT_MIN:
                end += 4
                why = basic.LineReceiver.dataReceived(self, data[:end])
                if why or self.transport.disconnecting:
                    return why
                # Looked up again: the channel may have replaced it to drop
                # what a non-persistent client sends after its request.
                return self.dataReceived(data[end:])
        return super().dataReceived(data)

    def readConnectionLost(self):
        self.persistent = False  # requestDone closes the connection after the answer
        if self._handlingRequest:
            return  # a complete request is being answered
        request = self.requests[-1] if self.requests else None
        if request is not None and getattr(request, "awaiting_body", False):
            request.body_cut_short = True
            self.allContentReceived()
        else:
            self.loseConnection()  # idle, or the headers were not complete

    def writeConnectionLost(self):
        self.loseConnection()


class CrashSite(server.Site):
    """
    A Site for the collector: streaming uploads, no form parsing, no
    per-request access log (the crash lifecycle lines say what happened).
    Its channels are plain HTTP/1.x ``CrashChannel`` objects (no TLS, so
    no HTTP/2 negotiation wrapper).
    """

    protocol = CrashChannel

    def __init__(self, resource, *, limits, metrics, clock, linger_seconds=30.0,
                 free_memory=None):
        super().__init__(
            resource,
            requestFactory=CrashRequest,
            parsePOSTFormSubmission=False,
            timeout=limits.request_timeout or None,
        )
        self.limits = limits
        self.inflight_bytes = 0  # held by the uploads being received (CrashRequest.held)
        self.metrics = metrics
        self.clock = clock
        self.linger_seconds = linger_seconds
        # Called after a large upload is refused part way (antenna_tw.intake.heap).
        self.free_memory = free_memory or heap.find_malloc_trim()
        self.displayTracebacks = False

    def log(self, request):
        pass
