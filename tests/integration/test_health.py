"""
Health and operations endpoints over real HTTP (docs/spool.rst, *Heartbeat*).
/__heartbeat__ really checks: storage, spool writability, free space,
SPOOL_MAX_BYTES and the age of the oldest unstored crash.
"""

import json
import os
import subprocess

import pytest_twisted
from twisted.internet import reactor, task

from antenna_tw.send_crash import build_multipart
from antenna_tw.workers import Worker
from antenna_tw.workers.shardstatus import write_status
from tests.helpers import http_request, minidump, raw_request

BODY, CONTENT_TYPE = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                     {"upload_file_minidump": minidump()})
INFO_KEYS = {"queue_length", "retrying", "oldest_age_seconds", "spool_bytes",
             "spool_max_bytes", "spool_free_bytes", "storage", "checks"}


async def get(running, path):
    status, headers, body = await raw_request(
        running.port_number, http_request(b"", [], method="GET", path=path))
    return status, headers, body


async def heartbeat(running):
    status, headers, body = await get(running, "/__heartbeat__")
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


async def submit(running):
    status, _, body = await raw_request(
        running.port_number, http_request(BODY, [("Content-Type", CONTENT_TYPE)]))
    assert status == 200, body
    return body.decode().strip()[len("CrashID=bp-"):]


@pytest_twisted.ensureDeferred
async def test_lbheartbeat(collector):
    status, headers, body = await get(collector, "/__lbheartbeat__")
    assert (status, body) == (200, b"")
    assert headers["content-type"] == "application/json"


@pytest_twisted.ensureDeferred
async def test_heartbeat_healthy_with_info(collector):
    status, answer = await heartbeat(collector)
    assert status == 200
    assert answer["errors"] == []
    assert answer["info"]["queue_length"] == 0
    assert answer["info"]["storage"] == "fs"


@pytest_twisted.ensureDeferred
async def test_heartbeat_info_after_a_crash_is_stored(collector):
    crash_id = await submit(collector)
    await collector.wait_stored(crash_id)
    await collector.wait_idle()
    status, answer = await heartbeat(collector)
    assert (status, answer["errors"]) == (200, [])
    info = answer["info"]
    assert set(info) == INFO_KEYS
    assert (info["queue_length"], info["retrying"], info["oldest_age_seconds"]) == (0, 0, 0.0)
    assert info["spool_bytes"] == 0 and info["spool_free_bytes"] > 0
    # each check ran for this heartbeat: fs and the spool answer at once
    assert set(info["checks"]) == {"storage", "spool"}
    for check in info["checks"].values():
        assert check["running_seconds"] is None and 0 <= check["age_seconds"] < 1


@pytest_twisted.ensureDeferred
async def test_heartbeat_unhealthy_when_spool_disk_is_short(collector_with):
    running = await collector_with(SPOOL_MIN_FREE_BYTES=str(1 << 60))
    status, answer = await heartbeat(running)
    assert status == 503
    assert [error["name"] for error in answer["errors"]] == ["spool"]
    assert "bytes free under the spool" in answer["errors"][0]["msg"]


@pytest_twisted.ensureDeferred
async def test_heartbeat_unhealthy_when_storage_cannot_be_written(collector):
    root = collector.fs_root
    os.rename(root, root + ".away")
    with open(root, "w") as blocker:
        blocker.write("a file where the FS root was")
    try:
        status, answer = await heartbeat(collector)
    finally:
        os.unlink(root)
        os.rename(root + ".away", root)
    assert status == 503
    assert [error["name"] for error in answer["errors"]] == ["storage"]
    assert answer["errors"][0]["msg"].startswith(f"crash storage root {root} is not writable")
    status, _ = await heartbeat(collector)
    assert status == 200


@pytest_twisted.ensureDeferred
async def test_heartbeat_unhealthy_when_the_spool_cannot_be_written(collector):
    spool_dir = collector.collector.spool.directory
    os.rename(spool_dir, spool_dir + ".away")
    with open(spool_dir, "w") as blocker:
        blocker.write("a file where the spool was")
    try:
        status, answer = await heartbeat(collector)
    finally:
        os.unlink(spool_dir)
        os.rename(spool_dir + ".away", spool_dir)
    assert status == 503
    assert answer["errors"] == [{"name": "spool",
                                 "msg": f"{spool_dir} is not writable: Not a directory"}]


@pytest_twisted.ensureDeferred
async def test_heartbeat_unhealthy_over_max_bytes_and_when_crashes_wait_too_long(collector_with):
    running = await collector_with(CRASHSTORAGE_CLASS="tests.helpers.NeverStorage",
                                   SPOOL_MAX_BYTES=str(len(BODY) // 2), SPOOL_MAX_AGE="0.3")
    await submit(running)
    status, answer = await heartbeat(running)
    assert status == 503
    assert answer["errors"] == [{"name": "spool", "msg": "spool is over SPOOL_MAX_BYTES"}]
    assert answer["info"]["queue_length"] == 1
    assert answer["info"]["spool_bytes"] > answer["info"]["spool_max_bytes"]
    await task.deferLater(reactor, 0.4, lambda: None)
    status, answer = await heartbeat(running)
    assert answer["errors"][-1]["name"] == "crashmover"
    assert answer["errors"][-1]["msg"].startswith("oldest unsaved crash is ")
    assert answer["info"]["oldest_age_seconds"] >= 0.3


@pytest_twisted.ensureDeferred
async def test_version(collector, tmp_path):
    status, _, body = await get(collector, "/__version__")
    assert (status, json.loads(body)) == (200, {})
    version = {"build": "b", "commit": "c", "source": "s", "version": "1.2.3"}
    (tmp_path / "version.json").write_text(json.dumps(version))
    status, _, body = await get(collector, "/__version__")
    assert (status, json.loads(body)) == (200, version)


@pytest_twisted.ensureDeferred
async def test_broken_is_500_without_details(collector):
    status, headers, body = await get(collector, "/__broken__")
    assert (status, body) == (500, b"Internal Server Error")
    assert headers["content-type"].startswith("text/plain")
    # the process keeps serving afterwards
    assert (await get(collector, "/__lbheartbeat__"))[0] == 200


@pytest_twisted.ensureDeferred
async def test_a_workers_heartbeat_counts_the_crashes_waiting_in_the_other_shards(tmp_path):
    from tests.helpers import start_collector, stop_collector
    from tests.helpers import test_environ as environ_for

    now_ns = int(reactor.seconds() * 1e9)
    siblings = [tmp_path / "worker-1", tmp_path / "worker-2", tmp_path / "worker-3"]
    siblings[0].mkdir()
    siblings[1].mkdir()  # worker-3 has no shard yet
    crash_id = "de1bb258-cbbf-4589-a673-34f800160918"
    waiting = {
        siblings[0]: [now_ns - 5 * 10**9, now_ns - 700 * 10**9],  # one is 700 s old
        siblings[1]: [now_ns - 1 * 10**9],
    }
    for shard, stamps in waiting.items():
        for stamp in stamps:
            (shard / f"{stamp:020d}-{crash_id}.crash").write_bytes(b"{}")
            (shard / f"{stamp:020d}-{crash_id}.upload_file_minidump.dump").write_bytes(b"MDMP")
    (siblings[1] / f".tmp-{now_ns - 10**12:020d}-{crash_id}.crash").write_bytes(b"")

    # Worker 0 of 4: the other shards are worker-1 to worker-3 under tmp_path.
    running = await start_collector(tmp_path, environ_for(tmp_path),
                                    worker=Worker(0, 4, os.getpid(), str(tmp_path)))
    try:
        status, answer = await heartbeat(running)
        assert answer["info"]["queue_length"] == 3
        assert 700 <= answer["info"]["oldest_age_seconds"] < 710
        assert status == 503  # SPOOL_MAX_AGE is 600 s
        assert [error["name"] for error in answer["errors"]] == ["crashmover"]

        for path in siblings[0].iterdir():  # the other worker stored them
            path.unlink()
        status, answer = await heartbeat(running)
        assert (status, answer["info"]["queue_length"]) == (200, 1)
        assert answer["info"]["oldest_age_seconds"] < 10
    finally:
        await stop_collector(running)


def write_entry(shard, stamp_ns, crash_id, raw_size, dump_size):
    """A spool entry as a worker leaves it: the dump, then the raw crash."""
    stem = f"{stamp_ns:020d}-{crash_id}"
    (shard / f"{stem}.upload_file_minidump.dump").write_bytes(b"M" * dump_size)
    (shard / f"{stem}.crash").write_bytes(b"{" + b" " * (raw_size - 2) + b"}")
    return raw_size + dump_size


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest_twisted.ensureDeferred
async def test_a_workers_heartbeat_adds_the_other_shards_bytes_and_retrying_counts(tmp_path):
    from tests.helpers import start_collector, stop_collector
    from tests.helpers import test_environ as environ_for

    share = 100_000  # this worker's share of SPOOL_MAX_BYTES, as the tap gives it
    now_ns = int(reactor.seconds() * 1e9)
    crash_id = "de1bb258-cbbf-4589-a673-34f800160918"
    worker_1, worker_2 = tmp_path / "worker-1", tmp_path / "worker-2"
    for shard in (worker_1, worker_2, worker_1 / "corrupt"):
        shard.mkdir()
    held = {
        worker_1: write_entry(worker_1, now_ns - 10**9, crash_id, 300, 4_000)
        + write_entry(worker_1, now_ns - 2 * 10**9, crash_id, 500, 6_000),
        worker_2: write_entry(worker_2, now_ns - 3 * 10**9, crash_id, 200, 1_000),
    }
    # A dump whose raw crash is still being written: on the disk, not yet an entry.
    (worker_1 / f"{now_ns:020d}-{crash_id}.other.dump").write_bytes(b"D" * 700)
    held[worker_1] += 700
    # Not counted: a raw crash under its temp name, what was moved aside, status files.
    (worker_1 / f".tmp-{now_ns:020d}-{crash_id}.crash").write_bytes(b"x" * 9_000)
    (worker_1 / "corrupt" / f"{now_ns:020d}-{crash_id}.crash").write_bytes(b"x" * 9_000)
    write_status(str(worker_1), {"pid": os.getpid(), "retrying": 2})  # a running worker
    write_status(str(worker_2), {"pid": dead_pid(), "retrying": 5})  # a worker that died

    running = await start_collector(
        tmp_path, environ_for(tmp_path, CRASHSTORAGE_CLASS="tests.helpers.NeverStorage",
                              SPOOL_MAX_BYTES=share),
        worker=Worker(0, 4, os.getpid(), str(tmp_path)))  # worker-1 to worker-3 are the others
    try:
        await submit(running)  # one crash of its own, never stored
        own = running.collector.admission.used_bytes()
        assert own > 0
        status, answer = await heartbeat(running)
        assert (status, answer["errors"]) == (200, [])
        info = answer["info"]
        assert info["spool_bytes"] == own + held[worker_1] + held[worker_2]
        assert info["spool_max_bytes"] == 4 * share  # four workers, each with its share
        assert info["retrying"] == 2  # its own 0, worker-1's 2, and none in a dead worker
        assert info["queue_length"] == 1 + 2 + 1

        # worker-2's worker is back and finds its saves failing; worker-2 fills up.
        write_status(str(worker_2), {"pid": os.getpid(), "retrying": 1})
        held[worker_2] += write_entry(worker_2, now_ns, crash_id, 100, share)
        status, answer = await heartbeat(running)
        assert status == 503
        assert answer["errors"] == [{"name": "spool", "msg": "spool shard worker-2 is over "
                                                            "its share of SPOOL_MAX_BYTES"}]
        assert answer["info"]["spool_bytes"] == own + held[worker_1] + held[worker_2]
        assert answer["info"]["retrying"] == 3
    finally:
        await stop_collector(running)


@pytest_twisted.ensureDeferred
async def test_a_spool_that_cannot_take_crashes_is_reported_and_logged_once(collector):
    """
    SPOOL_MIN_FREE_BYTES=0 (the test default) and every spool write failing
    with ENOSPC, as on a disk with a few bytes free: each crash is answered
    busy, one warning without a traceback says why, and the heartbeat
    reports it until a write succeeds again.
    """
    import errno

    from twisted.logger import globalLogPublisher

    from antenna_tw.logs import format_message

    spool = collector.collector.spool
    events = []
    globalLogPublisher.addObserver(events.append)
    put = spool._put

    def disk_full(crash, stem):
        raise OSError(errno.ENOSPC, "No space left on device")

    spool._put = disk_full
    try:
        for _ in range(5):
            status, _, answer = await raw_request(
                collector.port_number, http_request(BODY, [("Content-Type", CONTENT_TYPE)]))
            assert (status, answer) == (503, b"Discarded=busy")
        status, answer = await heartbeat(collector)
    finally:
        spool._put = put
        globalLogPublisher.removeObserver(events.append)
    failed = [event for event in events if "spool write failed" in format_message(event)]
    assert len(failed) == 1, [format_message(event) for event in failed]
    assert failed[0]["log_level"].name == "warn" and "log_failure" not in failed[0]
    assert format_message(failed[0]).endswith(
        ": spool write failed (No space left on device (ENOSPC)); answered busy")
    assert status == 503
    [error] = answer["errors"]
    assert error["name"] == "spool"
    assert error["msg"].startswith("crashes are refused: the last spool write failed ")
    assert error["msg"].endswith(" s ago: No space left on device (ENOSPC)")
    await submit(collector)  # a write that succeeds: the spool takes crashes again
    status, answer = await heartbeat(collector)
    assert (status, answer["errors"]) == (200, [])


@pytest_twisted.ensureDeferred
async def test_crashes_answered_busy_for_one_reason_log_one_line_per_interval(collector_with):
    from twisted.logger import globalLogPublisher

    from antenna_tw.logs import format_message

    running = await collector_with(SPOOL_MIN_FREE_BYTES=str(1 << 60))
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(5):
            status, _, _ = await raw_request(
                running.port_number, http_request(BODY, [("Content-Type", CONTENT_TYPE)]))
            assert status == 503
    finally:
        globalLogPublisher.removeObserver(events.append)
    busy = [format_message(event) for event in events
            if format_message(event).endswith("; answered busy")]
    assert len(busy) == 1 and busy[0].endswith(
        ": disk under the spool is nearly full; answered busy"), busy
