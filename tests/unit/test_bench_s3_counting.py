"""
bench/antenna_s3.py's count of the crashes an S3 stand-in stored, from its
PUT log and its files: a crash counts when its raw crash was PUT and its
dump names and every dump they name are there; counted dumps are emptied.
"""

import hashlib
import json
import types

from bench.antenna_s3 import StoredCounter

BUCKET = "bench"
DUMP = b"MDMP" + bytes(range(256)) * 8


def standin(tmp_path):
    (tmp_path / "logs").mkdir()
    return types.SimpleNamespace(puts_log=tmp_path / "logs" / "puts.log",
                                 data=tmp_path / "data", bucket=BUCKET)


def put(stand_in, key, data=b"", status=201):
    if status < 300:
        path = stand_in.data / BUCKET / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    with open(stand_in.puts_log, "a") as fp:
        fp.write(f"{status} /{BUCKET}/{key}\n")


def crash(stand_in, crash_id, dumps=None, raw=True):
    dumps = {"upload_file_minidump": DUMP} if dumps is None else dumps
    put(stand_in, f"v1/dump_names/{crash_id}", json.dumps(sorted(dumps)).encode())
    for name, data in dumps.items():
        put(stand_in, f"v1/{'dump' if name == 'upload_file_minidump' else name}/{crash_id}",
            data)
    if raw:
        put(stand_in, f"v2/raw_crash/{crash_id[:3]}/20261203/{crash_id}", b"{}")


def test_counts_complete_crashes_and_empties_their_dumps(tmp_path):
    stand_in = standin(tmp_path)
    put(stand_in, "test/start-up-check")  # logged before: not read
    counter = StoredCounter(stand_in)
    crash(stand_in, "aaa1", {"upload_file_minidump": DUMP, "memory_report": b"mem"})
    crash(stand_in, "bbb2")
    crash(stand_in, "ccc3", raw=False)  # not complete until its raw crash is PUT

    counts = counter.take(manifest_sha=hashlib.sha256(DUMP).hexdigest(), keep_ids=True,
                          settle=0)

    assert counts["stored"] == 2
    assert counts["incomplete"] == 0
    assert (counts["sha_checked"], counts["sha_bad"]) == (2, 0)
    assert counter.ids == {"aaa1", "bbb2"}
    assert (stand_in.data / BUCKET / "v1" / "memory_report" / "aaa1").stat().st_size == 0
    assert (stand_in.data / BUCKET / "v1" / "dump" / "ccc3").stat().st_size == len(DUMP)


def test_a_raw_crash_without_a_named_dump_is_incomplete_and_reads_go_on(tmp_path):
    stand_in = standin(tmp_path)
    counter = StoredCounter(stand_in)
    crash(stand_in, "aaa1")
    (stand_in.data / BUCKET / "v1" / "dump" / "aaa1").unlink()
    put(stand_in, "v1/dump/zzz9", status=500)

    first = counter.take(settle=0)
    crash(stand_in, "ddd4")
    second = counter.take(settle=0)

    assert (first["stored"], first["incomplete"], first["failed_puts"]) == (0, 1, 1)
    assert (second["stored"], second["incomplete"]) == (1, 0)
