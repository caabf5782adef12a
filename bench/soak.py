#!/usr/bin/env python3
"""
A soak of antenna-tw with S3 storage on the nginx S3 stand-in
(``bench/s3_standin.py``): Antenna's load-test mix at a fraction of the
node's measured maximum for a fixed time. Not run by CI; bounded (it stops
itself after ``--minutes`` plus a drain, and its watchdog after
``--max-minutes``). Traffic goes to 127.0.0.1 only.

    .venv/bin/python bench/soak.py --minutes 30 --load 0.7 --out DIR

The mix (``--mix``, weights in %): 60 a 400 KB crash with one dump, 25 a
400 KB crash with four dumps, 10 a gzip crash of about 150 KB on the wire,
5 a 1.5 MB crash; every crash on its own connection. The bodies are made
with ``tests/payload_maker.py``'s annotations and dumps.

1. **Maximum.** Unless ``--rate`` is given, wrk sends the mix as fast as the
   node answers (``--conc`` connections) for ``--calibrate-secs``; the
   maximum is the crashes stored divided by the time from the start of that
   load until the spool is empty again: what the node stores end to end,
   not only what it answers.
2. **Soak.** ``--minutes`` runs of one minute each (wrk with
   ``bench/soak_mix.lua``): each connection pauses a random (exponential)
   time before each request so that arrivals are about a Poisson process at
   ``--load`` x the maximum; the pause is retuned each minute from the last
   minute's rate. Every crash id answered is written to a file.
   Every ``--sample-secs`` the collector's process tree is sampled: RSS and
   PSS summed over its processes, the crashes waiting in the spool, its CPU.
3. **Check.** After the last minute the spool must drain; every crash id
   answered must be in the stand-in as a complete crash (raw crash, dump
   names, every dump named; ``antenna_s3.StoredCounter``, which empties the
   dumps it has counted so that the disk does not fill).

Writes ``minutes.jsonl`` (per minute: rate, p50/p90/p99/p99.9, answered,
stored, backlog, RSS), ``samples.jsonl``, ``summary.md`` and the logs under
``--out``.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import run_bench as rb  # noqa: E402
from ab_versions import machine_busy  # noqa: E402
from antenna_s3 import StoredCounter, TwCollector, collector_version  # noqa: E402
from s3_standin import S3StandIn  # noqa: E402

from tests import payload_maker  # noqa: E402

KIB = 1024
MIB = 1024 * KIB
DUMPS_4 = ["upload_file_minidump", "upload_file_minidump_browser",
           "upload_file_minidump_content", "memory_report"]
# name -> (body size before gzip, dump names, gzipped)
SHAPES = {
    "400k": (400 * KIB, ["upload_file_minidump"], False),
    "400k_4dumps": (400 * KIB, DUMPS_4, False),
    "gz150k": (340 * KIB, ["upload_file_minidump"], True),  # ~150 KB on the wire
    "1.5m": (3 * MIB // 2, ["upload_file_minidump"], False),
}
DEFAULT_MIX = ["400k=60", "400k_4dumps=25", "gz150k=10", "1.5m=5"]


def write_payloads(directory: Path) -> dict[str, int]:
    """The mix's bodies and headers in ``directory``; {name: bytes on the wire}."""
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, (size, dumps, zipped) in SHAPES.items():
        made = payload_maker.make_shape(name, shape=(size, dumps))
        headers = dict(made.headers)
        body = made.body
        if zipped:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        payload_maker.write(directory, [payload_maker.Payload(name, headers, body, made.dumps)])
        sizes[name] = len(body)
    return sizes


def tree_memory_mb(root: int) -> tuple[float, float]:
    """(RSS, PSS) in MB summed over ``root`` and its descendants."""
    rss = pss = 0
    for pid in rb.tree_pids(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fp:
                for line in fp:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


class Sampler(threading.Thread):
    """Samples the collector tree's memory, spool backlog and CPU every ``interval`` s."""

    def __init__(self, collector: TwCollector, interval: float, path: Path) -> None:
        super().__init__(daemon=True)
        self.collector, self.interval, self.path = collector, interval, path
        self.samples: list[dict[str, Any]] = []
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        ticks = rb.tree_cpu_ticks(self.collector.pid)
        busy = machine_busy()
        with open(self.path, "a") as fp:
            while not self.halt.wait(self.interval):
                rss, pss = tree_memory_mb(self.collector.pid)
                now_ticks, now_busy = rb.tree_cpu_ticks(self.collector.pid), machine_busy()
                cpu = rb.cpu_delta_seconds(ticks, now_ticks)
                total = (now_busy[1] - busy[1]) / rb.HZ
                sample = {"t": round(time.monotonic() - self.t0, 1), "rss_mb": round(rss, 1),
                          "pss_mb": round(pss, 1),
                          "backlog": rb.spool_counts(self.collector.spool)[0],
                          "collector_cpu_pct": round(100 * cpu / total, 1) if total else None,
                          "machine_busy_pct": round(100 * (now_busy[0] - busy[0]) / rb.HZ
                                                    / total, 1) if total else None,
                          "loadavg": os.getloadavg()[0]}
                ticks, busy = now_ticks, now_busy
                self.samples.append(sample)
                fp.write(json.dumps(sample) + "\n")
                fp.flush()


class Counting(threading.Thread):
    """Counts (and empties) what the stand-in stored every ``interval`` s, beside the load."""

    def __init__(self, counter: StoredCounter, interval: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.counter, self.interval = counter, interval
        self.stored = 0
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            self.stored += self.counter.take(keep_ids=True, check=0)["stored"]
            return self.stored

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.take()


def wrk(args: argparse.Namespace, url: str, secs: int, delay_ms: float, ids_prefix: Path,
        ) -> dict[str, str]:
    """One bounded wrk run of the mix; its SUMMARY fields."""
    cmd = ["timeout", "-k", "5", str(secs + 30), "wrk", f"-t{args.threads}", f"-c{args.conc}",
           f"-d{secs}s", "--timeout", "30s", "-s", str(HERE / "soak_mix.lua"), url, "--",
           str(args.payloads), str(ids_prefix), f"{delay_ms:.1f}", *args.mix]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("SUMMARY ")]
    if not lines:
        raise SystemExit(f"bench: wrk gave no summary:\n{out.stdout[-800:]}{out.stderr[-800:]}")
    return rb.kv_line(lines[-1][len("SUMMARY "):])


def read_ids(prefix: Path) -> list[str]:
    ids = []
    for path in sorted(glob.glob(f"{prefix}-*.txt")):
        with open(path) as fp:
            ids += [line.strip() for line in fp if line.strip()]
    return ids


def wait_empty(collector: TwCollector, timeout: float) -> float | None:
    """Seconds until the spool is empty, or None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if rb.spool_counts(collector.spool) == (0, 0):
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def calibrate(args: argparse.Namespace, collector: TwCollector, counter: StoredCounter,
              out: Path) -> dict[str, Any]:
    """The node's end-to-end maximum for the mix: stored / (load + drain) seconds."""
    started = time.monotonic()
    fields = wrk(args, collector.url, args.calibrate_secs, 0, out / "calibrate-ids")
    loaded = time.monotonic() - started
    drained = wait_empty(collector, 300)
    elapsed = time.monotonic() - started
    counts = counter.take(keep_ids=True)
    result = {"answered_per_s": float(fields["rps"]), "load_s": round(loaded, 1),
              "drain_s": None if drained is None else round(drained, 1),
              "stored": counts["stored"], "p99_ms": float(fields["p99_ms"]),
              "max_per_s": round(counts["stored"] / elapsed, 1), "wrk": fields}
    (out / "calibrate.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def summarize(args: argparse.Namespace, minutes: list[dict[str, Any]],
              samples: list[dict[str, Any]], check: dict[str, Any], info: list[str]) -> str:
    warm = args.warm_minutes * 60
    after = [s for s in samples if s["t"] >= warm]
    lines = info + [""]
    if after:
        rss = [s["rss_mb"] for s in after]
        pss = [s["pss_mb"] for s in after]
        early = [s["rss_mb"] for s in samples if s["t"] < warm] or rss
        base = after[0]["rss_mb"]
        spread = (max(rss) - min(rss)) / min(rss)
        lines.append(f"RSS of the collector tree after minute {args.warm_minutes}: "
                     f"{min(rss):.0f}..{max(rss):.0f} MB (first {base:.0f}, last "
                     f"{rss[-1]:.0f}; max/min {100 * spread:.1f} % apart; target within 10 %: "
                     f"{'PASS' if spread <= 0.10 else 'FAIL'}); PSS {min(pss):.0f}.."
                     f"{max(pss):.0f} MB; RSS in the first {args.warm_minutes} minutes "
                     f"{min(early):.0f}..{max(early):.0f} MB")
    p99 = [m["p99_ms"] for m in minutes]
    if p99:
        steady = p99[args.warm_minutes:] or p99
        lines.append(f"p99 per minute: median {statistics.median(p99):.1f} ms, "
                     f"{min(p99):.1f}..{max(p99):.1f}; after minute {args.warm_minutes}: median "
                     f"{statistics.median(steady):.1f}, max {max(steady):.1f} ms")
        rates = [m["rps"] for m in minutes]
        lines.append(f"rate per minute: median {statistics.median(rates):.1f}/s "
                     f"({min(rates):.1f}..{max(rates):.1f}); spool backlog at the minute ends: "
                     f"{min(m['backlog'] for m in minutes)}..{max(m['backlog'] for m in minutes)}")
    lines += ["", f"Acknowledged crash ids: {check['acked']}; stored complete in the stand-in: "
              f"{check['stored']}; acknowledged but not stored: {check['missing']}; "
              f"non-200 answers {check['non200']}; spool drained in {check['drain_s']} s "
              f"after the load; failed PUTs {check['failed_puts']}: "
              f"{'PASS' if check['missing'] == 0 and check['acked'] else 'FAIL'}", "",
              "| minute | crashes/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | answered "
              "| non-200 | stored (cumulative) | backlog | RSS MB | PSS MB | collector CPU % "
              "| machine busy % | delay ms |", "|" + "---|" * 16]
    for m in minutes:
        lines.append("| {minute} | {rps:.1f} | {p50_ms:.1f} | {p90_ms:.1f} | {p99_ms:.1f} "
                     "| {p999_ms:.1f} | {max_ms:.0f} | {ok200} | {non200} | {stored_total} "
                     "| {backlog} | {rss_mb} | {pss_mb} | {collector_cpu_pct} "
                     "| {machine_busy_pct} | {delay_ms:.0f} |".format(**m))
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=int, default=30)
    p.add_argument("--load", type=float, default=0.7, help="fraction of the measured maximum")
    p.add_argument("--rate", type=float, help="crashes/s to send (skips the calibration)")
    p.add_argument("--calibrate-secs", type=int, default=30)
    p.add_argument("--mix", nargs="+", default=DEFAULT_MIX, metavar="NAME=WEIGHT")
    p.add_argument("--conc", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--standin-workers", type=int, default=1)
    p.add_argument("--sample-secs", type=float, default=5.0)
    p.add_argument("--warm-minutes", type=int, default=5)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/antenna-tw-soak"))
    p.add_argument("--port-base", type=int, default=19660)
    p.add_argument("--twistd", default=str(rb.ROOT / ".venv" / "bin" / "twistd"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="watchdog (default --minutes + 15)")
    args = p.parse_args(argv)
    args.settings = dict(s.split("=", 1) for s in args.settings)
    args.scratch = args.scratch.resolve()
    args.payloads = args.scratch / "payloads"
    args.max_minutes = args.max_minutes or args.minutes + 15
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for tool in ("wrk", "ss"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} not found")
    for sub in ("soak", "standin", "payloads"):
        shutil.rmtree(args.scratch / sub, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = write_payloads(args.payloads)

    rb.arm_watchdog(args.max_minutes)
    args.rounds, args.warmup, args.secs, args.stored = 1, 0, 60, "set-aside"  # rb.versions()
    info = rb.versions(args)[:-2] + [collector_version(args.twistd), 
        f"antenna-tw --workers {args.workers}, S3 storage on the nginx stand-in "
        f"({args.standin_workers} worker), LOGGING_LEVEL={args.log_level}, SPOOL_FSYNC=false, "
        "METRICS_CLASS=none" + "".join(f", {k}={v}" for k, v in args.settings.items()),
        "mix (weight, payload, bytes on the wire): " + ", ".join(
            f"{weight} {name} {sizes[name]:,}"
            for name, weight in (m.split("=") for m in args.mix)),
        f"load: {args.load:.0%} of the measured maximum, {args.minutes} x 60 s, wrk "
        f"-t{args.threads} -c{args.conc}, Connection: close, exponential pauses"]
    minutes: list[dict[str, Any]] = []
    sampler = None
    check: dict[str, Any] = {}
    try:
        standin = S3StandIn(args.scratch / "standin", args.port_base + 9, "soakbucket",
                            args.standin_workers).start()
        rb._cleanups.append(standin.stop)
        collector = TwCollector(args, "soak", args.port_base, standin).start()
        counter = StoredCounter(standin)
        if args.rate:
            rate, calib = args.rate, None
        else:
            calib = calibrate(args, collector, counter, args.out)
            rate = args.load * calib["max_per_s"]
            info.append(f"maximum: {calib['max_per_s']}/s stored end to end "
                        f"({calib['stored']} in {calib['load_s']} s of load + "
                        f"{calib['drain_s']} s of drain; answered {calib['answered_per_s']}/s, "
                        f"p99 {calib['p99_ms']} ms)")
        info.append(f"target rate: {rate:.1f} crashes/s")
        print("\n".join(info), flush=True)
        counting = Counting(counter)
        counting.take()
        counting.stored = 0
        counting.start()
        sampler = Sampler(collector, args.sample_secs, args.out / "samples.jsonl")
        sampler.start()
        latency_ms = 10.0
        with open(args.out / "minutes.jsonl", "w") as fp:
            for minute in range(1, args.minutes + 1):
                # each connection: one request per (latency + pause)
                delay = max(0.0, 1000 * args.conc / rate - latency_ms)
                busy0 = machine_busy()
                ticks = rb.tree_cpu_ticks(collector.pid)
                fields = wrk(args, collector.url, 60, delay, args.out / f"ids-{minute:02d}")
                cpu = rb.cpu_delta_seconds(ticks, rb.tree_cpu_ticks(collector.pid))
                busy1 = machine_busy()
                rss, pss = tree_memory_mb(collector.pid)
                total = (busy1[1] - busy0[1]) / rb.HZ
                rec = {"minute": minute, "delay_ms": delay, "stored_total": counting.stored,
                       "backlog": rb.spool_counts(collector.spool)[0],
                       "rss_mb": round(rss, 1), "pss_mb": round(pss, 1),
                       "collector_cpu_pct": round(100 * cpu / total, 1),
                       "machine_busy_pct": round(100 * (busy1[0] - busy0[0]) / rb.HZ / total, 1),
                       **{k: (float(v) if "." in v else int(v)) for k, v in fields.items()}}
                minutes.append(rec)
                fp.write(json.dumps(rec) + "\n")
                fp.flush()
                print(json.dumps({k: rec[k] for k in (
                    "minute", "rps", "p99_ms", "ok200", "non200", "stored_total", "backlog",
                    "rss_mb", "machine_busy_pct")}), flush=True)
                # the mean time a connection waits for its answer, for the next pause
                if rec["rps"] > 0:
                    latency_ms = max(0.0, 1000 * args.conc / rec["rps"] - delay)
        sampler.halt.set()
        drained = wait_empty(collector, 300)
        counting.halt.set()
        counting.join()
        counting.take()
        acked = set(read_ids(args.out / "ids"))
        missing = acked - counter.ids
        check = {"acked": len(acked), "stored": len(counter.ids & acked),
                 "missing": len(missing), "failed_puts": counter.delivered.log.failed,
                 "non200": sum(m["non200"] for m in minutes),
                 "drain_s": None if drained is None else round(drained, 1)}
        (args.out / "missing-ids.txt").write_text("".join(f"{i}\n" for i in sorted(missing)))
    finally:
        rb.disarm_watchdog()
        if sampler is not None:
            sampler.halt.set()
        rb.cleanup()
        src = args.scratch / "soak" / "soak.log"
        if src.exists():  # the log without its per-crash lines
            with open(args.out / "collector.log", "w") as dst:
                subprocess.run(["grep", "-v", "-e", "matched by", "-e", 'saved"', "-e",
                                "stored", "-e", "accepted", str(src)], stdout=dst, check=False)
    if minutes and check:
        text = summarize(args, minutes, sampler.samples if sampler else [], check, info)
        (args.out / "summary.md").write_text(text)
        print(text)
    for path in glob.glob(str(args.out / "ids-*.txt")) + glob.glob(
            str(args.out / "calibrate-ids-*.txt")):
        os.unlink(path)  # hundreds of thousands of ids; the count is in summary.md
    return 0


if __name__ == "__main__":
    sys.exit(main())
