"""
Real Crashpad uploads, captured byte for byte (tests/data/captures), replayed
over a socket exactly as captured: chunked, gzip and not, no Content-Type on
any part, ``guid`` in the query string, one with an attachment. Also
Chromium's socket transport: the same bytes with an ``HTTP/1.0`` request line
and still a chunked body.
"""

import glob
import os
import socket

import pytest
import pytest_twisted

from tests.helpers import CAPTURES, crash_id_from, in_thread, minidump

GUID = "6fd2b3b9-9833-4b2f-bbf7-0bcf501bad7e"
CAPTURED = sorted(glob.glob(os.path.join(CAPTURES, "*.http")))
SIMPLE_CRASHPAD = minidump("simple-crashpad.dmp")
ATTACHMENT = b"free-form log text attached by the app\n"


def capture(name):
    with open(os.path.join(CAPTURES, name), "rb") as capture_file:
        return capture_file.read()


def exchange_until_close(port, request, timeout=10.0):
    """Send the bytes, read until the server closes; (status line, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode()] = value.strip().decode()  # case kept: Crashpad looks it up so
    return lines[0], headers, body


def exchange_kept_alive(port, request):
    """One request on a kept-alive connection; read the answer by Content-Length."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.decode()] = value.strip().decode()
        while len(body) < int(headers["Content-Length"]):
            body += sock.recv(65536)
        return lines[0], headers, body


def test_the_captures_are_there():
    assert [os.path.basename(path) for path in CAPTURED] == [
        "crashpad-upload-nogzip-attachment.http", "crashpad-upload.http"]


@pytest.mark.parametrize("name,compressed,attachment", [
    ("crashpad-upload.http", True, False),
    ("crashpad-upload-nogzip-attachment.http", False, True),
])
@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
@pytest_twisted.ensureDeferred
async def test_captured_upload_is_accepted_and_stored(collector, name, compressed, attachment,
                                                      version):
    request = capture(name)
    assert b"Transfer-Encoding: chunked\r\n" in request
    exchange = exchange_kept_alive  # HTTP/1.1: the connection stays open
    if version == b"HTTP/1.0":
        # Chromium's socket transport: only the request line differs, and it
        # reads the answer by Content-Length or else up to the close
        request = request.replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
        exchange = exchange_until_close
    status_line, headers, answer = await in_thread(exchange, collector.port_number, request)
    assert status_line.split(b" ")[1] == b"200", answer
    assert "Transfer-Encoding" not in headers
    assert headers["Content-Length"] == str(len(answer))
    assert headers["Content-Type"].startswith("text/plain")

    raw_crash, dump_names, dumps = await collector.wait_stored(crash_id_from(answer))
    assert dumps["upload_file_minidump"] == SIMPLE_CRASHPAD
    if attachment:
        assert dump_names == ["applogtxt", "upload_file_minidump"]
        assert dumps["applogtxt"] == ATTACHMENT
    else:
        assert dump_names == ["upload_file_minidump"]
    assert raw_crash["guid"] == GUID
    assert raw_crash["hello"] == "world"
    assert raw_crash["list_annotations"] == "abort() called\ndyld2 mode"
    metadata = raw_crash["metadata"]
    assert metadata["payload_compressed"] == ("1" if compressed else "0")
    assert metadata["user_agent"].startswith("Crashpad/0.8.0 libcurl/7.88.1")
    # neither the dump nor the attachment has a Content-Type: no notes
    assert metadata["collector_notes"] == []


@pytest_twisted.ensureDeferred
async def test_query_string_fills_in_keys_the_body_lacks(collector):
    # Crashpad adds product= and version= to the URL when the report has them
    request = capture("crashpad-upload.http").replace(
        b"POST /submit?guid=", b"POST /submit?product=CrashpadHarness&version=1.0.0&hello=no&guid=",
        1)
    _, headers, answer = await in_thread(exchange_kept_alive, collector.port_number, request)
    raw_crash, _, _ = await collector.wait_stored(crash_id_from(answer))
    assert raw_crash["product"] == "CrashpadHarness"
    assert raw_crash["version"] == 2  # collector-owned keys are overwritten
    assert raw_crash["hello"] == "world"  # the body wins over the query string
    assert raw_crash["guid"] == GUID
