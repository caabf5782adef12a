"""
Every request body is read by the streaming reader, whatever the path: the
router accepts spellings of /submit that a string compare would miss, and
bodies sent elsewhere must not be buffered whole either.
"""

import pytest
import pytest_twisted

from antenna_tw.send_crash import build_multipart
from tests.helpers import http_request, minidump, raw_request

BODY, CONTENT_TYPE = build_multipart({"ProductName": "Test"}, {"upload_file_minidump": minidump()})


@pytest.mark.parametrize("path", ["//submit", "/%73ubmit", "/submit?x=1", "/submit/"])
@pytest_twisted.ensureDeferred
async def test_spellings_the_router_sends_to_submit(collector, path):
    status, _, answer = await raw_request(
        collector.port_number, http_request(BODY, [("Content-Type", CONTENT_TYPE)], path=path))
    assert status == 200, answer
    assert answer.startswith(b"CrashID=bp-")
    crash_id = answer.decode().strip()[len("CrashID=bp-"):]
    _, _, dumps = await collector.wait_stored(crash_id)
    assert dumps == {"upload_file_minidump": minidump()}


@pytest.mark.parametrize("method,path,status", [
    ("POST", "/nothing-here", 404), ("PUT", "/submit", 405), ("POST", "/__lbheartbeat__", 405),
])
@pytest_twisted.ensureDeferred
async def test_bodies_elsewhere_are_read_and_ignored(collector, method, path, status):
    got_status, headers, _ = await raw_request(
        collector.port_number,
        http_request(BODY, [("Content-Type", CONTENT_TYPE)], method=method, path=path))
    assert got_status == status
    assert headers["content-type"].startswith("text/plain")
    await collector.wait_idle()
    assert collector.stored_ids() == []


@pytest_twisted.ensureDeferred
async def test_oversized_body_elsewhere_is_refused_at_once(collector_with):
    running = await collector_with(MAX_PAYLOAD_SIZE=1000)
    head = http_request(b"", [("Content-Length", "5000")], path="/nothing-here")
    status, _, answer = await raw_request(running.port_number, head, timeout=5)
    assert (status, answer) == (413, b"Discarded=too_large")
