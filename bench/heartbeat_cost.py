"""
What one ``/__heartbeat__`` costs a worker of ``--workers N`` when many
crashes wait in the other workers' shards (not run by CI; a few seconds).

A worker is built in this process with filesystem storage and sibling shards
that hold ``--crashes`` spool entries between them (a ``.crash`` file and one
dump each, as a worker leaves them, plus each shard's status file). Over real
HTTP it answers ``--rounds`` heartbeats, one at a time; measured for each:
the time to the answer, the CPU seconds of this process, and how late a 1 ms
reactor timer fired meanwhile (what the reactor thread was kept from). The
same with empty shards gives the base cost. The page cache is warm: the
files were just written.

    .venv/bin/python bench/heartbeat_cost.py [--crashes 10000] [--shards 1] [--rounds 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from twisted.internet import defer, task, threads

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from antenna_tw.workers import Worker  # noqa: E402
from antenna_tw.workers.shardstatus import waiting_in, write_status  # noqa: E402
from tests.helpers import start_collector, stop_collector, test_environ  # noqa: E402

CRASH_ID = "de1bb258-cbbf-4589-a673-34f800160918"


def fill(shards, crashes):
    now_ns = time.time_ns()
    for number in range(crashes):
        shard = shards[number % len(shards)]
        stem = f"{now_ns - number * 1000:020d}-{CRASH_ID}"
        with open(shard / f"{stem}.upload_file_minidump.dump", "wb") as dump:
            dump.write(b"M" * 4096)
        with open(shard / f"{stem}.crash", "wb") as raw:
            raw.write(b"{}" * 1024)
    for shard in shards:
        write_status(str(shard), {"pid": os.getpid(), "retrying": 0})


def heartbeat(url):
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read()


async def measure(reactor, directory, shards, crashes, rounds):
    fill(shards, crashes)
    # Worker 0 of len(shards) + 1: the others' shards are worker-1 and up.
    running = await start_collector(directory, test_environ(directory),
                                    worker=Worker(0, len(shards) + 1, os.getpid(),
                                                  str(directory)))
    lateness = []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        lateness.append(now - last[0] - 0.001)
        last[0] = now

    timer = task.LoopingCall(tick)
    timer.start(0.001)
    url = running.url + "/__heartbeat__"
    try:
        await threads.deferToThread(heartbeat, url)  # warm up
        walls, cpus, stalls = [], [], []
        for _ in range(rounds):
            del lateness[:]
            cpu, wall = time.process_time(), time.perf_counter()
            await threads.deferToThread(heartbeat, url)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            stalls.append(max(lateness, default=0.0))
    finally:
        timer.stop()
        await stop_collector(running)
    scan = []
    for _ in range(5):
        started = time.perf_counter()
        found = [waiting_in(str(shard), time.time()) for shard in shards]
        scan.append(time.perf_counter() - started)
    assert sum(waiting.entries for waiting in found) == crashes
    return {
        "crashes": crashes,
        "answer_ms_median": round(statistics.median(walls) * 1000, 2),
        "answer_ms_max": round(max(walls) * 1000, 2),
        "cpu_ms_median": round(statistics.median(cpus) * 1000, 2),
        "reactor_stall_ms_max": round(max(stalls) * 1000, 2),
        "scan_ms_median": round(statistics.median(scan) * 1000, 2),
    }


async def main(reactor, args):
    for crashes in (0, args.crashes):
        with tempfile.TemporaryDirectory() as temp:
            directory = Path(temp)
            shards = [directory / f"worker-{index + 1}" for index in range(args.shards)]
            for shard in shards:
                shard.mkdir()
            print(await measure(reactor, directory, shards, crashes, args.rounds), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crashes", type=int, default=10000)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=50)
    arguments = parser.parse_args()
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
