"""
What the collector relies on in Twisted beyond its public API.

Each function names the private attribute it reads or sets and why; the
tests in ``tests/unit/test_adapters_twisted_*.py`` pin that behaviour.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.abstract import FileDescriptor
from twisted.web.http import HTTPChannel

# -- twisted.application: services -------------------------------------------


# -- twisted.internet: listening ports ----------------------------------------


def bound_accepts(port: Any, most: int) -> None:
    """
    Make a listening ``tcp.Port`` (or ``unix.Port``) accept at most ``most``
    connections each time the reactor finds its socket readable. Its
    ``doRead`` accepts up to ``numberAccepts`` (not in any interface), which
    it raises by 20 after every full batch; this lowers it again before each
    call. With workers sharing one socket, a worker back from a long turn
    would otherwise take a burst of queued connections while its sibling
    idles. A port without ``numberAccepts`` is left as it is.
    """
    if not hasattr(port, "numberAccepts"):
        return
    read = port.doRead

    def doRead() -> object:
        port.numberAccepts = min(port.numberAccepts, most)
        return read()

    port.doRead = doRead


# -- twisted.web: the HTTP server (intake) -----------------------------------


def channel_is_receiving(channel: HTTPChannel) -> bool:
    """
    Whether ``channel`` is inside ``LineReceiver.dataReceived`` (its
    ``_busyReceiving`` flag): data given to it then is only buffered, so
    ``CrashChannel.dataReceived`` must pass it on whole instead of splitting
    off a header block (a nested call, e.g. from ``setLineMode``).
    """
    return bool(channel._busyReceiving)


def channel_is_handling_request(channel: HTTPChannel) -> bool:
    """
    Whether ``channel`` has a complete request that is being answered (its
    ``_handlingRequest`` flag, set when the body is in and cleared when the
    answer is done): a half-close then waits for that answer instead of
    ending a body that is still arriving.
    """
    return bool(channel._handlingRequest)


def request_line(channel: HTTPChannel) -> tuple[bytes, bytes]:
    """
    The method and the raw path of the request whose headers ``channel`` has
    just read (its ``_command`` and ``_path``, kept until the body is in):
    a ``Request`` learns them only in ``requestReceived``, after the body,
    and intake decides in ``gotLength`` whether the body is parsed.
    """
    # cast: mypy infers _path from a variable that lineReceived reuses for the Request.
    return channel._command, cast(bytes, channel._path)


# -- twisted.web: the HTTP client (S3) ---------------------------------------


def send_in_one_turn(transport: object, limit: int) -> None:
    """
    Let ``transport`` (TCP, or TLS over TCP) hand the kernel up to ``limit``
    bytes per write readiness instead of ``FileDescriptor.SEND_LIMIT``
    (128 KiB, a class attribute without documentation): a 400 KB S3 body
    otherwise takes four reactor turns, each a ``send`` and an epoll wait.
    The instance attribute shadows the class's; ``doWrite`` and
    ``writeSomeData`` read it at each call.
    """
    while not isinstance(transport, FileDescriptor):
        # TLS: TLSMemoryBIOProtocol writes its records to the TCP transport under it.
        transport = getattr(transport, "transport", None)
        if transport is None:
            return
    transport.SEND_LIMIT = limit
