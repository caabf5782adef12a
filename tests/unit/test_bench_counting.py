"""
bench/run_bench.py's count of stored crashes after each load run: what it
counts, and that setting counted crashes aside keeps them out of the next
count without freeing their inodes (docs/performance.rst, *Method*).
"""

import hashlib
import json
import os

from bench.run_bench import COUNTED, DUMP_NAME, count_stored, remove_set_aside

DAY = "20261128"
DUMP = b"MDMP" + bytes(range(256)) * 16


def store(root, crash_id, day=DAY, dump=DUMP, parts=("raw_crash", "dump_names", DUMP_NAME)):
    """Write a crash in filesystem storage's layout (docs/spool.rst, *Where crashes are stored*)."""
    files = {
        "raw_crash": (os.path.join("raw_crash", crash_id + ".json"),
                      json.dumps({"uuid": crash_id}).encode()),
        "dump_names": (os.path.join("dump_names", crash_id + ".json"),
                       json.dumps([DUMP_NAME]).encode()),
        DUMP_NAME: (os.path.join(DUMP_NAME, crash_id), dump),
    }
    for part in parts:
        relative, data = files[part]
        path = root / day / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def crash_id(n):
    return f"de1e7ed0-0000-4000-8000-{n:06d}0261128"


def test_counts_complete_incomplete_and_temp_files(tmp_path):
    store(tmp_path, crash_id(1))
    store(tmp_path, crash_id(2))
    store(tmp_path, crash_id(3), parts=("raw_crash", "dump_names"))
    (tmp_path / DAY / "raw_crash" / ".tmp-1-2-x.json").write_bytes(b"{}")

    counts = count_stored(tmp_path)

    assert counts["stored"] == 2
    assert counts["incomplete"] == 1
    assert counts["tmp_left"] == 1


def test_checks_dumps_against_the_payload_digest(tmp_path):
    store(tmp_path, crash_id(1))
    store(tmp_path, crash_id(2), dump=b"not the payload")

    counts = count_stored(tmp_path, check=2, manifest_sha=hashlib.sha256(DUMP).hexdigest())

    assert counts["sha_checked"] == 2
    assert counts["sha_bad"] == 1


def test_set_aside_keeps_inodes_and_leaves_them_out_of_the_next_count(tmp_path):
    store(tmp_path, crash_id(1))
    store(tmp_path, crash_id(2))
    dump_inode = os.stat(tmp_path / DAY / DUMP_NAME / crash_id(1)).st_ino

    assert count_stored(tmp_path, then="set-aside")["stored"] == 2

    assert not (tmp_path / DAY).exists()
    [aside] = (tmp_path / COUNTED).iterdir()
    kept_dump = aside / DUMP_NAME / crash_id(1)
    assert os.stat(kept_dump).st_ino == dump_inode  # not deleted and recreated
    assert kept_dump.stat().st_size == 0  # its blocks are freed
    assert (aside / "raw_crash" / (crash_id(1) + ".json")).stat().st_size > 0

    store(tmp_path, crash_id(3))  # the next run writes its day directory again
    assert count_stored(tmp_path, then="set-aside")["stored"] == 1
    assert len(list((tmp_path / COUNTED).iterdir())) == 2


def test_delete_removes_the_counted_files(tmp_path):
    store(tmp_path, crash_id(1))

    assert count_stored(tmp_path, then="delete")["stored"] == 1

    assert count_stored(tmp_path)["stored"] == 0
    assert not any((tmp_path / DAY / DUMP_NAME).iterdir())


def test_set_aside_crashes_go_at_the_end_unless_kept(tmp_path):
    store(tmp_path, crash_id(1))
    count_stored(tmp_path, then="set-aside")

    remove_set_aside(tmp_path, keep=True)
    assert (tmp_path / COUNTED).exists()

    remove_set_aside(tmp_path)
    assert not (tmp_path / COUNTED).exists()
