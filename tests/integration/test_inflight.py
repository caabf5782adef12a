"""
MAX_INFLIGHT_BYTES: the memory all uploads in progress may hold. Past it an
upload is answered 503 busy at once (while others hold bytes too), and once
they are done the same crash is accepted.
"""

import os

import pytest_twisted

from antenna_tw.send_crash import build_multipart
from tests.helpers import (_read_response, http_request, in_thread, inflight_at_least,
                           open_and_send, raw_request, start_collector, stop_collector)
from tests.helpers import test_environ as environ_for

MIB = 1024 * 1024


def crash(dump_size):
    body, content_type = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                         {"upload_file_minidump": os.urandom(dump_size)})
    return http_request(body, [("Content-Type", content_type)])


def finish_and_read(sock, data):
    try:
        sock.sendall(data)
        return _read_response(sock)
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_uploads_over_the_shared_cap_are_answered_busy_then_accepted(tmp_path):
    running = await start_collector(tmp_path, environ_for(tmp_path, MAX_INFLIGHT_BYTES="1MiB"))
    site = running.collector.site
    try:
        slow = crash(2 * MIB)  # alone it is allowed: under MAX_DECOMPRESSED_SIZE
        cut = len(slow) - MIB
        sock = await in_thread(open_and_send, running.port_number, slow[:cut])
        await inflight_at_least(site, running.collector.reactor, MIB // 2)

        status, headers, body = await raw_request(running.port_number, crash(600 * 1024))
        assert (status, body) == (503, b"Discarded=busy")
        assert headers["retry-after"] == "60"

        status, _, body = await in_thread(finish_and_read, sock, slow[cut:])
        assert status == 200 and body.startswith(b"CrashID=bp-")
        status, _, body = await raw_request(running.port_number, crash(600 * 1024))
        assert status == 200 and body.startswith(b"CrashID=bp-")
        await running.wait_idle()
        assert site.admission.inflight_bytes == 0  # every upload let go of what it counted
    finally:
        await stop_collector(running)
