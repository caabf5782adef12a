"""
Pins what ``antenna_tw.adapters.twisted`` (web server section) reads of
twisted.web's HTTPChannel beyond its public API: if an upgrade changes it,
these fail instead of the collector.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.web import http

from antenna_tw.adapters.twisted import (
    channel_is_handling_request,
    channel_is_receiving,
    request_line,
)


class RecordingRequest(http.Request):
    """Records what the adapters say at each step; answers only when told."""

    seen: list[tuple[str, object]]

    def gotLength(self, length: int | None) -> None:
        self.channel.seen.append(("gotLength", request_line(self.channel)))
        self.channel.seen.append(("handling at gotLength",
                                  channel_is_handling_request(self.channel)))
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self.channel.seen.append(("receiving in a chunk", channel_is_receiving(self.channel)))
        self.channel.seen.append(("handling in a chunk",
                                  channel_is_handling_request(self.channel)))
        super().handleContentChunk(data)

    def process(self) -> None:
        self.channel.seen.append(("handling at process",
                                  channel_is_handling_request(self.channel)))


def connected() -> http.HTTPChannel:
    channel = http.HTTPChannel()
    channel.requestFactory = RecordingRequest  # type: ignore[assignment]
    channel.seen = []  # type: ignore[attr-defined]
    channel.makeConnection(StringTransport())
    return channel


def test_request_line_is_the_method_and_raw_path_at_got_length() -> None:
    channel = connected()
    channel.dataReceived(b"POST //sub%6dit?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
    assert ("gotLength", (b"POST", b"//sub%6dit?x=1")) in channel.seen  # type: ignore[attr-defined]


def test_receiving_is_true_inside_data_received_only() -> None:
    channel = connected()
    assert not channel_is_receiving(channel)
    channel.dataReceived(b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    assert ("receiving in a chunk", True) in channel.seen  # type: ignore[attr-defined]
    assert not channel_is_receiving(channel)


def test_handling_request_from_the_whole_body_to_the_answer() -> None:
    channel = connected()
    assert not channel_is_handling_request(channel)
    channel.dataReceived(b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nab")
    assert not channel_is_handling_request(channel)  # the body is still arriving
    channel.dataReceived(b"c")
    seen = channel.seen  # type: ignore[attr-defined]
    assert ("handling at gotLength", False) in seen
    assert ("handling in a chunk", False) in seen
    assert ("handling at process", True) in seen
    assert channel_is_handling_request(channel)  # complete, not yet answered
    [request] = channel.requests
    request.finish()
    assert not channel_is_handling_request(channel)
