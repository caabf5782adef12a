"""
Every answer the collector gives, from an outcome to status, headers and body.

An ``Answer`` is built by one of the functions below (a crash id, a
``Discarded=`` reason, busy, too large, a plain error, JSON) and written
either through the request (``write``) or, before the request is complete,
straight on the transport (``raw``: the early 413 and busy answers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import attr
from twisted.web.iweb import IRequest

TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"
#: Seconds a client is asked to wait after a busy answer.
RETRY_AFTER_SECONDS = b"60"
#: Status for a ``Discarded=`` reason; any other reason is 400.
STATUS_FOR_REASON = {"too_large": 413, "unauthorized_uuid": 401}
# The status lines of the raw answers, as they have always been written
# (Twisted's own phrase for 413 is "Request Entity Too Large").
_RAW_STATUS = {413: b"413 Payload Too Large", 503: b"503 Service Unavailable"}

Header = tuple[bytes, bytes]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Answer:
    """A complete answer: status code, body, content type and any extra headers."""

    code: int
    body: bytes
    content_type: bytes = TEXT
    headers: tuple[Header, ...] = ()


def crash_id(prefix: str, crash_id: str) -> Answer:
    """200 ``CrashID=<prefix><id>``: the crash is accepted (or fake-accepted)."""
    return Answer(200, f"CrashID={prefix}{crash_id}\n".encode())


def discarded(reason: str, code: int | None = None,
              headers: Sequence[Header] = ()) -> Answer:
    """``Discarded=<reason>``; the status follows the reason unless given."""
    if code is None:
        code = STATUS_FOR_REASON.get(reason, 400)
    return Answer(code, b"Discarded=" + reason.encode("ascii"), headers=tuple(headers))


def busy() -> Answer:
    """503 ``Discarded=busy`` with Retry-After: come back later."""
    return discarded("busy", code=503, headers=[(b"Retry-After", RETRY_AFTER_SECONDS)])


def too_large() -> Answer:
    """413 ``Discarded=too_large``: the upload passes a size limit."""
    return discarded("too_large")


def plain_error(code: int, text: bytes) -> Answer:
    """A plain-text error without details (404, 405, 500)."""
    return Answer(code, text)


NOT_FOUND = plain_error(404, b"Not Found")
METHOD_NOT_ALLOWED = plain_error(405, b"Method Not Allowed")
INTERNAL_ERROR = plain_error(500, b"Internal Server Error")


def json_answer(code: int, value: object) -> Answer:
    """``value`` as JSON, keys sorted."""
    return Answer(code, json.dumps(value, sort_keys=True).encode("utf-8"), JSON)


def empty_json(code: int = 200) -> Answer:
    """An empty body said to be JSON (``/__lbheartbeat__``)."""
    return Answer(code, b"", JSON)


def write(request: IRequest, answer: Answer) -> bytes:
    """Set the status and headers of ``answer`` on ``request``; return its body to write."""
    request.setResponseCode(answer.code)
    request.setHeader(b"Content-Type", answer.content_type)
    request.setHeader(b"Content-Length", b"%d" % len(answer.body))
    for name, value in answer.headers:
        request.setHeader(name, value)
    return answer.body


def raw(answer: Answer) -> bytes:
    """
    ``answer`` as the bytes of a whole HTTP/1.1 response that closes the
    connection, for an answer written on the transport before the request
    is complete (twisted.web would otherwise wait for the body).
    """
    extra = b"".join(b"%s: %s\r\n" % header for header in answer.headers)
    return (b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%sConnection: close"
            b"\r\n\r\n%s" % (_RAW_STATUS[answer.code], answer.content_type, len(answer.body),
                              extra, answer.body))
