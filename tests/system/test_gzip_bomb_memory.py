"""
A gzip bomb against the real ``twistd -n antenna`` process:
~250 KB on the wire that inflates to 256 MiB is refused with
413, and the process's peak RSS grows by about the part it held up to
MAX_DECOMPRESSED_SIZE, well under twice that. The figure is printed (run
with ``-s`` to see it) and written in docs/intake.rst.
"""

import sys

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import crash_id_from, gzip_bomb, http_request, minidump, raw_exchange

MAX_DECOMPRESSED_SIZE = 100 * 1024 * 1024  # the default
INFLATED = 256 * 1024 * 1024


def memory_kib(pid):
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(value.split()[0])
    return values["VmRSS"], values["VmHWM"]


def test_gzip_bomb_gets_413_and_bounded_peak_memory(tmp_path, collectors):
    bomb = gzip_bomb(INFLATED >> 20)
    assert 200_000 < len(bomb) < 300_000
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"),
        "MAX_DECOMPRESSED_SIZE": str(MAX_DECOMPRESSED_SIZE),
    }, args=("--workers", "0"))  # serve in the process we measure, not in workers
    try:
        # warm up: every code path of an accepted crash is loaded and used
        body, content_type = build_multipart({"ProductName": "Test"},
                                             {"upload_file_minidump": minidump()})
        status, answer = post(collector.submit_url, body, content_type)
        assert status == 200
        crash_id_from(answer)

        pid = collector.process.pid
        rss_before, _ = memory_kib(pid)
        request = http_request(bomb, [("Content-Type", "multipart/form-data; boundary=bomb"),
                                      ("Content-Encoding", "gzip")])
        for _ in range(2):  # a second bomb must not add to the first
            status, _, answer = raw_exchange(collector.port, request, timeout=30)
            assert (status, answer) == (413, b"Discarded=too_large")
            _, peak = memory_kib(pid)
            growth = (peak - rss_before) * 1024
            print(f"\ngzip bomb: {len(bomb)} bytes on the wire, {INFLATED >> 20} MiB inflated; "
                  f"peak RSS growth {growth / 2**20:.1f} MiB with MAX_DECOMPRESSED_SIZE "
                  f"{MAX_DECOMPRESSED_SIZE >> 20} MiB ({growth / MAX_DECOMPRESSED_SIZE:.2f}x)",
                  file=sys.stderr)
            assert growth < 1.5 * MAX_DECOMPRESSED_SIZE
            # and the figure is real: this process did inflate the bomb up to the cap
            assert growth > MAX_DECOMPRESSED_SIZE / 4

        rss_after, _ = memory_kib(pid)
        assert (rss_after - rss_before) * 1024 < MAX_DECOMPRESSED_SIZE / 4  # let go at once
        status, answer = post(collector.submit_url, body, content_type)
        assert status == 200  # and it goes on serving
    finally:
        collector.stop()
