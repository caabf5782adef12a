"""
A collector that publishes: each stored crash's id reaches a real SQS queue
(moto_server), its spool entry goes only once the id is published, an entry
found marked stored at start-up is published without being stored again,
CRASHPUBLISH_ACCEPTED_ONLY leaves deferred crashes out, and the heartbeat
reports the publisher.
"""

import json
import os
import urllib.request

import pytest_twisted
from twisted.internet import reactor, task

from antenna_tw.crash import Crash
from antenna_tw.spool import STORED_SUFFIX, Spool
from tests.helpers import in_thread, start_collector, stop_collector
from tests.helpers import test_environ as environ_for
from tests.sqs_helpers import create_queue, receive_all, sqs_environ

ACCEPTED_ID = "0e1bb258-cbbf-4589-a673-34f800261203"
DEFERRED_ID = "1e1bb258-cbbf-4589-a673-34f801261203"


def environ(tmp_path, moto, queue, **overrides):
    return {**environ_for(tmp_path), **sqs_environ(moto, queue),
            "CRASHPUBLISH_VERIFY_MESSAGE": "false",
            "CRASHMOVER_RETRY_BASE_DELAY": "0.05", "CRASHMOVER_RETRY_MAX_DELAY": "0.2",
            **{key: str(value) for key, value in overrides.items()}}


def post(url, crash_id=None):
    fields = {"ProductName": "Test", "Version": "1.0"}
    if crash_id:
        fields["uuid"] = crash_id
    body = json.dumps(fields).encode()
    boundary = "b0und"
    data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"extra\"\r\n"
            f"Content-Type: application/json\r\n\r\n").encode() + body + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"upload_file_minidump\"; "
        f"filename=\"d.dmp\"\r\nContent-Type: application/octet-stream\r\n\r\nMDMP\r\n"
        f"--{boundary}--\r\n").encode()
    request = urllib.request.Request(url + "/submit", data=data, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    assert text.startswith("CrashID=bp-"), text
    return text.strip()[len("CrashID=bp-"):]


async def eventually(check, timeout=15.0):
    waited = 0.0
    while True:
        result = await check()
        if result:
            return result
        if waited > timeout:
            raise AssertionError(f"not true after {timeout} s")
        await task.deferLater(reactor, 0.1, lambda: None)
        waited += 0.1


def spooled(tmp_path):
    return sorted(os.listdir(tmp_path / "spool")) if (tmp_path / "spool").exists() else []


def stored_ids(tmp_path):
    """The ids of the raw crashes in the filesystem storage (``<id>.json``)."""
    found = set()
    for _, _, files in os.walk(tmp_path / "crashes"):
        found.update(name[:-len(".json")] for name in files if name.endswith(".json"))
    return found


@pytest_twisted.ensureDeferred
async def test_stored_crashes_are_published_then_leave_the_spool(tmp_path, moto):
    queue, url = create_queue(moto)
    running = await start_collector(tmp_path, environ(tmp_path, moto, queue))
    try:
        ids = [await in_thread(post, running.url) for _ in range(12)]
        received = []

        async def all_received():
            received.extend(await in_thread(receive_all, moto, url))
            return set(ids) <= set(received)

        await eventually(all_received)
        await eventually(lambda: in_thread(lambda: spooled(tmp_path) == ["corrupt"]))
        assert sorted(received) == sorted(ids)
        assert stored_ids(tmp_path) == set(ids)
        status, heartbeat = await in_thread(_heartbeat, running.url)
        assert status == 200, heartbeat
        assert heartbeat["info"]["publisher"] == "sqs"
        assert heartbeat["info"]["publish_queue_length"] == 0
    finally:
        await stop_collector(running)


def _heartbeat(url):
    try:
        with urllib.request.urlopen(url + "/__heartbeat__", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest_twisted.ensureDeferred
async def test_an_entry_marked_stored_is_published_without_storing_it_again(tmp_path, moto):
    queue, url = create_queue(moto)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    stem = f"{1:020d}-{ACCEPTED_ID}"
    entry = Spool(str(spool_dir), None, None)._put(
        Crash(ACCEPTED_ID, {"uuid": ACCEPTED_ID}, {"upload_file_minidump": b"MDMP"}), stem)
    (spool_dir / (stem + STORED_SUFFIX)).touch()
    (spool_dir / (f"{2:020d}-{DEFERRED_ID}" + STORED_SUFFIX)).touch()  # an orphan marker
    running = await start_collector(tmp_path, environ(tmp_path, moto, queue))
    try:
        assert await eventually(lambda: in_thread(receive_all, moto, url)) == [ACCEPTED_ID]
        await eventually(lambda: in_thread(lambda: spooled(tmp_path) == ["corrupt"]))
        assert stored_ids(tmp_path) == set()  # published, not stored again
        assert entry.crash_id == ACCEPTED_ID
    finally:
        await stop_collector(running)


@pytest_twisted.ensureDeferred
async def test_accepted_only_leaves_deferred_crashes_unpublished(tmp_path, moto):
    queue, url = create_queue(moto)
    running = await start_collector(tmp_path, environ(
        tmp_path, moto, queue, CRASHPUBLISH_ACCEPTED_ONLY="true",
        STAGE_SUBMITTER_BEARER_TOKEN=""))
    try:
        spool_dir = tmp_path / "spool"
        for crash_id in (ACCEPTED_ID, DEFERRED_ID):
            running.collector.mover.enqueue(
                Spool(str(spool_dir), None, None)._put(
                    Crash(crash_id, {"uuid": crash_id}, {}), f"{3:020d}-{crash_id}"))
        assert await eventually(lambda: in_thread(receive_all, moto, url)) == [ACCEPTED_ID]
        await eventually(lambda: in_thread(lambda: spooled(tmp_path) == ["corrupt"]))
        assert stored_ids(tmp_path) == {ACCEPTED_ID, DEFERRED_ID}
    finally:
        await stop_collector(running)
