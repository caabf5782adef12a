"""
MAX_PAYLOAD_SIZE at its default of 25 MiB, over loopback:
25 MiB is stored, one byte more is refused with 413 that the client reads
whether it waits for "100 Continue" or sends everything first, and a declared
length over the limit is refused before any body arrives.
"""

import http.client
import os
import socket
import time

import pytest
import pytest_twisted

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import crash_id_from, http_request, in_thread, raw_exchange

LIMIT = 25 * 1024 * 1024
TOO_LARGE = (413, b"Discarded=too_large")
_NOISE = os.urandom(1 << 20)


def body_of_size(size):
    """A multipart body of exactly ``size`` bytes: (body, content_type, dump)."""
    probe, _ = build_multipart({"ProductName": "Test"}, {"upload_file_minidump": b""},
                               boundary="limit-test")
    dump = (_NOISE * (size // len(_NOISE) + 1))[: size - len(probe)]
    body, content_type = build_multipart({"ProductName": "Test"},
                                         {"upload_file_minidump": dump}, boundary="limit-test")
    assert len(body) == size
    return body, content_type, dump


@pytest_twisted.ensureDeferred
async def test_25_mib_body_is_accepted_and_stored(collector):
    body, content_type, dump = body_of_size(LIMIT)
    status, answer = await in_thread(post, collector.submit_url, body, content_type)
    assert status == 200, answer
    raw_crash, _, dumps = await collector.wait_stored(crash_id_from(answer), timeout=20)
    assert dumps["upload_file_minidump"] == dump
    assert raw_crash["metadata"]["payload_size"] == LIMIT


def send_everything_then_read(port, request):
    """A client that sends its whole request before reading (as http.client does)."""
    status, headers, answer = raw_exchange(port, request, timeout=20)
    return status, answer


def http_client_post(port, body, content_type):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("POST", "/submit", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("client", ["http.client", "raw", "raw_expect_100", "raw_chunked"])
@pytest_twisted.ensureDeferred
async def test_one_byte_over_gets_413_that_the_client_reads(collector, client):
    body, content_type, _ = body_of_size(LIMIT + 1)
    port = collector.port_number
    if client == "http.client":
        result = await in_thread(http_client_post, port, body, content_type)
    else:
        headers = [("Content-Type", content_type)]
        if client == "raw_expect_100":
            headers.append(("Expect", "100-continue"))
        request = http_request(body, headers, chunked=client == "raw_chunked")
        result = await in_thread(send_everything_then_read, port, request)
    # raw_exchange reads the first answer: a "100 Continue" would show up here
    assert result == TOO_LARGE
    await collector.wait_idle()
    assert collector.stored_ids() == []
    # and the collector goes on serving
    ok_body, ok_type = build_multipart({"ProductName": "Test"}, {})
    status, _ = await in_thread(post, collector.submit_url, ok_body, ok_type)
    assert status == 200


def headers_only_then_read(port, request):
    """Send only the headers; the answer must come without any body sent."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while b"Discarded=too_large" not in received:
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
    return received, time.monotonic() - started


@pytest.mark.parametrize("expect", [False, True])
@pytest_twisted.ensureDeferred
async def test_declared_length_over_limit_is_answered_before_the_body(collector, expect):
    headers = [("Content-Type", "multipart/form-data; boundary=x"),
               ("Content-Length", str(LIMIT + 1))]
    if expect:
        headers.append(("Expect", "100-continue"))
    request = http_request(b"", headers)
    received, elapsed = await in_thread(headers_only_then_read, collector.port_number, request)
    assert received.startswith(b"HTTP/1.1 413 ")
    assert received.endswith(b"\r\n\r\nDiscarded=too_large")
    assert b"100 Continue" not in received
    assert b"Connection: close\r\n" in received
    assert elapsed < 2.0
