#!/usr/bin/env python3
"""
H6 (issue 18): today's --workers 2 (SO_REUSEPORT per worker + hand-off, "A")
against one listening socket opened by the parent and adopted by every worker
("B", a prototype behind --shared-socket that was not merged), in alternating
runs A B A B ... on 127.0.0.1 only. Reuses bench/run_bench.py's Collector,
drain and storage count; the load is the harness's run_load.sh (wrk), each run
bounded by `timeout`. Both collectors run for the whole session; only the one
under load gets traffic.

    .venv/bin/python bench/results/2026-12-03-shared-socket/ab_pairs.py \
        --harness /work/shared/bench --pairs 5 --secs 12 --out DIR
"""

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
import run_bench as rb  # noqa: E402


class SharedCollector(rb.Collector):
    """The same collector, started with --shared-socket."""

    extra = ["--shared-socket"]
    want_listeners = 3  # the parent holds it too

    def start(self, timeout=30.0):
        if rb.port_in_use(self.port):
            raise SystemExit(f"port {self.port} in use")
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.twistd, "-n", "--pidfile=", "antenna",
                 "--port", f"tcp:{self.port}:interface=127.0.0.1",
                 "--workers", str(self.workers)] + self.extra,
                cwd=self.directory, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        rb._cleanups.append(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited:\n" + self.log_tail())
            pids = rb.listener_pids(self.port) & set(rb.tree_pids(self.process.pid))
            if len(pids) >= self.want_listeners and "listening on" in self.log_tail(60):
                time.sleep(1.0)
                return self
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not listen:\n" + self.log_tail())


class DefaultCollector(SharedCollector):
    extra = []
    want_listeners = 2


def machine_busy():
    with open("/proc/stat") as fp:
        f = [int(x) for x in fp.readline().split()[1:9]]
    return sum(f) - f[3] - f[4], sum(f)


ACCEPT = re.compile(r'"Pid": (\d+), "Fields": \{[^}]*"msg": "[0-9a-f-]{36}: matched by')


def per_pid_accepts(log_path, offset):
    counts = {}
    with open(log_path, errors="replace") as fp:
        fp.seek(offset)
        for line in fp:
            m = ACCEPT.search(line)
            if m:
                counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
    return counts


def sample_connections(port, worker_pids, stop, samples, interval=1.0):
    """Every ``interval`` s: established connections to ``port`` held by each worker."""
    while not stop.wait(interval):
        out = subprocess.run(["ss", "-Htnp", "state", "established", f"sport = :{port}"],
                             capture_output=True, text=True, check=False).stdout
        held = {pid: 0 for pid in worker_pids}
        for pid in re.findall(r"pid=(\d+)", out):
            if int(pid) in held:
                held[int(pid)] += 1
        samples.append(sorted(held.values(), reverse=True))


def one_run(args, label, c, sha, pair):
    offset = c.log_path.stat().st_size
    ticks = rb.tree_cpu_ticks(c.pid)
    busy0, total0 = machine_busy()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, CONN_CLOSE="1", WARMUP=str(args.warmup), LABEL=label,
               LOG_DIR=str(args.scratch / "wrk-logs"))
    cmd = ["timeout", "-k", "5", str(args.secs + args.warmup + 30),
           str(args.harness / "run_load.sh"), c.url, str(args.payloads), "400k", "32",
           str(args.secs)]
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_connections,
                               args=(c.port, c.worker_pids(), stop, samples), daemon=True)
    sampler.start()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    stop.set()
    sampler.join()
    busy_samples = [s for s in samples if sum(s) >= 16]  # under load (not warm-up edges)
    line = (out.stdout.strip().splitlines() or ["(no output) " + out.stderr[-300:]])[-1]
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, total1 = machine_busy()
    drain, orphaned, undrained = rb.wait_drained(c.spool, c.log_path)
    counts = dict(rb.count_stored(c.storage, then="set-aside", manifest_sha=sha["400k"]))
    user, system = rb.cpu_delta_split(ticks, rb.tree_cpu_ticks(c.pid))
    fields = rb.kv_line(line)
    answered = int(fields.get("ok200", 0)) + int(fields.get("warmup_ok200", 0))
    client = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    other = (busy1 - busy0) / rb.HZ - (user + system) - client
    split = per_pid_accepts(c.log_path, offset)
    rec = dict(pair=pair, label=label, rps=float(fields.get("rps", 0)),
               p50_ms=float(fields.get("p50_ms", 0)), p99_ms=float(fields.get("p99_ms", 0)),
               non200=int(fields.get("non200", -1)), bad_body=int(fields.get("bad_body", -1)),
               sock_err=fields.get("sock_err"), timeouts=fields.get("timeouts"),
               answered=answered, **counts,
               lost=max(0, answered - counts["stored"]), surplus=counts["stored"] - answered,
               drain_s=None if drain is None else round(drain, 1), orphaned=orphaned,
               undrained=undrained,
               cpu_ms_per_crash=round(1000 * (user + system) / counts["stored"], 3)
               if counts["stored"] else None,
               other_cpu_pct=round(100 * other / ((total1 - total0) / rb.HZ), 1),
               worker_split=sorted(split.values(), reverse=True),
               # connections held by (busier, other) worker, 1/s samples under load
               held_gap_mean=round(sum(x[0] - x[-1] for x in busy_samples)
                                   / len(busy_samples), 1) if busy_samples else None,
               held_gap_max=max((x[0] - x[-1] for x in busy_samples), default=None),
               held_samples=samples, wrk_line=line)
    return rec


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--harness", type=Path, required=True)
    p.add_argument("--scratch", type=Path, default=Path("/tmp/h6-bench"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--secs", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--port-base", type=int, default=19420)
    p.add_argument("--first", default="A", choices=["A", "B"])
    p.add_argument("--max-minutes", type=float, default=20)
    args = p.parse_args()
    args.twistd = str(ROOT / ".venv" / "bin" / "twistd")
    args.log_level, args.settings = "INFO", {}
    args.payloads = args.scratch / "payloads"
    for sub in ("A", "B"):
        subprocess.run(["rm", "-rf", str(args.scratch / sub)], check=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sha = rb.prepare_payloads(args)

    def on_alarm(signum, frame):
        raise SystemExit(f"watchdog: more than {args.max_minutes} min")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit("stopped by SIGTERM"))
    signal.alarm(int(args.max_minutes * 60))
    runs_path = args.out / "runs.jsonl"
    try:
        a = DefaultCollector(args, "A", args.port_base, 2, args.scratch / "A").start()
        b = SharedCollector(args, "B", args.port_base + 1, 2, args.scratch / "B").start()
        targets = {"A": a, "B": b}
        order = ["A", "B"] if args.first == "A" else ["B", "A"]
        with open(runs_path, "a") as fp:
            for pair in range(1, args.pairs + 1):
                for label in order:
                    rec = one_run(args, label, targets[label], sha, pair)
                    rec["order"] = "".join(order)
                    fp.write(json.dumps(rec) + "\n")
                    fp.flush()
                    print(json.dumps(rec), flush=True)
    finally:
        signal.alarm(0)
        rb.cleanup()  # stops both collectors (SIGTERM, then their logs are complete)
        for c in ("A", "B"):
            src = args.scratch / c / f"{c}.log"
            if src.exists():  # everything but the per-crash lines
                subprocess.run(f"grep -v 'matched by\\|saved\"' {src} "
                               f"> {args.out}/collector-{c}.log", shell=True, check=False)
        for c in ("A", "B"):
            rb.remove_set_aside(args.scratch / c / "crashes")


if __name__ == "__main__":
    main()
