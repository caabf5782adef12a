"""
Clients that stall or hang up mid-request: a stalled
one is dropped after REQUEST_TIMEOUT without holding up anybody else, and
neither leaves anything in storage or in the spool.
"""

import gzip
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import crash_id_from, http_request, in_thread, minidump

BODY, CONTENT_TYPE = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                     {"upload_file_minidump": minidump()})
REQUEST = http_request(BODY, [("Content-Type", CONTENT_TYPE)])
HEADERS_END = REQUEST.index(b"\r\n\r\n") + 4


def stall(port, sent, timeout=15.0):
    """Send ``sent`` and then nothing; seconds until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return started, time.monotonic()


def send_crashes(url, count, workers=8):
    """``count`` crashes from ``workers`` threads; (statuses, time the last one ended)."""
    def one(_):
        status, answer = post(url, BODY, CONTENT_TYPE, timeout=10)
        return status, answer

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, range(count)))
    return results, time.monotonic()


def spool_entries(running):
    return sorted(set(os.listdir(running.collector.spool.directory)) - {"corrupt"})


@pytest.mark.parametrize("stall_at", ["connected", "mid_headers", "mid_body"])
@pytest_twisted.ensureDeferred
async def test_stalled_client_dropped_after_timeout_while_50_crashes_are_accepted(
        collector_with, stall_at):
    running = await collector_with(REQUEST_TIMEOUT="1")
    sent = {"connected": b"", "mid_headers": REQUEST[:HEADERS_END // 2],
            "mid_body": REQUEST[:HEADERS_END + len(BODY) // 2]}[stall_at]
    stalled = in_thread(stall, running.port_number, sent)
    await task.deferLater(reactor, 0.1, lambda: None)  # it is connected and stalled

    results, last_done = await in_thread(send_crashes, running.submit_url, 50)
    started, dropped = await stalled

    assert [status for status, _ in results] == [200] * 50
    assert last_done < dropped  # the 50 were served while it stalled
    assert 0.9 <= dropped - started < 5.0
    ids = [crash_id_from(answer) for _, answer in results]
    await running.wait_idle()
    assert running.stored_ids() == sorted(ids)
    assert spool_entries(running) == []


def hang_up(port, sent):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(sent)
    # closed here, without reading


@pytest.mark.parametrize("shape", ["content_length", "chunked_gzip"])
@pytest_twisted.ensureDeferred
async def test_client_hanging_up_mid_body_leaves_nothing_behind(collector, shape):
    if shape == "chunked_gzip":
        request = http_request(gzip.compress(BODY), [("Content-Type", CONTENT_TYPE),
                                                     ("Content-Encoding", "gzip")],
                               chunked=True, chunk_size=1000)
    else:
        request = REQUEST
    cut = len(request) - len(BODY) // 3
    for _ in range(5):
        await in_thread(hang_up, collector.port_number, request[:cut])
    await task.deferLater(reactor, 0.3, lambda: None)
    await collector.wait_idle()
    assert collector.stored_ids() == []
    assert spool_entries(collector) == []
    # and the collector goes on serving
    status, answer = await in_thread(post, collector.submit_url, BODY, CONTENT_TYPE)
    assert status == 200
    await collector.wait_stored(crash_id_from(answer))
