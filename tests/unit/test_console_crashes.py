"""The console's reading of filesystem storage and the spool (console/crashes.py)."""

import os
from datetime import UTC, datetime

from antenna_tw.console.crashes import FSCrashes, merge_recent, spool_recent
from antenna_tw.crash import Crash
from antenna_tw.crashid import create_crash_id
from antenna_tw.ext.fs import FSCrashStorage


def store(storage, moment, product):
    crash_id = create_crash_id(datetime.fromtimestamp(moment, UTC), 0)
    storage.save_crash_blocking(Crash(crash_id, {"ProductName": product, "uuid": crash_id},
                                      {"upload_file_minidump": b"MDMP" + b"\0" * 60}))
    path = os.path.join(storage.paths(crash_id)[2])
    os.utime(path, (moment, moment))
    return crash_id


def test_newest_first_across_days_and_new_ones_seen(tmp_path):
    storage = FSCrashStorage(str(tmp_path / "crashes"), None, None)
    day = 1_796_000_000
    older = [store(storage, day - 86400 + n, "Old") for n in range(3)]
    newer = [store(storage, day + n, "New") for n in range(3)]
    finder = FSCrashes(storage.root, None, None)
    rows = finder.recent_blocking(4)
    assert [row.crash_id for row in rows] == newer[::-1] + older[-1:]
    assert rows[0].dumps == {"upload_file_minidump": 64}
    assert (rows[0].product, rows[0].state, rows[0].result) == ("New", "stored", "ACCEPT")
    latest = store(storage, day + 10, "Latest")
    again = finder.recent_blocking(4)
    assert [row.crash_id for row in again] == [latest] + newer[::-1]
    assert again[1] is rows[0]  # remembered, not read again


def test_the_spool_and_storage_merge_newest_first(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    storage = FSCrashStorage(str(tmp_path / "crashes"), None, None)
    stored = store(storage, 1_796_000_000, "Stored")
    waiting = create_crash_id(datetime.now(UTC), 1)
    stem = f"{1_796_000_100 * 10**9}-{waiting}"
    (spool / f"{stem}.crash").write_text('{"ProductName": "Waiting"}')
    (spool / f"{stem}.upload_file_minidump.dump").write_bytes(b"MDMP")
    rows = merge_recent(spool_recent([str(spool)], 10),
                        FSCrashes(storage.root, None, None).recent_blocking(10), 10)
    assert [(row.crash_id, row.state, row.product, row.result) for row in rows] == [
        (waiting, "spooled", "Waiting", "DEFER"), (stored, "stored", "Stored", "ACCEPT")]
    assert rows[0].dumps == {"upload_file_minidump": 4}
