"""
Storage that hangs or is not there, with the real ``twistd -n antenna``:
SIGTERM ends the process within SHUTDOWN_TIMEOUT (plus a second) while S3
hangs, with and without workers, and the next start stores what was left;
a start while S3 is unreachable serves from the spool, a worker killed then
comes back at once, and everything is stored once S3 answers.
"""

import os
import signal
import time

import pytest

from tests.integration.s3_helpers import s3_environ
from tests.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, MotoServer, free_port
from tests.system.collector_process import both_listening, children_of, listening, wait_for
from tests.system.crash_clients import log_records
from tests.system.test_s3_system import send, wait_all_stored
from tests.tcpproxy import HangingProxy

SHUTDOWN_TIMEOUT = 3


def messages(output):
    return [record["Fields"]["msg"] for record in log_records(output)]


def spooled(directory):
    """The crashes waiting in the spool of the collector started in ``directory``."""
    return sorted(path.name for path in (directory / "spool").glob("**/*.crash")
                  if "corrupt" not in path.parts)


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_while_s3_hangs_exits_in_time_and_a_restart_stores_the_rest(
        moto, s3_bucket, tmp_path, collectors, workers):
    args = ["--workers", str(workers)]
    first = tmp_path / "first"
    first.mkdir()
    proxy = HangingProxy(moto.port).start()
    try:
        environ = s3_environ(moto, s3_bucket, SHUTDOWN_TIMEOUT=SHUTDOWN_TIMEOUT,
                             CRASHSTORAGE_ENDPOINT_URL=proxy.endpoint)
        collector = collectors.start(first, environ, args=args)
        if workers:
            both_listening(collector)
        stored = [send(collector, n)[0] for n in range(3)]
        wait_all_stored(moto, s3_bucket, stored, timeout=30)

        proxy.hang()  # accepts, never answers: every PUT from now on hangs
        hung = [send(collector, n)[0] for n in range(3, 9)]
        time.sleep(1.0)  # the movers are inside their PUTs
        assert spooled(first)
        sent_at = time.monotonic()
        collector.process.send_signal(signal.SIGTERM)
        status = collector.wait_exit(30)
        took = time.monotonic() - sent_at
    finally:
        proxy.stop()
    output = collector.output()
    lines = messages(output)
    print(f"workers={workers}: exit {took:.2f} s after SIGTERM, {len(spooled(first))} "
          f"crashes left in the spool")
    assert status in (143, -signal.SIGTERM), output[-2000:]
    assert took < SHUTDOWN_TIMEOUT + 2, (took, output[-3000:])
    assert children_of(collector.process.pid) == []
    assert not any("SIGKILL" in line for line in lines), output[-3000:]
    # Each process ran its clean stop (the last of which is the Sentry flush).
    assert lines.count("stopped") == max(1, workers), output[-3000:]
    assert not any("try 2 of" in line and "Cancelled" in line for line in lines)
    assert any("left in the spool for the next start" in line for line in lines)
    assert spooled(first)

    # The next start, on the same spool, S3 working again, stores what was left.
    again = tmp_path / "again"
    again.mkdir()
    restarted = collectors.start(again, s3_environ(moto, s3_bucket,
                                                   SPOOL_DIR=first / "spool"), args=args)
    wait_all_stored(moto, s3_bucket, stored + hung, timeout=30)
    wait_for(lambda: not spooled(first), timeout=10)
    restarted.stop()


def unreachable_environ(port, bucket, **overrides):
    environ = {
        "CRASHSTORAGE_CLASS": "s3",
        "CRASHSTORAGE_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "CRASHSTORAGE_BUCKET_NAME": bucket,
        "CRASHSTORAGE_REGION": "us-west-2",
        "CRASHSTORAGE_ACCESS_KEY": TEST_ACCESS_KEY,
        "CRASHSTORAGE_SECRET_ACCESS_KEY": TEST_SECRET_KEY,
        # Probe the outage often, so the test does not wait out long back-offs.
        "CRASHMOVER_RETRY_BASE_DELAY": "0.2",
        "CRASHMOVER_RETRY_MAX_DELAY": "1",
    }
    environ.update(overrides)
    return environ


@pytest.mark.parametrize("workers", [0, 2])
def test_a_start_while_s3_is_unreachable_serves_from_the_spool_and_stores_later(
        tmp_path, collectors, workers):
    port = free_port()  # nothing listens there until moto starts on it
    bucket = "crashes-after-the-outage"
    started_at = time.monotonic()
    collector = collectors.start(tmp_path, unreachable_environ(port, bucket), timeout=20,
                                 args=["--workers", str(workers)])
    pids = both_listening(collector) if workers else []
    ids = [send(collector, n)[0] for n in range(4)]
    answering = time.monotonic() - started_at
    assert answering < 20
    status, heartbeat = collector.heartbeat()
    assert status == 503
    assert any(error["name"] == "storage" and "no answer" in error["msg"]
               for error in heartbeat["errors"]), heartbeat
    restart = None
    if workers:
        killed_at = time.monotonic()
        collector_pid = collector.process.pid
        os.kill(pids[0], signal.SIGKILL)
        new = wait_for(lambda: (lambda now: len(now) == 2 and pids[0] not in now and now)(
            children_of(collector_pid)), timeout=10)
        new_worker = (set(new) - set(pids)).pop()
        wait_for(lambda: listening(collector, new_worker), timeout=10)
        restart = time.monotonic() - killed_at
        assert restart < 10
        ids += [send(collector, n)[0] for n in range(4, 8)]
    lines = messages(collector.output())
    # One check, by the process the operator started; a warning, not a refusal.
    assert sum("starting all the same" in line for line in lines) == 1, lines
    print(f"workers={workers}: answering {answering:.2f} s after the start"
          + (f", a killed worker serving again {restart:.2f} s after SIGKILL" if workers else ""))

    server = MotoServer.start(str(tmp_path), port=port)  # S3 answers from now on
    try:
        server.create_bucket(bucket)
        came_back = time.monotonic()
        wait_all_stored(server, bucket, ids, timeout=30)
        print(f"workers={workers}: all {len(ids)} acknowledged crashes stored "
              f"{time.monotonic() - came_back:.2f} s after S3 came back")
        wait_for(lambda: not spooled(tmp_path), timeout=10)
    finally:
        collector.stop()
        server.stop()
