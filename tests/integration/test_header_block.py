"""
``CrashChannel.dataReceived`` hands twisted's LineReceiver the header block
alone when a read brings the headers and body bytes together, so that the
body is not copied once per header line. The parse must not change: the
same bytes in one read or in small pieces (where the split never applies)
get the same answers, pipelined requests included.

Requests are fed to the real Site's protocol over a StringTransport, with
the spool write replaced by an in-memory one (conftest.py's ``site``).
"""

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from antenna_tw.intake.http import HEAD_SPLIT_MIN, CrashChannel
from antenna_tw.send_crash import build_multipart
from tests.helpers import http_request, normalized

CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)


def serve(site, pieces, watch=None):
    """What the site answers to ``pieces`` read one after another on one connection."""
    transport = StringTransport(peerAddress=CLIENT)
    channel = site.buildProtocol(CLIENT)
    assert isinstance(channel, CrashChannel)
    if watch is not None:
        watch(channel)
    channel.makeConnection(transport)
    for piece in pieces:
        channel.dataReceived(piece)
    channel.connectionLost(Failure(ConnectionDone()))
    return normalized(transport.value())


def crash_request(dump_size, *, close=True, extra_headers=()):
    body, content_type = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                         {"upload_file_minidump": os.urandom(dump_size)})
    headers = [("Content-Type", content_type), *extra_headers]
    if close:
        headers.append(("Connection", "close"))
    return http_request(body, headers)


def small_pieces(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_header_lines_are_parsed_without_the_body_in_the_buffer(site):
    request = crash_request(64 * 1024, extra_headers=[(f"X-Extra-{i}", "x") for i in range(8)])
    buffered = []

    def watch(channel):
        line_received = channel.lineReceived

        def recording(line):
            buffered.append(len(channel._buffer))
            return line_received(line)

        channel.lineReceived = recording

    answer = serve(site, [request], watch)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"CrashID=bp-<id>" in answer
    assert len(buffered) >= 12  # request line, headers, the empty line
    head = request.index(b"\r\n\r\n") + 4
    assert max(buffered) < head  # never the body bytes that came in the same read


@settings(max_examples=40, deadline=None)
@given(dump_size=st.integers(0, 3 * HEAD_SPLIT_MIN),
       second=st.sampled_from([None, "heartbeat", "crash", "after close"]),
       piece=st.integers(1, HEAD_SPLIT_MIN))
def test_one_read_and_small_pieces_get_the_same_answers(site, dump_size, second, piece):
    data = crash_request(dump_size, close=second in (None, "after close"))
    if second == "after close":  # sent after "Connection: close": dropped, not answered
        data += crash_request(2 * HEAD_SPLIT_MIN)
    elif second == "heartbeat":
        data += b"GET /__lbheartbeat__ HTTP/1.1\r\nConnection: close\r\n\r\n"
    elif second == "crash":
        data += crash_request(2 * HEAD_SPLIT_MIN)
    at_once = serve(site, [data])
    assert at_once.count(b"HTTP/1.1 200 ") == (1 if second in (None, "after close") else 2)
    assert at_once == serve(site, small_pieces(data, piece))
