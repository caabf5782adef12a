"""
The memory ceiling on the real ``twistd -n antenna``:
eight gzip bombs and eight 25 MiB bodies at once against one worker, while
valid crashes are sent. The worker's peak RSS (VmHWM) stays within the bound
docs/intake.rst (*A memory ceiling*) derives from the options, and every
valid crash answered with an id is stored. Figures are printed (run with ``-s``).
"""

import glob
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import crash_id_from, gzip_bomb, http_request, minidump, raw_exchange
from tests.system.test_gzip_bomb_memory import memory_kib

MIB = 1 << 20
MAX_INFLIGHT_BYTES = 256 * MIB  # one worker: all of it is the worker's
MAX_DECOMPRESSED_SIZE = 100 * MIB  # the default
MAX_PAYLOAD_SIZE = 30 * MIB  # so that 25 MiB bodies are read and parsed, not refused at once
CONNECTION_ALLOWANCE = 64 * 1024  # docs/intake.rst: per open connection
HEAP_SLACK = 32 * MIB  # docs/intake.rst: allocator and interpreter slack


def stored_ids(root):
    return {os.path.basename(path)[:-len(".json")]
            for path in glob.glob(os.path.join(root, "*", "raw_crash", "*.json"))}


def wait_stored(root, ids, timeout):
    deadline = time.monotonic() + timeout
    while not ids <= stored_ids(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    return stored_ids(root)


def test_bombs_and_large_bodies_at_once_stay_under_the_ceiling(tmp_path, collectors):
    root = tmp_path / "crashes"
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(root),
        "MAX_INFLIGHT_BYTES": str(MAX_INFLIGHT_BYTES),
        "MAX_DECOMPRESSED_SIZE": str(MAX_DECOMPRESSED_SIZE),
        "MAX_PAYLOAD_SIZE": str(MAX_PAYLOAD_SIZE),
    }, args=("--workers", "1"))
    small, small_type = build_multipart({"ProductName": "Test"},
                                        {"upload_file_minidump": minidump()})
    status, answer = post(collector.submit_url, small, small_type)  # warm up every path
    assert status == 200
    warm_id = crash_id_from(answer)
    [pid] = collector.worker_pids()
    idle_kib, _ = memory_kib(pid)

    bomb = http_request(gzip_bomb(256), [("Content-Type", "multipart/form-data; boundary=bomb"),
                                         ("Content-Encoding", "gzip")])
    large, large_type = build_multipart({"ProductName": "Test"},
                                        {"upload_file_minidump": os.urandom(25 * MIB)})

    def send_bomb(_):
        return raw_exchange(collector.port, bomb, timeout=60)[0]

    def send_large(_):
        return post(collector.submit_url, large, large_type, timeout=60)

    def send_valid(count):
        answers = []
        for _ in range(count):
            answers.append(post(collector.submit_url, small, small_type, timeout=60))
        return answers

    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        bombs = pool.map(send_bomb, range(8))
        larges = pool.map(send_large, range(8))
        valid = [pool.submit(send_valid, 10) for _ in range(2)]
        bomb_statuses = sorted(bombs)
        large_answers = list(larges)
        valid_answers = [answer for batch in valid for answer in batch.result()]
    took = time.monotonic() - started
    _, peak_kib = memory_kib(pid)

    # docs/intake.rst, "A memory ceiling": idle + budget + one upload's cap + one
    # read + the connections' allowance + slack (20 clients' connections here).
    bound = (idle_kib * 1024 + MAX_INFLIGHT_BYTES + MAX_DECOMPRESSED_SIZE + 256 * 1024
             + 20 * CONNECTION_ALLOWANCE + HEAP_SLACK)
    valid_ids = {crash_id_from(answer) for status, answer in valid_answers if status == 200}
    large_ids = {crash_id_from(answer) for status, answer in large_answers if status == 200}
    stored = wait_stored(str(root), valid_ids | large_ids | {warm_id}, timeout=60)
    print(f"\n8 gzip bombs (256 MiB inflated) and 8 bodies of 25 MiB at once, 20 valid "
          f"crashes meanwhile, in {took:.1f} s: bombs {bomb_statuses}, large "
          f"{sorted(status for status, _ in large_answers)}; {len(valid_ids)} of 20 valid "
          f"answered with ids; worker RSS idle {idle_kib / 1024:.0f} MiB, peak "
          f"{peak_kib / 1024:.0f} MiB (growth {(peak_kib - idle_kib) / 1024:.0f} MiB), "
          f"documented bound {bound / MIB:.0f} MiB", file=sys.stderr)
    assert set(bomb_statuses) <= {413, 503}
    assert {status for status, _ in large_answers} <= {200, 503}
    assert len(valid_ids) >= 18
    assert valid_ids | large_ids <= stored
    assert peak_kib * 1024 <= bound
