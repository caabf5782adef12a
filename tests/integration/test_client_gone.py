"""A client that leaves while its crash is being spooled does not strand the crash."""

import socket
import struct
import time

import pytest_twisted
from twisted.internet import reactor, task, threads

from antenna_tw.send_crash import build_multipart
from tests.helpers import http_request, minidump


def send_then_reset(port, request_bytes, wait):
    """Send a whole request, wait, then reset the connection without reading."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes)
        time.sleep(wait)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest_twisted.ensureDeferred
async def test_crash_spooled_after_the_client_left_is_still_stored(collector):
    spool = collector.collector.spool
    original_put = spool._put

    def slow_put(*args, **kwargs):
        time.sleep(0.5)  # in the spool's thread, like a slow disk
        return original_put(*args, **kwargs)

    spool._put = slow_put
    body, content_type = build_multipart({"ProductName": "Test"},
                                         {"upload_file_minidump": minidump()})
    await threads.deferToThread(send_then_reset, collector.port_number,
                                http_request(body, [("Content-Type", content_type)]), 0.2)
    for _ in range(200):
        if collector.stored_ids():
            break
        await task.deferLater(reactor, 0.02, lambda: None)
    assert len(collector.stored_ids()) == 1
    await collector.wait_idle()
    assert collector.collector.mover.queue_length() == 0
