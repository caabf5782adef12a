"""
``make run-s3`` (scripts/run_s3.py): moto_server on a free port, the bucket,
the collector against it in the foreground; a crash posted to it lands in
the bucket, and Ctrl-C stops the collector, then moto.
"""

import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.s3server import MotoServer, free_port
from tests.system.collector_process import children_of, wait_for
from tests.system.crash_clients import make_crash, post_crash

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "run_s3.py")
MOTO_LINE = re.compile(r"run-s3: moto_server on http://127\.0\.0\.1:(\d+), bucket (\S+),")


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def run_s3(tmp_path):
    """The script, started as ``make run-s3`` starts it; killed with its children if left."""
    port = free_port()
    output = tmp_path / "output"
    env = dict(os.environ, SPOOL_DIR=str(tmp_path / "spool"), METRICS_CLASS="none",
               SPOOL_MIN_FREE_BYTES="0")
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, SCRIPT, "--bucket", "run-s3-test",
             "--port", f"tcp:{port}:interface=127.0.0.1", "--workers", "0"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    yield process, port, output
    if process.poll() is None:
        for pid in children_of(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait(10)


def test_run_s3_stores_a_crash_in_its_moto_and_stops_it(run_s3):
    process, port, output = run_s3
    moto_port, bucket = wait_for(lambda: MOTO_LINE.search(output.read_text()), 30).groups()
    wait_for(lambda: answers(f"http://127.0.0.1:{port}/__lbheartbeat__"), 30)

    answer = post_crash(port, make_crash(1))
    assert answer.status == 200, output.read_text()
    moto = MotoServer(process=None, port=int(moto_port), log_path=None)
    wait_for(lambda: f"v2/raw_crash/{answer.crash_id[:3]}/20{answer.crash_id[-6:]}/"
             f"{answer.crash_id}" in moto.keys_in(bucket), 30)

    process.send_signal(signal.SIGINT)  # what Ctrl-C sends it
    assert process.wait(60) == 128 + signal.SIGTERM, output.read_text()
    assert "run-s3: moto_server stopped" in output.read_text()
    assert not answers(f"http://127.0.0.1:{moto_port}/moto-api/data.json")
