"""
``SECRET_SENTRY_DSN``: a real ``twistd antenna`` sends its logged failures
to a Sentry endpoint (a loopback stand-in that records what it receives),
and the DSN's key never appears in the logs.
"""

import gzip
import json
import threading
import time
import urllib.error
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


KEY = "0123456789abcdef0123456789abcdef"


class FakeSentry:
    """Records the bodies POSTed to it, decompressed."""

    def __init__(self):
        self.bodies = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    data = gzip.decompress(data)
                elif encoding == "deflate":
                    data = zlib.decompress(data)
                received.append(data)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def dsn(self):
        return f"http://{KEY}@127.0.0.1:{self.server.server_address[1]}/1"

    def wait_for(self, text, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.bodies):
                if text.encode() in body:
                    return body
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never reached Sentry: {self.bodies!r}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sentry():
    fake = FakeSentry()
    yield fake
    fake.close()


def test_logged_failures_reach_sentry_and_the_dsn_is_never_logged(tmp_path, sentry, collectors):
    collector = collectors.start(tmp_path, {"SECRET_SENTRY_DSN": sentry.dsn})
    try:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(collector.url + "/__broken__", timeout=10)
        assert answer.value.code == 500
        body = sentry.wait_for("intentional exception from /__broken__")
        events = [json.loads(line) for line in body.splitlines() if line.startswith(b"{")]
        exceptions = [value for event in events
                      for value in event.get("exception", {}).get("values", [])]
        assert any(value["type"] == "RuntimeError" for value in exceptions), events
        assert collector.heartbeat()[0] == 200  # and it keeps serving
    finally:
        collector.stop()
    output = collector.output()
    assert "SECRET_SENTRY_DSN=*****" in output
    assert KEY not in output
