"""S3CrashStorage: write order and the heartbeat check (fake connection, task.Clock)."""

import hashlib
import json

import attr
import pytest
from twisted.internet import defer, task

from antenna_tw.config import ConfigError, load_config
from antenna_tw.crash import Crash
from antenna_tw.ext.s3 import S3CrashStorage, S3Error, S3Unreachable
from antenna_tw.ext.s3.client import Answer, BucketLocation
from antenna_tw.storage import CrashDamaged

CRASH_ID = "de0e4a4e-0d1c-4f2a-9d7e-3c5b1a260504"


@attr.s
class FakeConnection:
    location = attr.ib(default=BucketLocation("crashes", "us-west-2", "http://127.0.0.1:9"))
    puts = attr.ib(factory=list)
    fail_on = attr.ib(default=None)
    fail_code = attr.ib(default=(503, "SlowDown"))
    statuses = attr.ib(factory=list)
    heads = attr.ib(default=0)
    hashes = attr.ib(factory=dict)

    async def put_object(self, key, body, sha256=None):
        if key == self.fail_on:
            raise S3Error("PUT", key, *self.fail_code)
        self.puts.append((key, body))
        self.hashes[key] = sha256

    async def head_bucket(self):
        self.heads += 1
        status = self.statuses.pop(0)
        if isinstance(status, Exception):
            raise status
        return Answer(status, "Phrase")


def saved(storage, crash):
    results = []
    storage.save_crash(crash).addBoth(results.append)
    return results


def test_dump_names_then_dumps_then_raw_crash():
    connection = FakeConnection()
    storage = S3CrashStorage(connection, task.Clock())
    crash = Crash(CRASH_ID, {"ProductName": "Test", "uuid": CRASH_ID},
                  {"upload_file_minidump": b"\x00main", "memory_report": b"mem"})
    assert saved(storage, crash) == [None]
    assert connection.puts == [
        (f"v1/dump_names/{CRASH_ID}", b'["memory_report", "upload_file_minidump"]'),
        (f"v1/memory_report/{CRASH_ID}", b"mem"),
        (f"v1/dump/{CRASH_ID}", b"\x00main"),
        (f"v2/raw_crash/de0/20260504/{CRASH_ID}",
         json.dumps(crash.raw_crash, sort_keys=True).encode()),
    ]


def test_each_dump_is_sent_with_the_sha256_the_intake_computed():
    connection = FakeConnection()
    main, memory = b"\x00main", b"mem"
    checksums = {"upload_file_minidump": hashlib.sha256(main).hexdigest(),
                 "memory_report": "not a sha256"}
    crash = Crash(CRASH_ID, {"uuid": CRASH_ID, "metadata": {"dump_checksums": checksums}},
                  {"upload_file_minidump": main, "memory_report": memory})
    assert saved(S3CrashStorage(connection, task.Clock()), crash) == [None]
    assert connection.hashes[f"v1/dump/{CRASH_ID}"] == checksums["upload_file_minidump"]
    # Anything else is hashed by the connection.
    assert connection.hashes[f"v1/memory_report/{CRASH_ID}"] is None
    assert connection.hashes[f"v1/dump_names/{CRASH_ID}"] is None


def test_dump_names_are_written_when_there_are_no_dumps():
    connection = FakeConnection()
    saved(S3CrashStorage(connection, task.Clock()), Crash(CRASH_ID, {"a": "b"}))
    assert [key for key, _ in connection.puts] == [
        f"v1/dump_names/{CRASH_ID}", f"v2/raw_crash/de0/20260504/{CRASH_ID}"]
    assert connection.puts[0][1] == b"[]"


def test_the_v1_layout_moves_only_the_raw_crash():
    connection = FakeConnection()
    config = load_config({"CRASHSTORAGE_RAW_CRASH_LAYOUT": "V1"})
    assert config.storage.raw_crash_layout == "v1"
    storage = S3CrashStorage(connection, task.Clock(),
                             raw_crash_layout=config.storage.raw_crash_layout)
    saved(storage, Crash(CRASH_ID, {"a": "b"}, {"upload_file_minidump": b"x"}))
    assert [key for key, _ in connection.puts] == [
        f"v1/dump_names/{CRASH_ID}", f"v1/dump/{CRASH_ID}", f"v1/raw_crash/20260504/{CRASH_ID}"]


def test_an_unknown_layout_stops_start_up():
    with pytest.raises(ConfigError) as caught:
        load_config({"CRASHSTORAGE_RAW_CRASH_LAYOUT": "v3"})
    assert str(caught.value) == "CRASHSTORAGE_RAW_CRASH_LAYOUT='v3' is invalid: must be v2 or v1"


def test_a_failed_dump_stops_before_the_raw_crash():
    connection = FakeConnection(fail_on=f"v1/dump/{CRASH_ID}")
    results = saved(S3CrashStorage(connection, task.Clock()),
                    Crash(CRASH_ID, {}, {"upload_file_minidump": b"x"}))
    assert results[0].check(S3Error)
    assert [key for key, _ in connection.puts] == [f"v1/dump_names/{CRASH_ID}"]


@attr.s
class HeldConnection(FakeConnection):
    """Each PUT waits until the test ends it (``end(key)`` or ``end(key, error)``)."""

    held = attr.ib(factory=dict)

    async def put_object(self, key, body, sha256=None):
        self.held[key] = defer.Deferred()
        await self.held[key]
        self.puts.append((key, body))

    def end(self, key, error=None):
        waiting = self.held[key]
        waiting.errback(error) if error else waiting.callback(None)


DUMPS = {"upload_file_minidump": b"\x00main", "memory_report": b"mem"}
NAMES, MAIN, MEMORY, RAW = (f"v1/dump_names/{CRASH_ID}", f"v1/dump/{CRASH_ID}",
                            f"v1/memory_report/{CRASH_ID}",
                            f"v2/raw_crash/de0/20260504/{CRASH_ID}")


def test_dump_names_and_dumps_go_at_once_and_the_raw_crash_after_them_all():
    connection = HeldConnection()
    results = saved(S3CrashStorage(connection, task.Clock()), Crash(CRASH_ID, {}, DUMPS))
    assert set(connection.held) == {NAMES, MAIN, MEMORY}
    connection.end(MEMORY)
    connection.end(NAMES)
    assert RAW not in connection.held  # the main dump is not stored yet
    connection.end(MAIN)
    assert RAW in connection.held and results == []
    connection.end(RAW)
    assert results == [None]
    assert [key for key, _ in connection.puts][-1] == RAW


def test_a_failed_dump_fails_the_crash_once_every_put_ended_and_no_raw_crash_is_sent():
    connection = HeldConnection()
    results = saved(S3CrashStorage(connection, task.Clock()), Crash(CRASH_ID, {}, DUMPS))
    connection.end(MAIN, S3Error("PUT", MAIN, 403, "AccessDenied"))
    assert results == []  # the other PUTs of the crash are still running
    connection.end(NAMES)
    connection.end(MEMORY)
    assert results[0].check(S3Error) and results[0].value.status == 403
    assert RAW not in connection.held


def test_cancelling_a_save_cancels_every_put_under_way():
    connection = HeldConnection()
    save = S3CrashStorage(connection, task.Clock()).save_crash(Crash(CRASH_ID, {}, DUMPS))
    held = dict(connection.held)
    save.cancel()
    assert all(d.called for d in held.values())
    failures = []
    save.addErrback(failures.append)
    assert failures[0].check(defer.CancelledError)
    assert RAW not in connection.held


def health(storage):
    results = []
    storage.check_health().addBoth(results.append)
    return results[0]


def test_health_reports_no_answer():
    connection = FakeConnection(statuses=[S3Unreachable("HEAD", "bucket", "TimeoutError")])
    storage = S3CrashStorage(connection, task.Clock())
    assert health(storage) == [
        "S3 bucket 'crashes' at http://127.0.0.1:9: no answer to HEAD bucket (TimeoutError)"]




@pytest.mark.parametrize("code", ["XAmzContentSHA256Mismatch", "BadDigest"])
def test_a_dump_s3_finds_damaged_is_crash_damaged_and_no_raw_crash_is_sent(code):
    connection = FakeConnection(fail_on=f"v1/dump/{CRASH_ID}", fail_code=(400, code))
    storage = S3CrashStorage(connection, task.Clock())
    crash = Crash(CRASH_ID, {"ProductName": "Test", "uuid": CRASH_ID},
                  {"upload_file_minidump": b"\x00main"})
    [failure] = saved(storage, crash)
    assert failure.check(CrashDamaged)
    assert code in str(failure.value)
    assert not [key for key, _ in connection.puts if "raw_crash" in key]


def test_other_refusals_stay_errors_to_retry():
    connection = FakeConnection(fail_on=f"v1/dump/{CRASH_ID}", fail_code=(503, "SlowDown"))
    storage = S3CrashStorage(connection, task.Clock())
    crash = Crash(CRASH_ID, {"ProductName": "Test", "uuid": CRASH_ID},
                  {"upload_file_minidump": b"\x00main"})
    [failure] = saved(storage, crash)
    assert failure.check(S3Error) and not failure.check(CrashDamaged)
