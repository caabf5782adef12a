"""
``SECRET_SENTRY_DSN``: a real ``twistd antenna`` sends its logged failures
to a Sentry endpoint (a loopback stand-in that records what it receives),
and the DSN's key never appears in the logs.
"""

import gzip
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.system.collector_process import both_listening, wait_for

KEY = "0123456789abcdef0123456789abcdef"


class FakeSentry:
    """
    Records the bodies POSTed to it, decompressed, and answers each one
    ``answer_delay`` seconds later (an overloaded Sentry).
    """

    def __init__(self):
        self.bodies = []
        self.answer_delay = 0.0
        received = self.bodies
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    data = gzip.decompress(data)
                elif encoding == "deflate":
                    data = zlib.decompress(data)
                received.append(data)
                time.sleep(fake.answer_delay)
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

    def wait_for(self, text, timeout=15.0, count=1):
        """The first body with ``text``, once ``count`` bodies have it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [body for body in list(self.bodies) if text.encode() in body]
            if len(found) >= count:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"{text!r} did not reach Sentry {count} times: {self.bodies!r}")

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


def test_the_workers_parent_sends_what_it_logged_just_before_sigterm(tmp_path, sentry,
                                                                     collectors):
    collector = collectors.start(tmp_path, {"SECRET_SENTRY_DSN": sentry.dsn},
                                 args=["--workers", "2"])
    workers = both_listening(collector)
    # Sentry takes 1.5 s to answer each event, and its client sends one at a
    # time: the second event is still queued in the parent when SIGTERM comes.
    sentry.answer_delay = 1.5
    for pid in workers:  # a worker that dies is a failure the parent reports
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(f"worker {index} ended" in collector.output() for index in (0, 1)))
    collector.process.send_signal(signal.SIGTERM)
    assert collector.wait_exit(20) in (143, -signal.SIGTERM)
    # Both were sent before the parent exited: nothing of it is left to send them now.
    body = sentry.wait_for("ProcessTerminated", timeout=5, count=2)
    events = [json.loads(line) for line in body.splitlines() if line.startswith(b"{")]
    exceptions = [value for event in events
                  for value in event.get("exception", {}).get("values", [])]
    assert any(value["type"] == "ProcessTerminated" for value in exceptions), events
    assert KEY not in collector.output()
