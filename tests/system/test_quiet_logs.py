"""
On the real ``twistd -n antenna``: a spool disk that is full for
FULL_SECONDS under load is logged in a few lines per LOGGING_REPEAT_INTERVAL,
without a traceback, and the heartbeat says why crashes are refused (SPOOL_MIN_FREE_BYTES=0: no threshold would say it).

The spool is a 4 MB tmpfs mounted for the test, so it needs root (and the
right to mount); otherwise the test is skipped, saying so.
"""

from __future__ import annotations

import collections
import errno
import os
import re
import subprocess
import threading
import time

import pytest

from tests.system.crash_clients import log_records, make_crash, post_crash, spool_entries

FULL_SECONDS = float(os.environ.get("ANTENNA_TEST_FULL_SECONDS", "40"))
INTERVAL = 10.0  # LOGGING_REPEAT_INTERVAL for the test: four intervals of a full disk
WORKERS = 2  # each logs its own refusals
COUNT = re.compile(r"\((\d+) times? in the last \d+ s\)$")


@pytest.fixture
def small_spool(tmp_path):
    """A 4 MB tmpfs at tmp_path/spool, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a 4 MB tmpfs as the spool's disk")
    spool = tmp_path / "spool"
    spool.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(spool)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs for the spool: {mounted.stderr.strip()}")
    yield spool
    subprocess.run(["umount", "-l", str(spool)], check=False)


def wait_spool_empty(spool, timeout=10.0):
    deadline = time.monotonic() + timeout
    while spool_entries(spool):
        assert time.monotonic() < deadline, "the spool did not empty"
        time.sleep(0.05)


def fill(directory, leave):
    """A file taking all the room under ``directory`` but about ``leave`` bytes."""
    path = directory / "filler"
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as filler:
        while True:
            try:
                filler.write(block)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
        filler.truncate(max(0, filler.tell() - leave))
    return path


def test_a_full_spool_disk_is_logged_quietly_and_the_heartbeat_says_why(
        tmp_path, small_spool, collectors, record_property):
    directory = tmp_path / "run"
    directory.mkdir()
    collector = collectors.start(directory, {
        "SPOOL_DIR": str(small_spool), "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"),
        "LOGGING_LEVEL": "INFO", "SHUTDOWN_TIMEOUT": "3",
        "LOGGING_REPEAT_INTERVAL": str(INTERVAL)}, args=("--workers", str(WORKERS)))
    assert post_crash(collector.port, make_crash(0)).status == 200
    wait_spool_empty(small_spool)  # stored: it frees no room later
    # Room for the heartbeat's probe file, not for a crash (40 KB dumps).
    filler = fill(small_spool, leave=16384)
    full_from = time.time()
    stop = threading.Event()
    statuses = []

    def load(first):
        sequence = first
        while not stop.is_set():
            statuses.append(post_crash(collector.port, make_crash(sequence)).status)
            sequence += 4

    threads = [threading.Thread(target=load, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(FULL_SECONDS / 2)
        status, heartbeat = collector.heartbeat()
        time.sleep(FULL_SECONDS / 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    full_until = time.time()
    os.unlink(filler)
    # Room again: crashes are taken, and once each worker has written one
    # the heartbeat is healthy again.
    healthy, sequence, deadline = 0, 10**6, time.monotonic() + 20
    while healthy < 5 and time.monotonic() < deadline:
        assert post_crash(collector.port, make_crash(sequence)).status == 200
        sequence += 1
        after_status, after = collector.heartbeat()
        healthy = healthy + 1 if after_status == 200 else 0
    collector.stop()

    records = log_records(collector.output())
    during = [record for record in records
              if full_from * 1e9 <= record["Timestamp"] <= full_until * 1e9]
    warnings = [record for record in during if record["Severity"] <= 4]
    write_failed = [record for record in records
                    if "spool write failed" in record["Fields"]["msg"]]
    refused = statuses.count(503)
    answers = sorted(collections.Counter(statuses).items())
    figures = {"answers": answers, "crashes_refused": refused, "crashes_answered": len(statuses),
               "log_lines_while_full": len(during), "warning_lines_while_full": len(warnings),
               "spool_write_failed_lines": len(write_failed)}
    for name, value in figures.items():
        record_property(name, value)
    print(figures, [record["Fields"]["msg"] for record in write_failed])

    assert refused == len(statuses) > 100, figures
    assert "Traceback" not in collector.output()
    # Each worker: the first at once, then one per interval with its count
    # (one more at the edges).
    per_worker = FULL_SECONDS / INTERVAL + 2
    assert len(write_failed) <= WORKERS * per_worker, figures
    assert len(warnings) <= WORKERS * per_worker, figures
    assert all(record["Severity"] == 4 for record in write_failed)
    counted = 0
    for pid in {record["Pid"] for record in write_failed}:
        mine = [record for record in write_failed if record["Pid"] == pid]
        lines = [record["Fields"]["msg"] for record in mine]
        assert not COUNT.search(lines[0]), lines
        counted += sum(int(match.group(1)) if (match := COUNT.search(line)) else 1
                       for line in lines)
        # One line per interval at most: a count when the interval ends, or a
        # fresh line after an interval that ended quietly (the kernel hands a
        # shared socket's connections to either worker: one may see none for
        # a while). Only the count held back at stop comes sooner.
        for earlier, later in zip(mine, mine[1:]):
            at_stop = later["Timestamp"] > full_until * 1e9
            gap = (later["Timestamp"] - earlier["Timestamp"]) / 1e9
            assert gap >= INTERVAL - 0.5 or (at_stop and COUNT.search(later["Fields"]["msg"])), (
                gap, lines)
    if FULL_SECONDS > INTERVAL + 2:
        assert any(COUNT.search(line["Fields"]["msg"]) for line in write_failed), figures
    assert counted == refused, figures  # every refusal counted once, held counts at stop too
    assert status == 503, heartbeat
    reasons = [error["msg"] for error in heartbeat["errors"] if error["name"] == "spool"]
    assert any(reason.startswith("crashes are refused: the last spool write failed")
               and reason.endswith("No space left on device (ENOSPC)")
               for reason in reasons), heartbeat
    assert (after_status, after["errors"]) == (200, []), after
