#!/usr/bin/env python3
"""
antenna-tw against Mozilla's Antenna of 2024 (commit 1af1f6b, the last with
AWS support: boto3 S3 crash storage), both storing into the same nginx S3
stand-in, in alternating runs. Not run by CI. Traffic goes to 127.0.0.1 only.

Antenna runs from a checkout of its public repository given as an argument,
with a virtualenv made from that checkout's own ``requirements.txt`` as its
Dockerfile makes it (``setup`` does that once)::

    git clone https://github.com/mozilla-services/antenna /path/antenna
    git -C /path/antenna checkout 1af1f6b
    python3 bench/antenna_s3.py setup /path/antenna       # its .venv, ~1 min
    .venv/bin/python bench/antenna_s3.py --harness DIR --antenna /path/antenna \
        --payloads 400k 400k_gz 3m --pairs 3 --out bench/results/DATE-antenna-s3

Targets (``--targets``, each a server started once and left up):

``tw-s3``
    ``twistd -n antenna --workers N`` of this checkout, ``CRASHSTORAGE_CLASS=s3``
    on the stand-in, otherwise the settings of ``bench/run_bench.py``.
``antenna``
    Antenna under gunicorn as its ``bin/run_web.sh`` starts it (sync workers,
    ``--antenna-workers``, default 5 = 2 x cores + 1 as its docs advise,
    gunicorn's statsd on), ``antenna.ext.s3.crashstorage.S3CrashStorage`` on
    the stand-in, the no-op publisher, INFO logs to a file, statsd to a
    loopback UDP port that is bound but never read.
``tw-fs``
    antenna-tw with filesystem storage, for the S3/FS ratio.

For each payload, runs go in pairs, the order turning each pair (A B, B A,
...). A run is the harness's ``run_load.sh URL PAYLOADS NAME CONC SECS``
(``CONN_CLOSE=1``, 2 s warm-up); then the bench waits for everything answered
to be stored (antenna-tw's spool drained; Antenna stores before it answers),
counts the complete crashes in the stand-in (raw crash, dump names, dump), sets
them aside, and divides the CPU of the target's whole process tree (warm-up to
drain) by the crashes stored. The stand-in's own CPU per crash, wrk's, and the
machine's other load (busy CPU not spent by the target, the stand-in or wrk,
in % of all CPUs) are recorded with each run.

Writes runs.jsonl and summary.md under --out. Needs wrk, ss, nginx-light and
the load harness (``--harness DIR`` or $BENCH_HARNESS: run_load.sh,
make_payloads.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb  # noqa: E402
from ab_versions import answers, load_average, machine_busy, med_range, run_load  # noqa: E402
from s3_mode import S3Delivered  # noqa: E402
from s3_standin import S3StandIn  # noqa: E402

ANTENNA_COMMIT = "1af1f6b"
BUCKET = "antennabucket"


def setup(checkout: Path) -> int:
    """The checkout's .venv, as its docker/Dockerfile installs its requirements."""
    venv = checkout / ".venv"
    if not (checkout / "requirements.txt").is_file():
        raise SystemExit(f"bench: no requirements.txt in {checkout}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run(pip + ["-U", "pip>=20"], check=True)
    subprocess.run(pip + ["--no-cache-dir", "--no-deps", "--only-binary", ":all:", "-r",
                          str(checkout / "requirements.txt")], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "check"], check=True)
    return 0


def s3_env(standin: S3StandIn) -> dict[str, str]:
    """The crash storage settings both collectors read (Antenna's names, which antenna-tw takes)."""
    return {
        "CRASHMOVER_CRASHSTORAGE_ENDPOINT_URL": standin.endpoint,
        "CRASHMOVER_CRASHSTORAGE_REGION": "us-east-1",
        "CRASHMOVER_CRASHSTORAGE_ACCESS_KEY": "bench",
        "CRASHMOVER_CRASHSTORAGE_SECRET_ACCESS_KEY": "bench-secret",
        "CRASHMOVER_CRASHSTORAGE_BUCKET_NAME": standin.bucket,
    }


class StoredCounter:
    """
    Complete crashes a stand-in took since the last ``take()``, from its PUT
    log (``s3_mode.S3Delivered``): each raw crash PUT (a collector PUTs it
    last) whose dump names and every dump they name are in the bucket.
    ``take`` checks ``check`` dumps' SHA-256 against the payload's, then
    empties the counted crashes' dumps (the inodes stay: see ``PutLog``) so
    long runs do not fill the disk.
    """

    def __init__(self, standin: S3StandIn) -> None:
        self.delivered = S3Delivered(standin)
        self.bucket = standin.data / standin.bucket
        self.ids: set[str] = set()  # every complete crash so far (with keep_ids)

    def take(self, manifest_sha: str | None = None, check: int = 5,
             keep_ids: bool = False, settle: float = 1.5) -> dict[str, Any]:
        time.sleep(settle)  # nginx flushes its PUT log every second
        self.delivered.read()
        new = list(self.delivered.raw_ids)
        del self.delivered.raw_ids[:]
        self.delivered.log.dumps.clear()  # emptied below, once counted
        complete, incomplete, dumps = [], 0, []
        for crash_id in new:
            try:
                names = json.loads((self.bucket / "v1" / "dump_names" / crash_id).read_bytes())
            except (OSError, ValueError):
                incomplete += 1
                continue
            paths = [self.bucket / "v1" / ("dump" if name in ("", rb.DUMP_NAME) else name)
                     / crash_id for name in names]
            if all(path.exists() for path in paths):
                complete.append(crash_id)
                dumps += paths
            else:
                incomplete += 1
        checked = bad = 0
        if manifest_sha:
            for crash_id in random.sample(complete, min(check, len(complete))):
                digest = hashlib.sha256(
                    (self.bucket / "v1" / "dump" / crash_id).read_bytes()).hexdigest()
                checked += 1
                bad += digest != manifest_sha
        for path in dumps:
            os.truncate(path, 0)
        if keep_ids:
            self.ids.update(complete)
        return dict(stored=len(complete), incomplete=incomplete, sha_checked=checked,
                    sha_bad=bad, failed_puts=self.delivered.log.failed)


class TwCollector(rb.Collector):
    """antenna-tw (this checkout), S3 storage on the stand-in or filesystem storage."""

    def __init__(self, args: argparse.Namespace, name: str, port: int,
                 standin: S3StandIn | None) -> None:
        extra = {}
        if standin is not None:
            extra = {"CRASHSTORAGE_CLASS": "s3", **s3_env(standin)}
        super().__init__(args, name, port, args.workers, args.scratch / name, extra)
        self.standin = standin

    def drain(self) -> float | None:
        waited, _orphaned, _left = rb.wait_drained(self.spool, self.log_path)
        return waited


class AntennaServer:
    """Antenna (the checkout given) under gunicorn, as its bin/run_web.sh starts it."""

    def __init__(self, args: argparse.Namespace, port: int, standin: S3StandIn,
                 statsd_port: int) -> None:
        self.name = "antenna"
        self.checkout = args.antenna
        self.port = port
        self.url = f"http://127.0.0.1:{port}/submit"
        self.directory = args.scratch / "antenna"
        self.log_path = self.directory / "antenna.log"
        self.standin = standin
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "LANG": "C.UTF-8",
            "LOGGING_LEVEL": args.log_level,
            "STATSD_HOST": "127.0.0.1",
            "STATSD_PORT": str(statsd_port),
            "HOSTNAME": "bench",
            "CRASHMOVER_CRASHSTORAGE_CLASS": "antenna.ext.s3.crashstorage.S3CrashStorage",
            "CRASHMOVER_CRASHPUBLISH_CLASS": "antenna.ext.crashpublish_base.NoOpCrashPublish",
            **s3_env(standin),
        }
        gunicorn = self.checkout / ".venv" / "bin" / "gunicorn"
        self.cmd = [str(gunicorn), f"--workers={args.antenna_workers}", "--worker-class=sync",
                    "--max-requests=0", "--max-requests-jitter=0",
                    f"--statsd-host=127.0.0.1:{statsd_port}",
                    "--statsd-prefix=socorro.collector", "--dogstatsd-tags=host:bench",
                    "--log-file=-", "--error-logfile=-", "--access-logfile=-",
                    "--bind", f"127.0.0.1:{port}", "antenna.wsgi:application"]
        self.workers = args.antenna_workers
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> AntennaServer:
        if rb.port_in_use(self.port):
            raise SystemExit(f"bench: port {self.port} is in use")
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.cmd, cwd=self.checkout, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        rb._cleanups.append(self.stop)
        deadline = time.monotonic() + timeout
        if not answers(self.port, timeout, self.process):
            raise SystemExit("bench: Antenna does not answer:\n" + self.log_tail())
        # every worker checks it can write to the bucket at start-up
        while (len(rb.tree_pids(self.process.pid)) < self.workers + 1
               and time.monotonic() < deadline):
            time.sleep(0.2)
        time.sleep(2.0)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def drain(self) -> float | None:
        time.sleep(1.0)  # it stores before answering: only what was in flight
        return 1.0

    def stop(self) -> None:
        if self.process is not None:
            rb.stop_group(self.process, signal.SIGTERM, 30, "antenna")
            self.process = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""


def one_run(args: argparse.Namespace, label: str, target: Any, standin: S3StandIn,
            counter: StoredCounter, payload: str, sha: dict[str, str],
            pair: int) -> dict[str, Any]:
    """One bounded load run against ``target``; its figures once all is stored."""
    ticks = rb.tree_cpu_ticks(target.pid)
    standin_ticks = rb.tree_cpu_ticks(standin.pid)
    busy0, total0 = machine_busy()
    load0 = load_average()
    line, started, wrk_cpu = run_load(args, target.url, payload, label)
    drain = target.drain()
    busy1, total1 = machine_busy()
    load1 = load_average()
    if isinstance(target, TwCollector) and target.standin is None:
        counts = rb.count_stored(target.storage, then="set-aside", manifest_sha=sha[payload])
    else:
        counts = counter.take(manifest_sha=sha[payload])
    user, system = rb.cpu_delta_split(ticks, rb.tree_cpu_ticks(target.pid))
    standin_cpu = rb.cpu_delta_seconds(standin_ticks, rb.tree_cpu_ticks(standin.pid))
    fields = rb.kv_line(line)
    answered = int(fields.get("ok200", 0)) + int(fields.get("warmup_ok200", 0))
    other = (busy1 - busy0) / rb.HZ - (user + system) - wrk_cpu - standin_cpu
    stored = counts["stored"]
    return dict(
        payload=payload, pair=pair, label=label, started=round(started, 1),
        rps=float(fields.get("rps", 0)), p50_ms=float(fields.get("p50_ms", 0)),
        p99_ms=float(fields.get("p99_ms", 0)),
        non200=int(fields.get("non200", -1)), bad_body=int(fields.get("bad_body", -1)),
        answered=answered, **counts, lost=max(0, answered - stored),
        drain_s=None if drain is None else round(drain, 1),
        cpu_ms_per_crash=round(1000 * (user + system) / stored, 3) if stored else None,
        user_ms=round(1000 * user / stored, 3) if stored else None,
        sys_ms=round(1000 * system / stored, 3) if stored else None,
        standin_ms_per_crash=round(1000 * standin_cpu / stored, 3) if stored else None,
        cpu_s=round(user + system, 2), wrk_cpu_s=round(wrk_cpu, 2),
        other_cpu_pct=max(0.0, round(100 * other / ((total1 - total0) / rb.HZ), 1)),
        loadavg=[load0, load1], wrk_line=line)


FIGURES = [("rps", "crashes/s", "{:.0f}"), ("p99_ms", "p99 ms", "{:.0f}"),
           ("cpu_ms_per_crash", "CPU ms per stored crash", "{:.2f}"),
           ("standin_ms_per_crash", "stand-in CPU ms per crash", "{:.2f}"),
           ("other_cpu_pct", "other load %", "{:.0f}")]


def summarize(records: list[dict[str, Any]], labels: list[str]) -> str:
    """Per payload: each target's medians (min..max), per-pair ratios against Antenna."""
    out = []
    for payload in sorted({r["payload"] for r in records}, key=lambda p: (len(p), p)):
        recs = [r for r in records if r["payload"] == payload]
        out += [f"### {payload}, conc {recs[0].get('conc', '?')}", "",
                "| figure | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for key, heading, fmt in FIGURES:
            out.append(f"| {heading} | " + " | ".join(
                med_range([r[key] for r in recs if r["label"] == lab], fmt)
                for lab in labels) + " |")
        out.append("| answered / stored / lost | " + " | ".join(
            "{} / {} / {}".format(*(sum(r[k] for r in recs if r["label"] == lab)
                                    for k in ("answered", "stored", "lost")))
            for lab in labels) + " |")
        pairs: dict[int, dict[str, dict[str, Any]]] = {}
        for r in recs:
            pairs.setdefault(r["pair"], {})[r["label"]] = r
        base = "antenna" if "antenna" in labels else labels[0]
        out.append("")
        for lab in labels:
            if lab == base:
                continue
            for key, heading, _fmt in FIGURES[:3]:
                ratios = [p[lab][key] / p[base][key] for p in pairs.values()
                          if lab in p and base in p and p[lab][key] and p[base][key]]
                out.append(f"- {lab}/{base} {heading}, per pair: "
                           f"median {med_range(ratios, '{:.2f}')} over {len(ratios)} pairs")
        out.append("")
    return "\n".join(out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--harness", type=Path, default=os.environ.get("BENCH_HARNESS"))
    p.add_argument("--antenna", type=Path, help="a checkout of Antenna (1af1f6b) with .venv")
    p.add_argument("--targets", nargs="+", default=["tw-s3", "antenna"],
                   choices=["tw-s3", "antenna", "tw-fs"])
    p.add_argument("--payloads", dest="payload_names", nargs="+", default=["400k"])
    p.add_argument("--workers", type=int, default=2, help="antenna-tw --workers")
    p.add_argument("--antenna-workers", type=int, default=5, help="gunicorn sync workers")
    p.add_argument("--standin-workers", type=int, default=1, help="nginx workers")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--secs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--conc", type=int, default=32)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--set", dest="settings", action="append", default=[],
                   metavar="KEY=VALUE", help="extra antenna-tw setting (repeatable)")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/antenna-s3-bench"))
    p.add_argument("--port-base", type=int, default=19640)
    p.add_argument("--twistd", default=str(rb.ROOT / ".venv" / "bin" / "twistd"))
    p.add_argument("--out", type=Path)
    p.add_argument("--max-minutes", type=float, default=40)
    args = p.parse_args(argv)
    args.settings = dict(s.split("=", 1) for s in args.settings)
    for name in ("harness", "out"):
        if getattr(args, name) is None:
            p.error(f"--{name} is needed")
    if "antenna" in args.targets:
        if args.antenna is None:
            p.error("--antenna CHECKOUT is needed for the antenna target")
        args.antenna = args.antenna.resolve()
        if not (args.antenna / ".venv" / "bin" / "gunicorn").exists():
            p.error(f"no {args.antenna}/.venv/bin/gunicorn: run "
                    f"python3 bench/antenna_s3.py setup {args.antenna}")
    args.harness = Path(args.harness).resolve()
    args.scratch = args.scratch.resolve()
    args.payloads = args.scratch / "payloads"
    return args


def collector_version(twistd: str) -> str:
    """The commit of the checkout whose .venv/bin/twistd runs antenna-tw."""
    checkout = Path(twistd).absolute().parent.parent.parent
    r = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %cs %s"],
                       capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True, check=False)
    return (f"antenna-tw code run: {checkout}: {r.stdout.strip() or '?'}"
            + (" (modified files)" if dirty.stdout.strip() else ""))


def antenna_version(checkout: Path) -> str:
    r = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %cs %s"],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() or f"{checkout} (not a git checkout; expected {ANTENNA_COMMIT})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["setup"]:
        if len(argv) != 2:
            raise SystemExit("usage: antenna_s3.py setup CHECKOUT")
        return setup(Path(argv[1]).resolve())
    args = parse_args(argv)
    for tool in ("wrk", "ss", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} not found")
    for sub in ("tw-s3", "tw-fs", "antenna", "standin", "state"):
        shutil.rmtree(args.scratch / sub, ignore_errors=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sha = rb.prepare_payloads(args)

    rb.arm_watchdog(args.max_minutes)
    args.rounds, args.stored = args.pairs, "set-aside"  # for rb.versions()
    info = rb.versions(args)[:-2] + [collector_version(args.twistd), 
        f"antenna-tw: --workers {args.workers}, S3 storage on the stand-in (tw-s3) or "
        f"filesystem (tw-fs), LOGGING_LEVEL={args.log_level}, SPOOL_FSYNC=false, "
        "METRICS_CLASS=none" + "".join(f", {k}={v}" for k, v in args.settings.items()),
        f"method: run_load.sh CONN_CLOSE=1 WARMUP={args.warmup} SECS={args.secs} conc "
        f"{args.conc}, {args.pairs} alternating pairs per payload"]
    if "antenna" in args.targets:
        info.append(f"antenna: {antenna_version(args.antenna)}; gunicorn sync x"
                    f"{args.antenna_workers}; S3CrashStorage (boto3) on the stand-in")
    (args.out / "versions.txt").write_text("\n".join(info) + "\n")
    print("\n".join(info), flush=True)
    records: list[dict[str, Any]] = []
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read
    statsd.bind(("127.0.0.1", 0))
    try:
        standin = S3StandIn(args.scratch / "standin", args.port_base + 9, BUCKET,
                            args.standin_workers).start()
        rb._cleanups.append(standin.stop)
        targets: dict[str, Any] = {}
        for i, label in enumerate(args.targets):
            if label == "antenna":
                targets[label] = AntennaServer(args, args.port_base + i, standin,
                                               statsd.getsockname()[1]).start()
            else:
                targets[label] = TwCollector(args, label, args.port_base + i,
                                             standin if label == "tw-s3" else None).start()
        counter = StoredCounter(standin)
        counter.take()  # the start-up checks' objects
        with open(args.out / "runs.jsonl", "a") as fp:
            for payload in args.payload_names:
                for pair in range(1, args.pairs + 1):
                    order = args.targets if pair % 2 else list(reversed(args.targets))
                    for label in order:
                        rec = one_run(args, label, targets[label], standin, counter, payload,
                                      sha, pair)
                        rec["conc"] = args.conc
                        records.append(rec)
                        fp.write(json.dumps(rec) + "\n")
                        fp.flush()
                        print(json.dumps({k: rec[k] for k in (
                            "payload", "pair", "label", "rps", "p99_ms", "cpu_ms_per_crash",
                            "standin_ms_per_crash", "answered", "stored", "lost",
                            "other_cpu_pct")}), flush=True)
    finally:
        rb.disarm_watchdog()
        rb.cleanup()
        statsd.close()
        for label in args.targets:  # logs without the per-crash lines
            src = args.scratch / label / f"{label}.log"
            if src.exists():
                with open(args.out / f"{label}.log", "w") as dst:
                    subprocess.run(["grep", "-v", "-e", "matched by", "-e", 'saved"', "-e",
                                    "published", "-e", "crash publish no-op", "-e", "dogstatsd",
                                    str(src)], stdout=dst, check=False)
    if records:
        text = "\n".join(info) + "\n\n" + summarize(records, args.targets)
        (args.out / "summary.md").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
