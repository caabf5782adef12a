"""
SIGTERM with an upload still arriving, on the real ``twistd -n antenna``: the
port closes at once, the upload may finish within GRACEFUL_TIMEOUT and gets
its crash id (stored before the process exits); one that does not finish in
time is answered 503 busy at the end of the grace, and the process is gone
soon after.
"""

import json
import signal
import socket
import time

import pytest

from antenna_tw.send_crash import build_multipart
from tests.helpers import http_request, minidump

BODY, CONTENT_TYPE = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                     {"upload_file_minidump": minidump()})
REQUEST = http_request(BODY, [("Content-Type", CONTENT_TYPE)])
HALF = len(REQUEST) - len(BODY) // 2  # the headers and half the body


def start(collectors, tmp_path, workers, **environ):
    return collectors.start(tmp_path, {"CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"),
                                       **environ}, args=["--workers", str(workers)])


def half_sent_upload(collector):
    upload = socket.create_connection(("127.0.0.1", collector.port), timeout=10)
    upload.sendall(REQUEST[:HALF])
    time.sleep(0.2)  # the headers are read: the request is in progress
    return upload


def sigterm_and_wait_refused(collector, timeout=5.0):
    """SIGTERM, then wait until a new connection is refused (the port closed); when it was sent."""
    sent = time.monotonic()
    collector.process.send_signal(signal.SIGTERM)
    while time.monotonic() - sent < timeout:
        try:
            socket.create_connection(("127.0.0.1", collector.port), timeout=1).close()
        except ConnectionRefusedError:
            return sent
        time.sleep(0.02)
    raise AssertionError("the port still takes connections after SIGTERM")


def read_answer(upload):
    """The response, read to its Content-Length (the connection may be cut after it)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < length(data):
        piece = upload.recv(65536)
        if not piece:
            break
        data += piece
    return data


def length(data):
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.mark.parametrize("workers", [0, 2])
def test_an_upload_arriving_at_sigterm_finishes_and_is_stored(tmp_path, collectors, workers):
    collector = start(collectors, tmp_path, workers)
    upload = half_sent_upload(collector)
    sigterm_and_wait_refused(collector)
    upload.sendall(REQUEST[HALF:])
    answer = read_answer(upload)
    assert upload.recv(1) == b""  # the connection closes after it
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer
    assert b"connection: close" in head.lower()
    crash_id = body.decode().strip()[len("CrashID=bp-"):]
    collector.wait_exit(timeout=10)
    raw_crash = tmp_path / "crashes" / ("20" + crash_id[-6:]) / "raw_crash" / f"{crash_id}.json"
    assert json.loads(raw_crash.read_bytes())["uuid"] == crash_id
    assert "stopping: waiting for 1 requests in progress" in collector.output()


def test_an_upload_still_arriving_when_the_grace_ends_is_answered_busy(tmp_path, collectors):
    grace = 1.0
    collector = start(collectors, tmp_path, 1, GRACEFUL_TIMEOUT=str(grace))
    upload = half_sent_upload(collector)
    sent = sigterm_and_wait_refused(collector)
    answer = read_answer(upload)  # the rest never comes
    answered = time.monotonic() - sent
    upload.close()
    assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"Discarded=busy"), answer
    assert grace <= answered < grace + 1.0, answered
    collector.wait_exit(timeout=10)
    assert time.monotonic() - sent < grace + 1.5
    assert "stopping: 1 uploads still arriving answered busy" in collector.output()
