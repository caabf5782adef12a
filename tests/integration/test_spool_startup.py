"""
Start-up on a spool left by a dead process: complete entries are stored,
half-written and corrupt ones are moved aside with a log line and never
uploaded, and the collector serves all the same.
"""

import os

import pytest_twisted

from antenna_tw.crash import Crash
from antenna_tw.spool import CORRUPT_DIR, encode_entry
from tests.helpers import http_request, minidump, raw_request, start_collector, stop_collector
from tests.helpers import test_environ as environ_for

IDS = {name: f"{n}e1bb258-cbbf-4589-a673-34f800{161100 + n}"
       for n, name in enumerate(["good", "older", "half", "truncated", "garbage", "damaged",
                                 "empty", "mismatch"])}


def crash(name):
    crash_id = IDS[name]
    return Crash(crash_id, {"ProductName": "Test", "uuid": crash_id, "name": name},
                 {"upload_file_minidump": minidump() + name.encode(), "extra": name.encode() * 500})


def entry_bytes(name):
    return b"".join(encode_entry(crash(name)))


def filename(name, stamp):
    return f"{stamp:020d}-{IDS[name]}.crash"


@pytest_twisted.ensureDeferred
async def test_a_dead_process_spool_is_stored_or_moved_aside(tmp_path, log_messages):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    good = entry_bytes("good")
    damaged = bytearray(entry_bytes("damaged"))
    damaged[-50] ^= 0xFF  # same size, a dump's checksum no longer matches
    files = {
        filename("older", 1): entry_bytes("older"),
        ".tmp-" + filename("half", 2): entry_bytes("half")[:700],
        filename("truncated", 3): entry_bytes("truncated")[:-100],
        filename("garbage", 4): b"not a spool entry at all\n" * 40,
        filename("damaged", 5): bytes(damaged),
        filename("empty", 6): b"",
        filename("mismatch", 7): good,  # says it is "mismatch", holds "good"
        filename("good", 8): good,
    }
    for name, data in files.items():
        (spool_dir / name).write_bytes(data)

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

    moved = sorted(os.listdir(spool_dir / CORRUPT_DIR))
    kept = {filename("older", 1), filename("good", 8)}
    assert moved == sorted(set(files) - kept)
    assert sorted(os.listdir(spool_dir)) == [CORRUPT_DIR]
    for name in moved:
        assert any(message.startswith(f"spool entry {name} moved aside to corrupt: ")
                   for message in log_messages), (name, log_messages)
    assert any(message == f"spool entry .tmp-{filename('half', 2)} moved aside to corrupt: "
               "half-written" for message in log_messages)
    assert any(message.startswith(f"{IDS['damaged']}: spool entry unreadable, moved aside")
               for message in log_messages)
    assert "re-queued 3 spooled crashes" in log_messages  # older, damaged (found at load), good
