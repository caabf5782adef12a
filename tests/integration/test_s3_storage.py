"""S3CrashStorage against a real S3-compatible server (moto_server), read back with botocore."""

import json
import os
import re

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.python.threadpool import ThreadPool
from twisted.web.client import HTTPConnectionPool

from antenna_tw.crash import Crash, serialize_raw_crash
from antenna_tw.backoff import Backoff
from antenna_tw.ext.s3 import S3Unreachable
from antenna_tw.send_crash import build_multipart, post
from antenna_tw.storage import StorageUnavailable, StorageUnreachable
from tests.helpers import in_thread, minidump
from tests.integration.s3_helpers import build_storage, s3_environ, wait_for_key
from tests.s3server import free_port

CRASH_ID = "de0e4a4e-0d1c-4f2a-9d7e-3c5b1a260504"


@pytest_twisted.async_yield_fixture
async def storages():
    """Build S3 storages from environments; their pools and threads are closed after."""
    threadpool = ThreadPool(minthreads=1, maxthreads=4, name="test-s3")
    threadpool.start()
    built = []

    def make(environ, **kwargs):
        storage = build_storage(environ, threadpool, **kwargs)
        built.append(storage)
        return storage

    yield make
    for storage in built:
        await storage.close()
    threadpool.stop()


@pytest_twisted.ensureDeferred
async def test_crash_is_stored_at_antenna_keys_with_exact_bytes(moto, s3_bucket, storages):
    storage = storages(s3_environ(moto, s3_bucket))
    dumps = {"upload_file_minidump": minidump(), "memory_report": bytes(range(256)) * 10,
             "upload_file_minidump_browser": b""}
    raw_crash = {"ProductName": "Test", "uuid": CRASH_ID, "Note": "ünïcode",
                 "metadata": {"dump_checksums": {}}, "version": 2}
    await storage.save_crash(Crash(CRASH_ID, raw_crash, dumps))

    stored = await in_thread(moto.objects, s3_bucket)
    assert stored == {
        f"v1/dump_names/{CRASH_ID}":
            b'["memory_report", "upload_file_minidump", "upload_file_minidump_browser"]',
        f"v1/dump/{CRASH_ID}": minidump(),
        f"v1/memory_report/{CRASH_ID}": dumps["memory_report"],
        f"v1/upload_file_minidump_browser/{CRASH_ID}": b"",
        f"v2/raw_crash/de0/20260504/{CRASH_ID}": serialize_raw_crash(raw_crash),
    }


@pytest_twisted.ensureDeferred
async def test_keys_that_need_quoting_round_trip(moto, s3_bucket, storages):
    storage = storages(s3_environ(moto, s3_bucket))
    key = "v1/odd name/ü+=&?~%/x"
    await storage.connection.put_object(key, b"odd")
    assert await in_thread(moto.objects, s3_bucket) == {key: b"odd"}


def test_verify_passes_for_an_existing_bucket(moto, s3_bucket):
    threadpool = ThreadPool()
    build_storage(s3_environ(moto, s3_bucket), threadpool).verify()  # no reactor needed


def test_verify_refuses_a_missing_bucket(moto):
    storage = build_storage(s3_environ(moto, "no-such-bucket"), ThreadPool())
    with pytest.raises(StorageUnavailable) as caught:
        storage.verify()
    assert not isinstance(caught.value, StorageUnreachable)  # refuses the start
    message = str(caught.value)
    assert message == (f"S3 bucket 'no-such-bucket' at {moto.endpoint}: "
                       "HEAD bucket answered 404 NOT FOUND (no such bucket)")


def test_verify_reports_nothing_answering_as_unreachable():
    port = free_port()
    environ = {"CRASHSTORAGE_BUCKET_NAME": "crashes",
               "CRASHSTORAGE_ENDPOINT_URL": f"http://127.0.0.1:{port}",
               "CRASHSTORAGE_ACCESS_KEY": "AKIA", "CRASHSTORAGE_SECRET_ACCESS_KEY": "secret"}
    storage = build_storage(environ, ThreadPool())
    # Unreachable: the start goes on (antenna_tw/startup.py), unlike a missing bucket.
    with pytest.raises(StorageUnreachable) as caught:
        storage.verify()
    assert re.match(rf"^S3 bucket 'crashes' at http://127.0.0.1:{port}: "
                    r"no answer to HEAD bucket \(.*refused.*\)$", str(caught.value))


@pytest_twisted.ensureDeferred
async def test_health_checks_the_bucket(moto, s3_bucket, storages):
    assert await storages(s3_environ(moto, s3_bucket)).check_health() == []
    missing = storages(s3_environ(moto, "no-such-bucket"))
    assert await missing.check_health() == [
        f"S3 bucket 'no-such-bucket' at {moto.endpoint}: HEAD bucket answered 404"]


@pytest_twisted.ensureDeferred
async def test_a_dead_endpoint_fails_the_save_after_the_retries(storages):
    environ = {"CRASHSTORAGE_BUCKET_NAME": "crashes",
               "CRASHSTORAGE_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
               "CRASHSTORAGE_ACCESS_KEY": "AKIA", "CRASHSTORAGE_SECRET_ACCESS_KEY": "secret"}
    storage = storages(environ)
    storage.connection.attempts = 3
    storage.connection.backoff = Backoff(base=0.01)
    with pytest.raises(S3Unreachable, match="ConnectionRefusedError"):
        await storage.save_crash(Crash(CRASH_ID, {}, {}))


@pytest_twisted.ensureDeferred
async def test_collector_moves_posted_crashes_to_s3(moto, s3_bucket, collector_with):
    secret = moto.keys.secret_key
    running = await collector_with(**s3_environ(moto, s3_bucket))
    assert running.collector.storage.name == "s3"
    body, content_type = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                         {"upload_file_minidump": minidump()}, use_json=True)
    status, answer = await in_thread(post, running.submit_url, body, content_type,
                                     compressed=True)
    assert status == 200
    crash_id = answer.decode().strip().split("bp-")[1]
    raw_key = f"v2/raw_crash/{crash_id[:3]}/20{crash_id[-6:]}/{crash_id}"
    await wait_for_key(moto, s3_bucket, raw_key)
    stored = await in_thread(moto.objects, s3_bucket)
    assert stored[f"v1/dump/{crash_id}"] == minidump()
    raw_crash = json.loads(stored[raw_key])
    assert raw_crash["uuid"] == crash_id and raw_crash["metadata"]["payload"] == "json"

    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await treq.get(running.url + "/__heartbeat__", pool=pool)
    heartbeat = await response.json()
    assert response.code == 200, heartbeat
    assert heartbeat["info"]["storage"] == "s3"
    assert secret not in json.dumps(heartbeat)


@pytest_twisted.ensureDeferred
async def test_crashes_handed_over_in_memory_are_stored_byte_identical_and_leave_the_spool(
        moto, s3_bucket, collector_with):
    running = await collector_with(**s3_environ(moto, s3_bucket))
    large = os.urandom(300 * 1024)  # arrives in several pieces, as real dumps do
    posted = {}
    for n in range(3):
        dumps = {"upload_file_minidump": minidump(), "memory_report": large + bytes([n])}
        body, content_type = build_multipart({"ProductName": "Test", "Version": f"{n}"}, dumps)
        status, answer = await in_thread(post, running.submit_url, body, content_type)
        assert status == 200
        posted[answer.decode().strip().split("bp-")[1]] = dumps
    for crash_id in posted:
        await wait_for_key(moto, s3_bucket,
                           f"v2/raw_crash/{crash_id[:3]}/20{crash_id[-6:]}/{crash_id}")
    stored = await in_thread(moto.objects, s3_bucket)
    for crash_id, dumps in posted.items():
        assert stored[f"v1/dump/{crash_id}"] == dumps["upload_file_minidump"]
        assert stored[f"v1/memory_report/{crash_id}"] == dumps["memory_report"]
        assert stored[f"v1/dump_names/{crash_id}"] == b'["memory_report", "upload_file_minidump"]'
        raw_crash = json.loads(stored[f"v2/raw_crash/{crash_id[:3]}/20{crash_id[-6:]}/{crash_id}"])
        assert raw_crash["uuid"] == crash_id and raw_crash["Version"] == str(list(posted).index(crash_id))
    mover = running.collector.mover
    assert mover.handed_over == 3  # none read back from the spool
    spool = running.collector.spool
    for _ in range(100):
        if mover.queue_length() == 0:
            break
        await task.deferLater(reactor, 0.1, lambda: None)
    assert os.listdir(spool.directory) == ["corrupt"]
    assert spool.total_bytes == 0 and mover.held_bytes() == 0
