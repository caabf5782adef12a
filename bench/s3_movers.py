"""
How many crashes per second the crash movers move to S3 (not run by CI).

For each CONCURRENT_CRASHMOVERS value: a collector whose storage refuses
every save fills a spool with N crashes and is stopped; then a collector
with S3 storage (moto_server on loopback) starts on that spool, re-queues
everything and drains it. The rate is N divided by the time from its
"re-queued" log line to its last "saved" line (mozlog timestamps), so
posting is not measured. CPU seconds of moto and of the collector during the
drain show who the bottleneck is. Every object is then checked in the bucket.

    .venv/bin/python bench/s3_movers.py [--crashes 400] [--dump-kb 300] [--movers 2 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from twisted.internet import defer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from antenna_tw.send_crash import build_multipart, post  # noqa: E402
from tests.s3server import MotoServer  # noqa: E402
from tests.system.collector_process import CollectorProcess, children_of  # noqa: E402


class RefusingStorage:
    """A storage that never saves: crashes stay in the spool."""

    name = "refusing"

    @classmethod
    def from_settings(cls, settings, reactor, threadpool, concurrency=None):
        return cls()

    def verify(self):
        pass

    def save_crash(self, crash):
        return defer.fail(RuntimeError("refusing on purpose (bench)"))

    def check_health(self):
        return defer.succeed([])


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill_spool(directory, spool, crashes, dump_kb):
    body, content_type = build_multipart(
        {"ProductName": "Bench", "Version": "1.0", "Notes": "x" * 2000},
        {"upload_file_minidump": os.urandom(dump_kb * 1024)}, use_json=True)
    environ = {"CRASHSTORAGE_CLASS": "bench.s3_movers.RefusingStorage", "SPOOL_DIR": spool,
               "PYTHONPATH": str(ROOT), "SHUTDOWN_TIMEOUT": "0.1", "LOGGING_LEVEL": "ERROR"}
    filler = CollectorProcess.start(directory, environ)
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(
                lambda _: post(filler.submit_url, body, content_type), range(crashes)))
        assert all(status == 200 for status, _ in answers)
    finally:
        filler.stop()
    # Entries sit in worker shards (SPOOL_DIR/worker-<i>) or, with --workers 0, in SPOOL_DIR.
    return sum(name.endswith(".crash") and not name.startswith(".")
               for _, _, files in os.walk(spool) for name in files)


def log_times(stdout):
    requeued = saved = None
    count = 0
    for line in stdout.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        msg = record["Fields"].get("msg", "")
        if msg.startswith("re-queued"):
            requeued = record["Timestamp"] / 1e9
        elif msg.endswith(" saved"):
            saved = record["Timestamp"] / 1e9
            count += 1
    return requeued, saved, count


def measure(server, workdir, movers, crashes, dump_kb):
    bucket = server.create_bucket()
    spool = str(workdir / "spool")
    (workdir / "fill").mkdir(parents=True)
    spooled = fill_spool(workdir / "fill", spool, crashes, dump_kb)
    (workdir / "drain").mkdir()
    environ = {
        "CRASHSTORAGE_CLASS": "s3", "CRASHSTORAGE_BUCKET_NAME": bucket,
        "CRASHSTORAGE_ENDPOINT_URL": server.endpoint, "CRASHSTORAGE_REGION": "us-west-2",
        "CRASHSTORAGE_ACCESS_KEY": server.keys.access_key,
        "CRASHSTORAGE_SECRET_ACCESS_KEY": server.keys.secret_key,
        "CONCURRENT_CRASHMOVERS": str(movers), "SPOOL_DIR": spool,
    }
    moto_before = cpu_seconds(server.process.pid)
    drainer = CollectorProcess.spawn(workdir / "drain", environ)
    try:
        drainer.wait_listening(30)
        deadline = time.monotonic() + 300
        while True:
            status, heartbeat = drainer.heartbeat()
            if heartbeat["info"]["queue_length"] == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit("drain did not finish in 300 s")
            time.sleep(0.2)
        # The parent and its workers (the workers do the moving).
        collector_cpu = sum(cpu_seconds(pid) for pid in
                            [drainer.process.pid] + children_of(drainer.process.pid))
    finally:
        drainer.stop()
    moto_cpu = cpu_seconds(server.process.pid) - moto_before
    requeued, last_saved, count = log_times(workdir / "drain" / "stdout")
    seconds = last_saved - requeued
    keys = server.keys_in(bucket)
    assert count == spooled and len(keys) == 3 * spooled, (count, spooled, len(keys))
    return {"movers": movers, "crashes": spooled, "seconds": round(seconds, 2),
            "crashes_per_s": round(spooled / seconds, 1),
            "puts_per_s": round(3 * spooled / seconds, 1),
            "moto_cpu_s": round(moto_cpu, 1), "collector_cpu_s": round(collector_cpu, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crashes", type=int, default=400)
    parser.add_argument("--dump-kb", type=int, default=300)
    parser.add_argument("--movers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    with tempfile.TemporaryDirectory(prefix="s3bench-") as temp:
        server = MotoServer.start(temp)
        try:
            for round_number in range(args.rounds):
                for movers in args.movers:
                    workdir = Path(temp) / f"r{round_number}-m{movers}"
                    result = measure(server, workdir, movers, args.crashes, args.dump_kb)
                    print(json.dumps(result), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
