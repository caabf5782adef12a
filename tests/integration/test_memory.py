"""What a crash leaves in memory once it is answered and stored."""

import gc
import os

import pytest_twisted

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import in_thread


def holders_of(value):
    """
    Names of the objects that hold ``value`` or a piece of it of 1 KiB or
    more (but not ``value`` itself), directly or through a dict, list or
    tuple: dumps are kept in the pieces they arrived in. gc.get_objects()
    skips dicts that hold only strings and bytes, so they are found as the
    referents of tracked objects.
    """
    found = []

    def holds(container):
        if isinstance(container, dict):
            items = container.values()
        elif isinstance(container, (list, tuple)):
            items = container
        else:
            return False
        return any(item is not value and isinstance(item, (bytes, bytearray))
                   and len(item) >= 1024 and item in value for item in items)

    for owner in gc.get_objects():
        if holds(owner):
            found.append(type(owner).__name__)
        for referent in gc.get_referents(owner):
            if not gc.is_tracked(referent) and holds(referent):
                found.append(f"{type(owner).__name__}.{type(referent).__name__}")
    return found


@pytest_twisted.ensureDeferred
async def test_a_stored_crash_leaves_no_dump_behind_even_without_the_cyclic_gc(collector):
    """
    klein leaves every request in a reference cycle, which only the cyclic
    garbage collector frees, and under load it runs after hundreds of
    requests. So once a crash is answered, nothing reachable from its
    request may hold the crash's dumps: they must go when their last
    reference does, even with the cyclic collector off.
    """
    # random bytes: no other object in the process holds a piece of them;
    # larger than one 256 KiB read, so the dump arrives in several pieces
    dump = b"MDMP" + os.urandom(600 * 1024)
    body, content_type = build_multipart({"ProductName": "Test"}, {"upload_file_minidump": dump})
    gc.collect()
    gc.disable()
    try:
        answers = []
        for _ in range(3):
            status, answer = await in_thread(post, collector.submit_url, body, content_type)
            assert status == 200, answer
            answers.append(answer.decode().strip()[len("CrashID=bp-"):])
        for crash_id in answers:
            stored = await collector.wait_stored(crash_id)
            assert stored[2]["upload_file_minidump"] == dump
            del stored
        await collector.wait_idle()
        holders = holders_of(dump)
    finally:
        gc.enable()
    assert holders == []
