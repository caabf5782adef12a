"""
Crash publishing with the real ``twistd -n antenna`` (two workers by
default on this machine's CPUs) against ``moto_server``: S3 storage and an
SQS queue configured by Antenna's names, the queue read back with botocore's
own client. Every stored crash's id must come off the queue: after a clean
run, after a SIGKILL mid-load and a restart, and after the queue was
unreachable for 60 s under load. Duplicates are allowed (at least once) and
counted; ``PUBLISH_NOTES`` collects the figures each test measured.
"""

import collections
import os
import threading
import time

import pytest

from tests.integration.s3_helpers import s3_environ
from tests.s3server import MotoServer
from tests.sqs_helpers import create_queue, receive_all, sqs_environ
from tests.system.collector_process import sigkill_tree
from tests.system.test_s3_system import raw_crash_key, send, send_many, start_up_failure

VERIFY = "test"  # Antenna's start-up message, sent by the parent and each worker
PUBLISH_NOTES = {}


def environ(s3_server, bucket, sqs_server, queue, **overrides):
    return {**s3_environ(s3_server, bucket), **sqs_environ(sqs_server, queue),
            "CONCURRENT_CRASHMOVERS": "4", "CRASHMOVER_RETRY_BASE_DELAY": "0.2",
            "CRASHMOVER_RETRY_MAX_DELAY": "2", "SHUTDOWN_TIMEOUT": "5",
            **{key: str(value) for key, value in overrides.items()}}


def stored(server, bucket, layout="v2"):
    """The ids of the raw crashes in the bucket."""
    return {key.rsplit("/", 1)[1] for key in server.keys_in(bucket, f"{layout}/raw_crash/")}


class Receiver:
    """Everything the queue held, read until the wanted ids have all come."""

    def __init__(self, server, queue_url):
        self.server = server
        self.queue_url = queue_url
        self.bodies = []

    def until(self, wanted, timeout):
        deadline = time.monotonic() + timeout
        while not set(wanted) <= set(self.bodies):
            if time.monotonic() > deadline:
                missing = set(wanted) - set(self.bodies)
                raise AssertionError(f"{len(missing)} ids never came off the queue")
            self.bodies += receive_all(self.server, self.queue_url)
            time.sleep(0.2)
        time.sleep(1.0)  # late duplicates, if any
        self.bodies += receive_all(self.server, self.queue_url)

    def counted(self):
        ids = collections.Counter(body for body in self.bodies if body != VERIFY)
        return ids, sum(count - 1 for count in ids.values())


@pytest.fixture
def new_collector(tmp_path, collectors):
    def start(environ, name="collector"):
        directory = tmp_path / name
        directory.mkdir()
        return collectors.start(directory, environ)

    return start


@pytest.fixture
def own_moto(tmp_path):
    """An SQS server of this test's own, free to be stopped with SIGSTOP."""
    server = MotoServer.start(str(tmp_path))
    yield server
    server.stop()


def test_every_stored_crash_id_comes_off_the_queue(moto, s3_bucket, new_collector):
    queue, url = create_queue(moto)
    collector = new_collector(environ(moto, s3_bucket, moto, queue))
    sent = [crash_id for crash_id, *_ in send_many(collector, range(200), workers=8)]
    assert len(set(sent)) == 200
    receiver = Receiver(moto, url)
    receiver.until(sent, timeout=90)
    ids, duplicates = receiver.counted()
    assert set(ids) == set(sent) == stored(moto, s3_bucket)
    assert receiver.bodies.count(VERIFY) >= 1
    status, heartbeat = collector.heartbeat()
    assert status == 200, heartbeat
    assert heartbeat["info"]["publisher"] == "sqs"
    assert moto.keys.secret_key not in collector.output()
    PUBLISH_NOTES["200 crashes"] = {"sent": 200, "stored": len(stored(moto, s3_bucket)),
                                    "received": sum(ids.values()), "duplicates": duplicates}
    print("publish notes:", PUBLISH_NOTES["200 crashes"])


def test_a_sigkill_mid_load_loses_no_acknowledged_crash(moto, s3_bucket, tmp_path, collectors):
    queue, url = create_queue(moto)
    env = environ(moto, s3_bucket, moto, queue, SPOOL_DIR=tmp_path / "spool")
    (tmp_path / "first").mkdir()
    collector = collectors.start(tmp_path / "first", env)
    acknowledged, failed = [], []
    stop = threading.Event()

    def load(worker):
        sequence = worker * 100_000
        while not stop.is_set():
            sequence += 1
            try:
                acknowledged.append(send(collector, sequence)[0])
            except Exception:  # the collector died under this request: not acknowledged
                failed.append(sequence)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < 120:
        time.sleep(0.01)
    sigkill_tree(collector.process)  # workers first, mid-request, mid-save, mid-publish
    collector.kill()  # and any worker it was starting
    stop.set()
    for thread in threads:
        thread.join(30)
    at_kill = len(acknowledged)
    left = [name for folder in (tmp_path / "spool").iterdir() if folder.is_dir()
            for name in os.listdir(folder)]
    spooled = sum(name.endswith(".crash") for name in left)
    marked = sum(name.endswith(".stored") for name in left)

    (tmp_path / "second").mkdir()
    restarted = collectors.start(tmp_path / "second", env)
    receiver = Receiver(moto, url)
    receiver.until(acknowledged, timeout=90)
    ids, duplicates = receiver.counted()
    in_bucket = stored(moto, s3_bucket)
    assert set(acknowledged) <= in_bucket
    assert set(acknowledged) <= set(ids)
    # What was stored but never acknowledged (killed before the answer) is published too.
    assert in_bucket <= set(ids)
    status, heartbeat = restarted.heartbeat()
    assert status == 200, heartbeat
    PUBLISH_NOTES["sigkill"] = {
        "acknowledged": at_kill, "failed_requests": len(failed), "left_in_spool": spooled,
        "of_them_stored_unpublished": marked, "stored": len(in_bucket),
        "received_ids": len(ids), "received": sum(ids.values()), "duplicates": duplicates}
    print("publish notes:", PUBLISH_NOTES["sigkill"])


def test_a_queue_unreachable_for_60_s_loses_nothing(moto, s3_bucket, own_moto, new_collector):
    queue, url = create_queue(own_moto)
    collector = new_collector(environ(moto, s3_bucket, own_moto, queue))
    sent = [crash_id for crash_id, *_ in send_many(collector, range(20))]
    own_moto.pause()  # SIGSTOP: connections are accepted by the kernel, never answered
    paused_at = time.monotonic()
    try:
        sent += [crash_id for crash_id, *_ in send_many(collector, range(20, 120), pause=0.4)]
        status, heartbeat = collector.heartbeat()
        assert status == 503, heartbeat
        assert any(error["name"] == "publisher" for error in heartbeat["errors"]), heartbeat
        backlog_seen = heartbeat["info"]["publish_queue_length"]
        assert backlog_seen > 0
        time.sleep(max(0.0, 60.0 - (time.monotonic() - paused_at)))
        outage = time.monotonic() - paused_at
    finally:
        own_moto.resume()
    resumed_at = time.monotonic()
    receiver = Receiver(own_moto, url)
    receiver.until(sent, timeout=90)
    drained = time.monotonic() - resumed_at
    ids, duplicates = receiver.counted()
    assert set(ids) == set(sent) == stored(moto, s3_bucket)
    status, heartbeat = collector.heartbeat()
    assert status == 200, heartbeat
    assert heartbeat["info"]["publish_queue_length"] == 0
    PUBLISH_NOTES["outage"] = {
        "sent": len(sent), "outage_seconds": round(outage, 1),
        "backlog_seen": backlog_seen, "received": sum(ids.values()),
        "duplicates": duplicates, "drained_seconds_after_resume": round(drained, 1)}
    print("publish notes:", PUBLISH_NOTES["outage"])


def test_an_antenna_2024_env_file_with_the_v1_layout(moto, s3_bucket, tmp_path, collectors):
    queue, url = create_queue(moto)
    keys = moto.keys
    env_file = tmp_path / "antenna-2024.env"
    env_file.write_text(
        "LOGGING_LEVEL=INFO\n"
        "BREAKPAD_THROTTLER_RULES=antenna.throttler.ACCEPT_ALL\n"
        "CRASHMOVER_CONCURRENT_CRASHMOVERS=4\n"
        "CRASHMOVER_CRASHSTORAGE_CLASS=antenna.ext.s3.crashstorage.S3CrashStorage\n"
        f"CRASHMOVER_CRASHSTORAGE_BUCKET_NAME={s3_bucket}\n"
        "CRASHMOVER_CRASHSTORAGE_REGION=us-west-2\n"
        f"CRASHMOVER_CRASHSTORAGE_ENDPOINT_URL={moto.endpoint}\n"
        f"CRASHMOVER_CRASHSTORAGE_ACCESS_KEY={keys.access_key}\n"
        f"CRASHMOVER_CRASHSTORAGE_SECRET_ACCESS_KEY={keys.secret_key}\n"
        "CRASHMOVER_CRASHPUBLISH_CLASS=antenna.ext.sqs.crashpublish.SQSCrashPublish\n"
        "CRASHMOVER_CRASHPUBLISH_REGION=us-west-2\n"
        f"CRASHMOVER_CRASHPUBLISH_ENDPOINT_URL={moto.endpoint}\n"
        f"CRASHMOVER_CRASHPUBLISH_ACCESS_KEY={keys.access_key}\n"
        f"CRASHMOVER_CRASHPUBLISH_SECRET_ACCESS_KEY={keys.secret_key}\n"
        f"CRASHMOVER_CRASHPUBLISH_QUEUE_NAME={queue}\n"
        "CRASHSTORAGE_RAW_CRASH_LAYOUT=v1\n")
    (tmp_path / "collector").mkdir()
    collector = collectors.start(tmp_path / "collector", {"ANTENNA_ENV": str(env_file)})
    sent = [crash_id for crash_id, *_ in send_many(collector, range(10))]
    receiver = Receiver(moto, url)
    receiver.until(sent, timeout=60)
    ids, _ = receiver.counted()
    assert set(ids) == set(sent)
    keys_in = set(moto.keys_in(s3_bucket))
    for crash_id in sent:
        assert f"v1/raw_crash/20{crash_id[-6:]}/{crash_id}" in keys_in
        assert raw_crash_key(crash_id) not in keys_in
        assert f"v1/dump/{crash_id}" in keys_in
    assert not any(key.startswith("v2/") for key in keys_in)
    output = collector.output()
    assert "is not an option" not in output and "is Antenna's" not in output
    assert keys.secret_key not in output


def test_a_missing_queue_stops_start_up_in_one_line(moto, s3_bucket, tmp_path):
    status, lines = start_up_failure(tmp_path, environ(moto, s3_bucket, moto, "no-such-queue"))
    assert status != 0
    assert lines == [
        f"antenna: cannot start: SQS queue 'no-such-queue' at {moto.endpoint}: no such queue "
        "(SQS GetQueueUrl answered 400 QueueDoesNotExist: The specified queue does not exist.)"]
