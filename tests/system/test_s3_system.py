"""
S3 storage with the real ``twistd -n antenna``
process configured by Antenna's option names, against moto_server, the
bucket read back with botocore's own client.
"""

import gzip
import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import minidump
from tests.integration.s3_helpers import s3_environ
from tests.s3server import Keys, MotoServer
from tests.system.collector_process import CollectorProcess

CRASH_ID = re.compile(r"^CrashID=bp-([0-9a-f-]{36})\n$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
DUMP_NAMES = ["memory_report", "upload_file_minidump", "upload_file_minidump_browser"]


def make_crash(sequence):
    """A Firefox-like crash: JSON extra with typed values, three dumps, gzip."""
    annotations = {"ProductName": "Test", "Version": "1.0", "Sequence": sequence,
                   "Nested": {"list": [1, 2.5, None], "flag": True}, "Note": "ünïcode"}
    dumps = {
        "upload_file_minidump": minidump() + os.urandom(16),
        "upload_file_minidump_browser": os.urandom(20_000),
        "memory_report": os.urandom(3_000),
    }
    body, content_type = build_multipart(annotations, dumps, use_json=True)
    return annotations, dumps, gzip.compress(body), content_type


def send(collector, sequence):
    """Post one crash; ``(crash_id, annotations, dumps, wire_size)``."""
    annotations, dumps, wire, content_type = make_crash(sequence)
    status, answer = post(collector.submit_url, wire, content_type,
                          headers={"Content-Encoding": "gzip"}, timeout=30)
    assert status == 200, answer
    match = CRASH_ID.match(answer.decode())
    assert match, answer
    return match.group(1), annotations, dumps, len(wire)


def send_many(collector, sequences, workers=4, pause=0.0):
    def one(sequence):
        if pause:
            time.sleep(pause * (sequence % workers))
        return send(collector, sequence)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, sequences))


def raw_crash_key(crash_id):
    return f"v2/raw_crash/{crash_id[:3]}/20{crash_id[-6:]}/{crash_id}"


def wait_all_stored(server, bucket, crash_ids, timeout):
    wanted = {raw_crash_key(crash_id) for crash_id in crash_ids}
    deadline = time.monotonic() + timeout
    while True:
        present = set(server.keys_in(bucket, "v2/raw_crash/"))
        if wanted <= present:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(wanted - present)} crashes not stored in {timeout} s")
        time.sleep(0.25)


def check_bucket(server, bucket, sent):
    """Every crash at Antenna's keys with the exact bytes; nothing else in the bucket."""
    stored = server.objects(bucket)
    expected_keys = set()
    for crash_id, annotations, dumps, wire_size in sent:
        keys = {
            "dump_names": f"v1/dump_names/{crash_id}",
            "upload_file_minidump": f"v1/dump/{crash_id}",
            "upload_file_minidump_browser": f"v1/upload_file_minidump_browser/{crash_id}",
            "memory_report": f"v1/memory_report/{crash_id}",
            "raw_crash": raw_crash_key(crash_id),
        }
        expected_keys.update(keys.values())
        assert json.loads(stored[keys["dump_names"]]) == DUMP_NAMES
        for name in DUMP_NAMES:
            assert stored[keys[name]] == dumps[name], (crash_id, name)
        raw_bytes = stored[keys["raw_crash"]]
        raw_crash = json.loads(raw_bytes)
        # docs/intake.rst, The raw crash: sorted keys, UTF-8, annotations plus the collector's fields
        assert raw_bytes == json.dumps(raw_crash, sort_keys=True).encode("utf-8")
        assert {k: v for k, v in raw_crash.items()
                if k not in ("uuid", "submitted_timestamp", "version", "metadata")} \
            == annotations
        assert raw_crash["uuid"] == crash_id
        assert raw_crash["version"] == 2
        assert TIMESTAMP.match(raw_crash["submitted_timestamp"])
        assert raw_crash["submitted_timestamp"][2:10].replace("-", "") == crash_id[-6:]
        assert raw_crash["metadata"] == {
            "payload": "json",
            "payload_compressed": "1",
            "payload_size": wire_size,
            "collector_notes": [],
            "dump_checksums": {name: hashlib.sha256(data).hexdigest()
                               for name, data in dumps.items()},
            "user_agent": "None",
            "throttle_rule": "accept_everything",
        }
    assert set(stored) == expected_keys


@pytest.fixture
def own_moto(tmp_path):
    """A moto server of this test's own, free to be stopped with SIGSTOP."""
    server = MotoServer.start(str(tmp_path))
    yield server
    server.stop()


@pytest.fixture
def new_collector(tmp_path, collectors):
    """Start a collector in a directory of its own; stopped when the test ends."""

    def start(environ, name="collector"):
        directory = tmp_path / name
        directory.mkdir()
        return collectors.start(directory, environ)

    return start


def test_hundred_crashes_land_in_s3_at_antenna_keys(moto, s3_bucket, new_collector):
    collector = new_collector(s3_environ(moto, s3_bucket, CONCURRENT_CRASHMOVERS=4))
    sent = send_many(collector, range(100))
    assert len({crash_id for crash_id, *_ in sent}) == 100
    wait_all_stored(moto, s3_bucket, [crash_id for crash_id, *_ in sent], timeout=60)
    check_bucket(moto, s3_bucket, sent)
    status, heartbeat = collector.heartbeat()
    assert status == 200, heartbeat
    assert moto.keys.secret_key not in collector.output()


def test_a_hung_s3_server_loses_nothing(own_moto, new_collector):
    bucket = own_moto.create_bucket()
    collector = new_collector(s3_environ(own_moto, bucket, CONCURRENT_CRASHMOVERS=4))
    sent = send_many(collector, range(30))

    own_moto.pause()  # SIGSTOP: connections are accepted by the kernel, never answered
    paused_at = time.monotonic()
    try:
        sent += send_many(collector, range(30, 70), pause=0.5)  # answered from the spool
        status, heartbeat = collector.heartbeat()
        assert status == 503
        assert any(error["name"] == "storage" and "no answer" in error["msg"]
                   for error in heartbeat["errors"]), heartbeat
        time.sleep(max(0.0, 15.0 - (time.monotonic() - paused_at)))
    finally:
        own_moto.resume()
    sent += send_many(collector, range(70, 100))

    assert len({crash_id for crash_id, *_ in sent}) == 100
    wait_all_stored(own_moto, bucket, [crash_id for crash_id, *_ in sent], timeout=60)
    check_bucket(own_moto, bucket, sent)
    output = collector.output()
    assert "TimeoutError" in output  # requests did hang and were retried
    assert own_moto.keys.secret_key not in output


def timed_heartbeat(collector):
    """``(status, body, seconds it took)`` of one /__heartbeat__."""
    started = time.monotonic()
    status, heartbeat = collector.heartbeat(timeout=5)
    return status, heartbeat, time.monotonic() - started


def test_the_heartbeat_answers_within_a_second_while_s3_hangs(own_moto, new_collector):
    # With S3 stopped, the heartbeat answers from its last known state at
    # once. Each worker's next HEAD (its last answer is reused for 5 s) hangs
    # and counts as failing past its bound (2 s): within 7.5 s of the stop
    # every answer is 503, and stays 503, each in under a second, for 30 s;
    # they turn 200 once S3 is back.
    bucket = own_moto.create_bucket()
    collector = new_collector(s3_environ(own_moto, bucket))
    status, heartbeat, _ = timed_heartbeat(collector)
    assert status == 200, heartbeat
    own_moto.pause()
    try:
        found_by = time.monotonic() + 9
        while time.monotonic() < found_by:
            answer = timed_heartbeat(collector)
            assert answer[2] < 1.0, answer
            time.sleep(0.5)
        seen = []
        until = time.monotonic() + 30
        while time.monotonic() < until:
            status, heartbeat, took = timed_heartbeat(collector)
            seen.append(took)
            assert status == 503 and took < 1.0, (took, heartbeat)
            assert any(error["name"] == "storage" and "no answer" in error["msg"]
                       for error in heartbeat["errors"]), heartbeat
            # the age of the last answer (the HEAD's own 5-s timeout) or the
            # time so far of the check that hangs
            storage = heartbeat["info"]["checks"]["storage"]
            assert storage["age_seconds"] is not None or storage["running_seconds"] > 2
            time.sleep(0.5)
        assert len(seen) >= 40
    finally:
        own_moto.resume()
    deadline = time.monotonic() + 15
    while (answer := timed_heartbeat(collector))[0] != 200:
        assert time.monotonic() < deadline, answer
        time.sleep(0.5)


def start_up_failure(collectors_dir, environ):
    collector = CollectorProcess.spawn(collectors_dir, environ)
    try:
        status = collector.wait_exit(30)
    finally:
        collector.stop()
    lines = [line for line in collector.output().splitlines() if line.strip()]
    return status, lines


def test_a_missing_bucket_stops_start_up(moto, tmp_path):
    status, lines = start_up_failure(tmp_path, s3_environ(moto, "no-such-bucket"))
    assert status != 0
    assert lines == [f"antenna: cannot start: S3 bucket 'no-such-bucket' at {moto.endpoint}: "
                     "HEAD bucket answered 404 NOT FOUND (no such bucket)"]


def test_wrong_credentials_stop_start_up(moto_auth, tmp_path):
    keys = Keys(moto_auth.collector_keys.access_key, "wrong-secret-0123456789")
    status, lines = start_up_failure(
        tmp_path, s3_environ(moto_auth.server, moto_auth.bucket, keys))
    assert status != 0
    assert lines == [
        f"antenna: cannot start: S3 bucket '{moto_auth.bucket}' at "
        f"{moto_auth.server.endpoint}: HEAD bucket answered 403 FORBIDDEN "
        "(wrong credentials, or no s3:ListBucket permission on the bucket)"]
    assert "wrong-secret" not in "\n".join(lines)
