"""
Start-up on a spool left by a dead process: complete entries are stored,
half-written and corrupt ones are moved aside with a log line and never
uploaded, and the collector serves all the same.
"""

import hashlib
import os

import pytest_twisted

from antenna_tw.crash import Crash
from antenna_tw.spool import CORRUPT_DIR, Spool
from tests.helpers import http_request, minidump, raw_request, start_collector, stop_collector
from tests.helpers import test_environ as environ_for

IDS = {name: f"{n}e1bb258-cbbf-4589-a673-34f800{161100 + n}"
       for n, name in enumerate(["good", "older", "half", "orphan", "garbage", "damaged",
                                 "missing", "mismatch"])}


def crash(name):
    crash_id = IDS[name]
    dumps = {"upload_file_minidump": minidump() + name.encode(), "extra": name.encode() * 500}
    checksums = {dump: hashlib.sha256(data).hexdigest() for dump, data in dumps.items()}
    return Crash(crash_id, {"ProductName": "Test", "uuid": crash_id, "name": name,
                            "metadata": {"dump_checksums": checksums}}, dumps)


def spool(directory, name, stamp):
    """Write ``name``'s entry as the spool's writer does; its file names."""
    entry = Spool(str(directory), None, None)._put(crash(name), f"{stamp:020d}-{IDS[name]}")
    return [entry.filename] + [entry.dump_filename(dump) for dump in entry.dump_names]


def filename(name, stamp):
    return f"{stamp:020d}-{IDS[name]}.crash"


@pytest_twisted.ensureDeferred
async def test_a_dead_process_spool_is_stored_or_moved_aside(tmp_path, log_messages):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    kept = spool(spool_dir, "older", 1) + spool(spool_dir, "good", 8)
    moved = []
    half = spool(spool_dir, "half", 2)  # killed before the rename that commits it
    os.rename(spool_dir / half[0], spool_dir / (".tmp-" + half[0]))
    moved += [".tmp-" + half[0]] + half[1:]
    orphan = spool(spool_dir, "orphan", 3)  # dumps whose crash file never came
    os.unlink(spool_dir / orphan[0])
    moved += orphan[1:]
    garbage = spool(spool_dir, "garbage", 4)
    (spool_dir / garbage[0]).write_bytes(b"not a raw crash at all\n" * 40)
    moved += garbage
    damaged = spool(spool_dir, "damaged", 5)  # same size, a dump's checksum no longer matches
    data = bytearray((spool_dir / damaged[1]).read_bytes())
    data[-50] ^= 0xFF
    (spool_dir / damaged[1]).write_bytes(bytes(data))
    moved += damaged
    missing = spool(spool_dir, "missing", 6)
    os.unlink(spool_dir / missing[2])
    moved += [missing[0], missing[1]]
    mismatch = spool(spool_dir, "mismatch", 7)  # says it is "mismatch", holds "good"
    (spool_dir / mismatch[0]).write_bytes(crash("good").serialized_raw_crash())
    moved += mismatch

    running = await start_collector(tmp_path, environ_for(tmp_path))
    try:
        await running.wait_idle()
        assert running.stored_ids() == sorted([IDS["older"], IDS["good"]])
        for name in ("older", "good"):
            raw_crash, dump_names, dumps = running.stored(IDS[name])
            assert raw_crash == crash(name).raw_crash
            assert dumps == crash(name).dumps
        # Still serving.
        body = (b"--b\r\nContent-Disposition: form-data; name=\"ProductName\"\r\n\r\n"
                b"Test\r\n--b--\r\n")
        status, _, _ = await raw_request(running.port_number, http_request(
            body, [("Content-Type", "multipart/form-data; boundary=b")]))
        assert status == 200
        await running.wait_idle()
    finally:
        await stop_collector(running)

    assert sorted(os.listdir(spool_dir / CORRUPT_DIR)) == sorted(moved)
    assert sorted(os.listdir(spool_dir)) == [CORRUPT_DIR]
    assert not set(kept) & set(moved)
    for name in moved:
        assert any(message.startswith(f"spool entry {name} moved aside to corrupt: ")
                   for message in log_messages), (name, log_messages)
    assert any(message == f"spool entry .tmp-{filename('half', 2)} moved aside to corrupt: "
               "half-written" for message in log_messages)
    assert any(message.startswith(f"{IDS['damaged']}: spool entry unreadable, moved aside")
               for message in log_messages)
    assert "re-queued 3 spooled crashes" in log_messages  # older, damaged (found at load), good
