"""
Random and damaged uploads sent to a listening collector: every answer is 200, 400 or 413 with a Content-Length,
never a 500 or a dropped connection, and the collector goes on serving.
"""

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import crash_id_from, http_request, in_thread, raw_exchange
from tests.strategies import header_lines, uploads

SAFE_HEADERS = header_lines().filter(
    lambda line: ":" in line and line.split(":", 1)[0].strip().lower() not in (
        "content-length", "transfer-encoding", "content-type", "content-encoding",
        "connection", "expect"))


def fuzz(port):
    """Run the property in this (non-reactor) thread; the collector runs on the reactor."""

    @settings(max_examples=300)
    @given(upload=uploads(), extra=st.lists(SAFE_HEADERS, max_size=3), chunked=st.booleans(),
           chunk_size=st.integers(1, 5000))
    def answers_are_only_200_400_413(upload, extra, chunked, chunk_size):
        content_type, encoding, body = upload
        # header bytes as UTF-8 on the wire, whatever the characters
        headers = [line.encode("utf-8").decode("latin-1").split(":", 1) for line in extra]
        if content_type is not None:
            # as UTF-8 bytes on the wire; no line breaks, which would change the framing
            wire_type = content_type.replace("\r", "").replace("\n", "")
            headers.append(("Content-Type", wire_type.encode("utf-8").decode("latin-1")))
        if encoding is not None:
            headers.append(("Content-Encoding", encoding))
        request = http_request(body, [(n, v.strip()) for n, v in headers],
                               chunked=chunked, chunk_size=chunk_size)
        status, response_headers, answer = raw_exchange(port, request, timeout=10)
        assert status in (200, 400, 413), (status, answer)
        if status != 400 or answer:  # twisted's own 400 for a bad header line has no body
            assert int(response_headers["content-length"]) == len(answer)
            assert answer.startswith((b"CrashID=", b"Discarded="))

    answers_are_only_200_400_413()


@pytest_twisted.ensureDeferred
async def test_random_uploads_get_only_200_400_413_and_the_collector_keeps_serving(
        collector_with):
    running = await collector_with(MAX_PAYLOAD_SIZE="64k", MAX_DECOMPRESSED_SIZE="64k",
                                   MAX_PARTS="8", REQUEST_TIMEOUT="5")
    await in_thread(fuzz, running.port_number)
    body, content_type = build_multipart({"ProductName": "Test"},
                                         {"upload_file_minidump": b"MDMP"})
    status, answer = await in_thread(post, running.submit_url, body, content_type)
    assert status == 200
    _, _, dumps = await running.wait_stored(crash_id_from(answer))
    assert dumps == {"upload_file_minidump": b"MDMP"}
