#!/usr/bin/env python3
"""
antenna-tw against the nginx "floor" with a load harness (wrk plus its
payload maker) whose path is given with --harness. Not run by CI. Sends
traffic to 127.0.0.1 only.

    bench/run_bench.sh [matrix] [options]     # every acceptance figure, ~13 min
    bench/run_bench.sh profile [options]      # py-spy profile of the hot path
    bench/run_bench.sh s3 [options]           # S3 end to end on a stand-in (bench/s3_mode.py)

Needs: ``make install`` (the .venv), wrk, nginx-light and
libnginx-mod-http-echo (``apt-get install -y wrk nginx-light
libnginx-mod-http-echo``), and the load harness: a folder holding
``compare.sh``, ``run_load.sh``, ``proc_sampler.py``, ``make_payloads.py``
and ``floor/start_floor.sh``, given with ``--harness DIR`` or
$BENCH_HARNESS (there is no default). ``profile`` also needs py-spy in the
.venv (``make install-bench``).

``matrix`` generates the payloads once (the harness's make_payloads.py),
starts antenna-tw (``twistd -n antenna --workers N``, spool and filesystem
storage under the scratch directory, SPOOL_FSYNC=false, METRICS_CLASS=none)
and the nginx floor, and runs these blocks (``--blocks`` picks some):

  400k-c8 400k-c32 400k_gz-c8 400k_gz-c32 3m-c8
      the harness's compare.sh, floor and antenna alternating for --rounds
      rounds, CONN_CLOSE=1, wrapped in proc_sampler.py on the collector's
      process tree (peak RSS, CPU seconds). After every antenna run a hook
      waits for the spool to drain, counts the complete crashes stored
      (raw_crash + dump_names + dump) against ok200 + warmup_ok200, checks
      5 dumps' SHA-256 against the payload, deletes what was stored, and
      takes the tree's CPU per stored crash.
  workers
      --workers 1, --workers N, and the floor with 1 and with N nginx
      workers (400k, conc 32), alternating: antenna-tw's N/1 ratio is taken
      against the floor's own N/1 in the same round.
  spool-down
      a collector whose storage root is replaced by a regular file once it
      has started (every save fails) takes >= --down-crashes crashes of
      --down-payload while its RSS is sampled, they wait --down-wait s, it
      is stopped, storage comes back, a new collector drains the spool and
      every answered crash is looked for in storage.

CPU per crash is also compared with the floor's CPU per request in the same
round plus the SHA-256 (and inflate, for gzip) of the body, measured by
bench/work_floor.py in the collector's Python. It prints the acceptance table
and writes every raw output under --out
(default bench/results/<UTC date>/). Everything it started is stopped at the
end, also on failure, Ctrl-C or the --max-minutes watchdog.

``profile`` starts one collector and, for each of --payloads, puts it under
load (conc --conc, CONN_CLOSE=1) while ``py-spy record --subprocesses``
samples its worker processes for --duration s; it prints (and writes under
--out) the top costs by line, by function and by area, in % of the
collector's busy samples and in ms of CPU per crash.

Examples (with ``export BENCH_HARNESS=/path/to/harness``, or ``--harness`` each time):
    bench/run_bench.sh                                   # the full matrix
    bench/run_bench.sh --blocks 400k-c32 --rounds 1 --secs 5   # a quick look
    bench/run_bench.sh --set LOGGING_LEVEL=WARNING --blocks 400k-c32
    bench/run_bench.sh profile --payloads 400k 400k_gz
"""

from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HZ = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024
BLOCKS = ["400k-c8", "400k-c32", "400k_gz-c8", "400k_gz-c32", "3m-c8", "workers", "spool-down"]
DUMP_NAME = "upload_file_minidump"
DRAIN_TIMEOUT = 180.0

_cleanups = []  # callables run in reverse order at exit


# -- processes ----------------------------------------------------------------

def _proc_stat(pid):
    with open(f"/proc/{pid}/stat") as fp:
        stat = fp.read()
    return stat[stat.rindex(")") + 2:].split()


def tree_pids(root):
    """``root`` and all its descendants (re-read from /proc)."""
    kids = collections.defaultdict(list)
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                kids[int(_proc_stat(name)[1])].append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo.extend(kids.get(pid, []))
    return seen


def _tree_stat_fields(root, indexes):
    """{pid: [int(field) for each index]} of the tree's /proc/PID/stat (fields after comm)."""
    values = {}
    for pid in tree_pids(root):
        try:
            fields = _proc_stat(pid)
            values[pid] = [int(fields[index]) for index in indexes]
        except (OSError, ValueError, IndexError):
            pass
    return values


def tree_cpu_ticks(root):
    """{pid: [utime, stime] ticks} of the tree."""
    return _tree_stat_fields(root, (11, 12))


def tree_minor_faults(root):
    """Minor page faults of the tree so far (its live processes)."""
    return sum(minflt for minflt, in _tree_stat_fields(root, (7,)).values())


def cpu_delta_split(before, after):
    """(user, system) CPU seconds between two tree_cpu_ticks() snapshots."""
    user = sum(t[0] - before.get(pid, [0, 0])[0] for pid, t in after.items()) / HZ
    system = sum(t[1] - before.get(pid, [0, 0])[1] for pid, t in after.items()) / HZ
    return user, system


def cpu_delta_seconds(before, after):
    """CPU seconds between two tree_cpu_ticks() snapshots (new processes count from 0)."""
    return sum(cpu_delta_split(before, after))


def thread_cpu_ticks(pids):
    """
    CPU ticks of ``pids`` split into their main (reactor) threads and all
    their other threads (the process total minus the main thread, so threads
    that ended count too), as {"reactor": [user, sys], "threads": [user, sys]},
    plus "minflt": minor page faults of the processes.
    """
    out = {"reactor": [0, 0], "threads": [0, 0], "minflt": 0}
    for pid in pids:
        try:
            proc = _proc_stat(pid)
            with open(f"/proc/{pid}/task/{pid}/stat") as fp:
                stat = fp.read()
            main = stat[stat.rindex(")") + 2:].split()
        except (OSError, ValueError, IndexError):
            continue
        for i, field in enumerate((11, 12)):
            out["reactor"][i] += int(main[field])
            out["threads"][i] += int(proc[field]) - int(main[field])
        out["minflt"] += int(proc[7])
    return out


def tree_rss_mb(root):
    total = 0
    for pid in tree_pids(root):
        try:
            total += int(_proc_stat(pid)[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    return total / MB


def port_in_use(port):
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def listener_pids(port):
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True,
                         text=True, check=False).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def session_pids(sid):
    """Processes in session ``sid`` (one we started with start_new_session=True).
    Sessions, unlike process groups, also hold what ``timeout`` moved to its own group."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if int(_proc_stat(name)[3]) == sid:
                    pids.append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def stop_group(process, first_signal, grace, name):
    """Signal ``process``; after ``grace`` seconds SIGKILL what is left of its session."""
    if process.poll() is None:
        try:
            os.kill(process.pid, first_signal)
        except ProcessLookupError:
            pass
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            print(f"bench: {name} did not stop in {grace:.0f} s; SIGKILL", file=sys.stderr)
    for pid in session_pids(process.pid):  # leftovers of the session we created
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        pass


class Collector:
    """One ``twistd -n antenna`` with its own spool and storage directories."""

    def __init__(self, args, name, port, workers, directory, extra_env=None):
        self.name = name
        self.port = port
        self.workers = workers
        self.directory = Path(directory)
        self.spool = self.directory / "spool"
        self.storage = self.directory / "crashes"
        self.log_path = self.directory / f"{name}.log"
        self.url = f"http://127.0.0.1:{port}/submit"
        self.env = dict(os.environ)
        for key in [k for k in self.env if k.startswith(("CRASHSTORAGE_", "SPOOL_"))]:
            del self.env[key]
        self.env.pop("ANTENNA_ENV", None)
        self.env.update({
            "SPOOL_DIR": str(self.spool),
            "CRASHSTORAGE_CLASS": "fs",
            "CRASHSTORAGE_FS_ROOT": str(self.storage),
            "METRICS_CLASS": "none",
            "LOGGING_LEVEL": args.log_level,
            "SPOOL_FSYNC": "false",
            "BASEDIR": str(self.directory),
        })
        self.env.update(args.settings)
        self.env.update(extra_env or {})
        self.twistd = args.twistd
        self.process = None

    def start(self, timeout=30.0):
        if port_in_use(self.port):
            raise SystemExit(f"bench: port {self.port} is in use; pick others (--port-base)")
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.twistd, "-n", "--pidfile=", "antenna",
                 "--port", f"tcp:{self.port}:interface=127.0.0.1",
                 "--workers", str(self.workers)],
                cwd=self.directory, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        _cleanups.append(self.stop)
        want = max(1, self.workers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"bench: {self.name} exited {self.process.returncode}:\n"
                                 + self.log_tail())
            if len(listener_pids(self.port) & set(tree_pids(self.process.pid))) >= want:
                time.sleep(0.5)
                return self
            time.sleep(0.2)
        raise SystemExit(f"bench: {self.name} did not listen in {timeout:.0f} s:\n"
                         + self.log_tail())

    @property
    def pid(self):
        return self.process.pid

    def worker_pids(self):
        pids = tree_pids(self.pid)
        return pids[1:] if self.workers > 0 else pids

    def stop(self):
        if self.process is not None:
            stop_group(self.process, signal.SIGTERM, 60, self.name)
            self.process = None

    def log_tail(self, lines=15):
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""


class Floor:
    """The harness's nginx floor (floor/start_floor.sh), in the foreground."""

    def __init__(self, harness, port, prefix, workers=None):
        self.script = harness / "floor" / "start_floor.sh"
        self.port = port
        self.workers = workers  # nginx worker_processes; None: the script's default (auto)
        self.prefix = Path(prefix)
        self.url = f"http://127.0.0.1:{port}/submit"
        self.process = None

    def start(self, timeout=15.0):
        if port_in_use(self.port):
            raise SystemExit(f"bench: port {self.port} is in use; pick others (--port-base)")
        self.prefix.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, FLOOR_PREFIX=str(self.prefix))
        if self.workers:
            env["FLOOR_WORKERS"] = str(self.workers)
        with open(self.prefix / "start.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(self.script), str(self.port)], env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        _cleanups.append(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit("bench: the floor exited:\n"
                                 + (self.prefix / "start.log").read_text(errors="replace"))
            if port_in_use(self.port):
                time.sleep(0.3)
                return self
            time.sleep(0.1)
        raise SystemExit("bench: the floor did not listen")

    @property
    def pid(self):
        return self.process.pid

    def stop(self):
        if self.process is not None:
            stop_group(self.process, signal.SIGQUIT, 10, "floor")
            self.process = None


def arm_watchdog(max_minutes):
    """SIGINT, SIGTERM, SIGHUP, and ``max_minutes`` from now SIGALRM, raise SystemExit,
    so that a ``finally`` stops what the bench started."""
    def on_signal(signum, frame):
        raise SystemExit(f"bench: stopped by signal {signum}")

    def on_alarm(signum, frame):
        raise SystemExit(f"bench: watchdog: more than {max_minutes} minutes")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(max_minutes * 60))


def disarm_watchdog():
    """No alarm, and the stop signals ignored while the bench cleans up."""
    signal.alarm(0)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def cleanup():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as error:  # keep stopping the rest
            print(f"bench: cleanup: {error!r}", file=sys.stderr)


# -- spool and storage ----------------------------------------------------------

def spool_entries(spool_dir):
    """(paths of complete entries, number of temp files) in a spool and its worker shards."""
    entries, temps = [], 0
    for directory, _dirs, files in os.walk(spool_dir):
        if os.path.basename(directory) == "corrupt":
            continue
        for name in files:
            if name.startswith(".tmp-"):
                temps += 1
            elif name.endswith(".crash"):
                entries.append(os.path.join(directory, name))
    return entries, temps


def spool_counts(spool_dir):
    entries, temps = spool_entries(spool_dir)
    return len(entries), temps


def failed_spool_writes(log_path):
    """Crash ids the collector logged as "spool write failed" (mozlog JSON lines)."""
    found = subprocess.run(["grep", "-F", "spool write failed", str(log_path)],
                           capture_output=True, text=True, check=False).stdout
    return set(re.findall(r'"msg": "([0-9a-f-]{36}): spool write failed', found))


def wait_drained(spool_dir, log_path=None, timeout=DRAIN_TIMEOUT):
    """
    Wait until the crash movers have emptied the spool. Entries of crashes the
    collector logged as "spool write failed" (the client went away during the
    spool write: the file is written but never queued; fixed in 3fcd954)
    stay until a restart; once only those are left for 2 s, they are removed.
    Returns (seconds waited or None on timeout, orphaned entries removed, the
    other entries left).
    """
    started = time.monotonic()
    time.sleep(0.5)  # requests that were in flight when wrk stopped
    last, since = None, time.monotonic()
    while time.monotonic() - started < timeout:
        entries, temps = spool_entries(spool_dir)
        if not entries and not temps:
            time.sleep(0.3)
            if spool_counts(spool_dir) == (0, 0):
                return time.monotonic() - started, 0, 0
            continue
        if len(entries) != last or temps:
            last, since = len(entries), time.monotonic()
        elif time.monotonic() - since >= 2.0 and log_path is not None:
            failed = failed_spool_writes(log_path)
            ids = {os.path.basename(p)[21:-len(".crash")]: p for p in entries}
            if set(ids) <= failed:
                for path in ids.values():
                    os.unlink(path)
                return time.monotonic() - started, len(ids), 0
        time.sleep(0.3)
    return None, 0, spool_counts(spool_dir)[0]


COUNTED = ".counted"  # under a storage root: crashes already counted (set aside)


def count_stored(storage, then=None, check=5, manifest_sha=None):
    """
    Complete crashes under a filesystem storage root (raw_crash, dump_names and
    the dump all present), incomplete ones, leftover temp files, and the SHA-256
    of ``check`` random dumps against ``manifest_sha``. ``then``: None, or
    ``"delete"`` them all, or ``"set-aside"`` (``set_aside_day``) so the next
    count skips them (``--stored``).
    """
    complete, incomplete, temps, bad_sha, checked = 0, 0, 0, 0, 0
    if not os.path.isdir(storage):
        return dict(stored=0, incomplete=0, tmp_left=0, sha_checked=0, sha_bad=0)
    for day in sorted(os.listdir(storage)):
        day_dir = os.path.join(storage, day)
        if not os.path.isdir(day_dir) or day.startswith("."):
            continue

        def ids(sub, suffix=""):
            path = os.path.join(day_dir, sub)
            try:
                names = os.listdir(path)
            except FileNotFoundError:
                return set(), 0
            tmp = sum(1 for n in names if n.startswith(".tmp-"))
            return {n[: len(n) - len(suffix)] for n in names
                    if not n.startswith(".") and n.endswith(suffix)}, tmp

        raw, t1 = ids("raw_crash", ".json")
        names, t2 = ids("dump_names", ".json")
        dumps, t3 = ids(DUMP_NAME)
        temps += t1 + t2 + t3
        good = raw & names & dumps
        complete += len(good)
        incomplete += len(raw - good)
        if manifest_sha and good and checked < check:
            for crash_id in random.sample(sorted(good), min(check - checked, len(good))):
                with open(os.path.join(day_dir, DUMP_NAME, crash_id), "rb") as fp:
                    digest = hashlib.sha256(fp.read()).hexdigest()
                with open(os.path.join(day_dir, "raw_crash", crash_id + ".json")) as fp:
                    raw_crash = json.load(fp)
                checked += 1
                if digest != manifest_sha or raw_crash.get("uuid") != crash_id:
                    bad_sha += 1
        if then == "set-aside":
            set_aside_day(storage, day)
        elif then == "delete":
            for sub in os.listdir(day_dir):
                sub_dir = os.path.join(day_dir, sub)
                if os.path.isdir(sub_dir):
                    with os.scandir(sub_dir) as it:
                        for entry in it:
                            os.unlink(entry.path)
    return dict(stored=complete, incomplete=incomplete, tmp_left=temps,
                sha_checked=checked, sha_bad=bad_sha)


def set_aside_day(storage, day):
    """
    Move a counted day directory under ``storage/.counted/``, its dumps
    emptied first. Unlike deleting, this frees no inodes: on an ext4 without
    a journal (this machine), every inode freed in the last 60-300 s is read
    and skipped each time a file is created in its block group, which made
    each run slower than the one before (docs/performance.rst, *Method*). The dumps' blocks are freed, so the disk does not fill; the
    inodes go at the end, with ``remove_set_aside``.
    """
    day_dir = os.path.join(storage, day)
    try:
        with os.scandir(os.path.join(day_dir, DUMP_NAME)) as it:
            for entry in it:
                os.truncate(entry.path, 0)
    except FileNotFoundError:
        pass
    aside = os.path.join(storage, COUNTED)
    os.makedirs(aside, exist_ok=True)
    os.rename(day_dir, os.path.join(aside, f"{day}-{time.time_ns()}"))


def remove_set_aside(storage, keep=False):
    """
    Delete the crashes ``set_aside_day`` kept (their inodes are freed now),
    unless ``keep`` (``--keep-counted``: for A/B runs back to back, each with
    its own ``--scratch``; delete them by hand afterwards).
    """
    if not keep:
        shutil.rmtree(Path(storage) / COUNTED, ignore_errors=True)


def manifest(body_dir):
    rows = {}
    with open(Path(body_dir) / "MANIFEST.tsv") as fp:
        header = fp.readline().split()
        for line in fp:
            row = dict(zip(header, line.split()))
            rows[row["name"]] = row
    return rows


def kv_line(line):
    return dict(field.split("=", 1) for field in line.split() if "=" in field)


# -- compare.sh hooks (run by compare.sh as `run_bench.py _hook before|after`) -----

def machine_ticks():
    """(busy, total) CPU ticks of the whole machine, and the CPU ticks of
    compare.sh's reaped children (wrk and the hooks); for hooks only."""
    with open("/proc/stat") as fp:
        fields = [int(x) for x in fp.readline().split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    client, pid = 0, os.getppid()  # compare.sh, maybe with a `bash -c` between
    for _ in range(3):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fp:
                is_compare = b"compare.sh" in fp.read()
            stat = _proc_stat(pid)
        except (OSError, ValueError, IndexError):
            break
        if is_compare:
            client = int(stat[13]) + int(stat[14])
            break
        pid = int(stat[1])
    return busy, sum(fields), client


def hook(which):
    state = json.loads(Path(os.environ["BENCH_STATE"]).read_text())
    label = os.environ["RUN_LABEL"]
    target = state["targets"].get(label)
    if target is None:
        return
    mark = Path(state["dir"]) / f"cpu-{label}.json"
    if which == "before":
        mark.write_text(json.dumps({"tree": {str(k): v for k, v in
                                             tree_cpu_ticks(target["pid"]).items()},
                                    "machine": machine_ticks()}))
        return
    line = kv_line(os.environ.get("RUN_LINE", ""))
    answered = int(line.get("ok200", 0)) + int(line.get("warmup_ok200", 0))
    record = {"block": state["block"], "label": label, "round": int(os.environ["RUN_ROUND"]),
              "name": line.get("name"), "conc": int(line.get("conc", 0)),
              "kind": target["kind"], "answered": answered}
    if target["kind"] == "collector":
        drain, orphaned, undrained = wait_drained(target["spool"], target["log"])
        shas = state.get("sha", {})
        record.update(count_stored(target["storage"], then=state["stored"],
                                   manifest_sha=shas.get(record["name"])))
        record["drain_s"] = None if drain is None else round(drain, 1)
        record["orphaned"] = orphaned
        record["undrained"] = undrained
        record["lost"] = max(0, answered - record["stored"])
        record["surplus"] = record["stored"] - answered
        crashes = record["stored"]
    else:
        crashes = answered
    marks = json.loads(mark.read_text())
    before = {int(k): v for k, v in marks["tree"].items()}
    user, system = cpu_delta_split(before, tree_cpu_ticks(target["pid"]))
    cpu = user + system
    # Everything else on the machine: busy CPU minus this target and the load
    # generator (wrk, reaped by compare.sh), as % of all CPUs' time.
    (busy0, total0, client0), (busy1, total1, client1) = marks["machine"], machine_ticks()
    other = (busy1 - busy0) / HZ - cpu - (client1 - client0) / HZ
    record["other_cpu_pct"] = round(100 * other / ((total1 - total0) / HZ), 1) \
        if total1 > total0 else None
    record["cpu_s"] = round(cpu, 2)
    record["cpu_ms_per_crash"] = round(1000 * cpu / crashes, 3) if crashes else None
    record["user_ms_per_crash"] = round(1000 * user / crashes, 3) if crashes else None
    record["sys_ms_per_crash"] = round(1000 * system / crashes, 3) if crashes else None
    with open(Path(state["dir"]) / "hooks.jsonl", "a") as fp:
        fp.write(json.dumps(record) + "\n")
    shown = {k: v for k, v in record.items() if k not in ("block", "kind")}
    print("stored " + " ".join(f"{k}={v}" for k, v in shown.items()), flush=True)


# -- the matrix --------------------------------------------------------------

class Run:
    """Output files and the printed log of one bench invocation."""

    def __init__(self, out):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)

    def tee(self, cmd, env, path, cwd=None):
        """Run ``cmd`` in its own session, echoing and saving its output; its lines."""
        lines = []
        with open(path, "w") as fp:
            process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True)
            stopper = lambda: stop_group(process, signal.SIGTERM, 5, cmd[0])  # noqa: E731
            _cleanups.append(stopper)
            for line in process.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                fp.write(line)
                lines.append(line.rstrip("\n"))
            process.wait()
            _cleanups.remove(stopper)
        if process.returncode:
            raise RuntimeError(f"{cmd[0]} exited {process.returncode}; see {path}")
        return lines


def run_compare(args, run, block, name, conc, targets, sampler_roots, sha):
    """One compare.sh block; returns parsed runs, ratios, sampler figures and hook records."""
    state_dir = args.scratch / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    state = {"dir": str(state_dir), "block": block, "sha": sha, "targets": {},
             "stored": args.stored}
    for label, target in targets:
        if isinstance(target, Collector):
            state["targets"][label] = {"kind": "collector", "pid": target.pid,
                                       "spool": str(target.spool),
                                       "storage": str(target.storage),
                                       "log": str(target.log_path)}
        else:
            state["targets"][label] = {"kind": "floor", "pid": target.pid}
    state_path = state_dir / f"state-{block}.json"
    state_path.write_text(json.dumps(state))
    hooks_path = state_dir / "hooks.jsonl"
    first_hook = sum(1 for _ in open(hooks_path)) if hooks_path.exists() else 0
    hook_cmd = f"exec {sys.executable} {Path(__file__).resolve()} _hook"
    env = dict(os.environ, CONN_CLOSE="1", ROUNDS=str(args.rounds), WARMUP=str(args.warmup),
               LOG_DIR=str(args.scratch / "wrk-logs"), BENCH_STATE=str(state_path),
               BEFORE_RUN=f"{hook_cmd} before", AFTER_RUN=f"{hook_cmd} after")
    cmd = [str(args.harness / "compare.sh"), str(args.payloads), name, str(conc),
           str(args.secs)] + [f"{label}={t.url}" for label, t in targets]
    if sampler_roots:
        cmd = ([sys.executable, str(args.harness / "proc_sampler.py"), "--interval", "0.2",
                "--label", block] + [str(p) for p in sampler_roots] + ["--"] + cmd)
    print(f"\n== block {block}: {name} conc {conc}, {args.rounds} rounds x {args.secs} s",
          flush=True)
    lines = run.tee(cmd, env, run.out / f"{block}.txt")
    result = {"block": block, "name": name, "conc": conc, "runs": [], "summary": {},
              "sampler": None}
    for line in lines:
        if line.startswith("round="):
            result["runs"].append(kv_line(line))
        elif line.startswith("summary "):
            m = re.match(r"summary (\S+)/(\S+) rps ratio: median=(\S+) min=(\S+) max=(\S+)", line)
            if m:
                result["summary"][m.group(1)] = tuple(float(x) for x in m.group(3, 4, 5))
        elif line.startswith("label=" + block + " "):
            result["sampler"] = kv_line(line)
    with open(hooks_path) as fp:
        result["hooks"] = [json.loads(line) for line in list(fp)[first_hook:]]
    return result


def med_range(values, fmt="{:.0f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return (fmt.format(statistics.median(values)) + " ("
            + fmt.format(min(values)) + ".." + fmt.format(max(values)) + ")")


def target_runs(result, label):
    return [r for r in result["runs"] if r.get("target") == label]


def down_test(args, run, sha):
    """Storage down: RSS while >= N crashes wait in the spool; then all of them stored."""
    directory = args.scratch / "down"
    collector = Collector(args, "down", args.port_base + 2, args.workers, directory,
                          {"SHUTDOWN_TIMEOUT": "2"})
    collector.start()
    storage, parked = collector.storage, Path(str(collector.storage) + ".up")
    if parked.exists():
        shutil.rmtree(parked)
    os.rename(storage, parked)
    storage.write_text("storage is down on purpose (bench/run_bench.py)\n")
    restore_cleanup = lambda: _restore_storage(storage, parked)  # noqa: E731
    _cleanups.insert(0, restore_cleanup)
    samples, stop = [], threading.Event()
    t0 = time.monotonic()

    def sample():
        while not stop.is_set():
            entries, _ = spool_counts(collector.spool)
            samples.append((round(time.monotonic() - t0, 1), entries,
                            round(tree_rss_mb(collector.pid), 1)))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    answered, lines, cpu_wait = 0, [], 0.0
    env = dict(os.environ, CONN_CLOSE="1", WARMUP="0", LABEL="down",
               LOG_DIR=str(args.scratch / "wrk-logs"))
    print(f"\n== block spool-down: storage down, filling the spool with "
          f">= {args.down_crashes} x {args.down_payload}", flush=True)
    try:
        for _ in range(60):
            if answered >= args.down_crashes:
                break
            line = run.tee([str(args.harness / "run_load.sh"), collector.url,
                            str(args.payloads), args.down_payload, "8", "5"], env,
                           args.scratch / "down-last.txt")[-1]
            lines.append(line)
            fields = kv_line(line)
            answered += int(fields["ok200"])
            if int(fields["non200"]) or int(fields["bad_body"]):
                print(f"bench: spool-down: non-200 answers: {line}", flush=True)
        filled = time.monotonic() - t0
        print(f"spool-down: {answered} answered; waiting {args.down_wait} s", flush=True)
        ticks = tree_cpu_ticks(collector.pid)
        time.sleep(args.down_wait)
        cpu_wait = cpu_delta_seconds(ticks, tree_cpu_ticks(collector.pid))
    finally:
        stop.set()
        sampler.join()
    waiting, _ = spool_counts(collector.spool)
    failed_saves = _count_in_log(collector.log_path, "save failed")
    collector.stop()
    _restore_storage(storage, parked)
    _cleanups.remove(restore_cleanup)
    left_after_stop, _ = spool_counts(collector.spool)

    recover = Collector(args, "recover", args.port_base + 2, args.workers, directory)
    started = time.monotonic()
    recover.start()
    peak_recover = tree_rss_mb(recover.pid)
    drain_start = time.monotonic()
    while time.monotonic() - drain_start < DRAIN_TIMEOUT:
        peak_recover = max(peak_recover, tree_rss_mb(recover.pid))
        if spool_counts(recover.spool) == (0, 0):
            break
        time.sleep(0.5)
    drained, _, _ = wait_drained(recover.spool, recover.log_path, timeout=30)
    drain_s = time.monotonic() - started
    counts = count_stored(recover.storage, then="delete", manifest_sha=sha.get(args.down_payload))
    recover.stop()

    # RSS: the baseline is the first sample with >= 1,000 crashes waiting (warm).
    base = next((s for s in samples if s[1] >= 1000), samples[0])
    after = [s for s in samples if s[0] >= base[0]]
    full = [s for s in samples if s[0] >= filled]
    result = {
        "payload": args.down_payload, "answered": answered, "waiting": waiting,
        "left_after_stop": left_after_stop, "failed_saves": failed_saves,
        "fill_s": round(filled, 1), "wait_s": args.down_wait,
        "rss_base": base, "rss_max": max(after, key=lambda s: s[2]),
        "rss_min_after": min(after, key=lambda s: s[2]),
        "rss_full_min": min(s[2] for s in full) if full else None,
        "rss_full_max": max(s[2] for s in full) if full else None,
        "growth": max(s[2] for s in after) / base[2] - 1,
        "recover_s": round(drain_s, 1), "recover_drained": drained is not None,
        "recover_peak_rss": round(peak_recover, 1),
        "wait_cpu_pct": round(100 * cpu_wait / args.down_wait), **counts,
    }
    result["lost"] = max(0, answered - counts["stored"])
    with open(run.out / "spool-down.txt", "w") as fp:
        for line in lines:
            fp.write(line + "\n")
        fp.write("# samples: seconds since start, crashes waiting in the spool, "
                 "RSS MB of the collector tree\n")
        for s in samples:
            fp.write("sample t=%s waiting=%s rss_mb=%s\n" % s)
        fp.write("result " + " ".join(f"{k}={v}" for k, v in result.items()) + "\n")
    print("spool-down: " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    return result


def _restore_storage(storage, parked):
    if storage.is_file():
        storage.unlink()
    if parked.exists() and not storage.exists():
        os.rename(parked, storage)


def _count_in_log(path, text):
    try:
        with open(path, errors="replace") as fp:
            return sum(1 for line in fp if text in line)
    except OSError:
        return None


def versions(args):
    def sh(cmd):
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() \
            else "?"

    py = Path(args.twistd).parent / "python"
    mods = sh(f"{py} -c \"import sys, twisted, klein; print('Python', "
              f"sys.version.split()[0], 'Twisted', twisted.__version__, 'klein', "
              f"klein.__version__)\"")
    head = sh(f"git -C {ROOT} log -1 --format='%h %cs %s'")
    dirty = sh(f"git -C {ROOT} status --porcelain --untracked-files=no | wc -l")
    return [
        "date: " + datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        f"antenna-tw: {head}" + (f" (+{dirty} modified files)" if dirty != "0" else ""),
        "collector: " + mods,
        "nginx: " + sh("nginx -v"), "wrk: " + sh("wrk -v"),
        "kernel: " + sh("uname -r"), "cpus: " + sh("nproc"),
        "cpu: " + sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "memory: " + sh("free -m | awk '/Mem:/ {print $2 \" MB\"}'"),
        "load average at start: " + sh("cut -d' ' -f1-3 /proc/loadavg"),
        "scratch fs: " + sh(f"df -hT {args.scratch} | tail -1"),
        f"settings: --workers {args.workers}, LOGGING_LEVEL={args.log_level}, SPOOL_FSYNC=false,"
        f" METRICS_CLASS=none, CRASHSTORAGE_CLASS=fs"
        + "".join(f", {k}={v}" for k, v in args.settings.items()),
        f"method: compare.sh CONN_CLOSE=1 ROUNDS={args.rounds} WARMUP={args.warmup} "
        f"SECS={args.secs} WRK_THREADS={os.environ.get('WRK_THREADS', '2')}; "
        f"counted crashes: --stored {args.stored}",
    ]


def prepare_payloads(args):
    if not (args.payloads / "MANIFEST.tsv").exists():
        subprocess.run([sys.executable, str(args.harness / "make_payloads.py"),
                        str(args.payloads)], check=True, stdout=subprocess.DEVNULL)
    return {name: row["dump_sha256"] for name, row in manifest(args.payloads).items()}


def matrix(args):
    run = Run(args.out)
    sha = prepare_payloads(args)
    shutil.copy(args.payloads / "MANIFEST.tsv", run.out / "payloads-MANIFEST.tsv")
    info = versions(args)
    (run.out / "versions.txt").write_text("\n".join(info) + "\n")
    print("\n".join(info), flush=True)
    started = time.monotonic()
    results, down, workers_result = [], None, None

    compare_blocks = [b for b in args.blocks if b not in ("workers", "spool-down")]
    if compare_blocks or "workers" in args.blocks:
        antenna = Collector(args, "antenna", args.port_base, args.workers,
                            args.scratch / "antenna").start()
        _cleanups.insert(0, lambda: remove_set_aside(antenna.storage, args.keep_counted))
    if compare_blocks:
        floor = Floor(args.harness, args.port_base + 80, args.scratch / "floor").start()
        for block in compare_blocks:
            name, conc = block.rsplit("-c", 1)
            results.append(run_compare(args, run, block, name, int(conc),
                                       [("floor", floor), ("antenna", antenna)],
                                       [antenna.pid], sha))
        floor.stop()
    if "workers" in args.blocks:
        one = Collector(args, "one-worker", args.port_base + 1, 1,
                        args.scratch / "one-worker").start()
        _cleanups.insert(0, lambda: remove_set_aside(one.storage, args.keep_counted))
        # the floor's own N-against-1 worker ratio, in the same rounds (wrk shares the cores)
        floors = [Floor(args.harness, args.port_base + 81 + i, args.scratch / f"floor-w{n}",
                        workers=n).start() for i, n in enumerate((1, args.workers))]
        workers_result = run_compare(
            args, run, "workers", "400k", 32,
            [("w1", one), (f"w{args.workers}", antenna), ("floor-w1", floors[0]),
             (f"floor-w{args.workers}", floors[1])], [], sha)
        for floor in floors:
            floor.stop()
        one.stop()
    if compare_blocks or "workers" in args.blocks:
        antenna.stop()
    if "spool-down" in args.blocks:
        down = down_test(args, run, sha)
    work = work_floor(args, [r["name"] for r in results])
    if work:
        (run.out / "work-floor.json").write_text(json.dumps(work, indent=1) + "\n")
    report = summarize(args, results, workers_result, down, work)
    minutes = (time.monotonic() - started) / 60
    with open("/proc/loadavg") as fp:
        load = " ".join(fp.read().split()[:3])
    report.insert(0, "\n".join(info) + f"\nwall time: {minutes:.1f} min; load average at "
                  f"the end: {load}\n")
    text = "\n".join(report) + "\n"
    (run.out / "summary.txt").write_text(text)
    print("\n" + text, flush=True)
    print(f"raw outputs in {run.out}", flush=True)


def verdict(ok):
    return "PASS" if ok else "FAIL"


def work_floor(args, names):
    """bench/work_floor.py's SHA-256 (and inflate) per body of ``names``, in the collector's
    Python (its OpenSSL and inflate backend); {} if there is nothing to measure."""
    names = sorted(set(names))
    if not names:
        return {}
    out = subprocess.run([str(Path(args.twistd).parent / "python"),
                          str(ROOT / "bench" / "work_floor.py"), "--payloads",
                          str(args.payloads), "--json", "--names", *names],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def summarize(args, results, workers_result, down, work=None):
    out = ["Per block (antenna = antenna-tw; rps and p99 are medians of the rounds with "
           "min..max; CPU per stored crash from the hooks, and from proc_sampler over the "
           "whole block; 'other load' is the CPU used by everything but the target and wrk "
           "during each run, % of all CPUs, median (min..max) over all runs of the block: "
           "other sessions, kernel writeback, the sampler):", ""]
    out.append("| block | antenna crashes/s | floor crashes/s | antenna/floor per round "
               "| antenna p99 ms | floor p99 ms | CPU ms/crash (runs) | user / sys "
               "| CPU ms/crash (block) "
               "| floor CPU ms/crash | peak RSS / PSS MB | answered | stored | lost | orphaned "
               "| other load % |")
    out.append("|" + "---|" * 16)
    acceptance = []
    lost_total = answered_total = stored_total = orphaned_total = 0
    for r in results:
        a, f = target_runs(r, "antenna"), target_runs(r, "floor")
        hooks_a = [h for h in r["hooks"] if h["label"] == "antenna"]
        hooks_f = [h for h in r["hooks"] if h["label"] == "floor"]
        answered = sum(h["answered"] for h in hooks_a)
        stored = sum(h["stored"] for h in hooks_a)
        lost = sum(h["lost"] for h in hooks_a)
        lost_total += lost
        answered_total += answered
        stored_total += stored
        s = r["sampler"] or {}
        block_cpu = (1000 * float(s["cpu_s"]) / stored) if s and stored else None
        ratio = r["summary"].get("antenna")
        r["block_cpu"] = block_cpu
        orphaned = sum(h["orphaned"] for h in hooks_a)
        orphaned_total += orphaned
        out.append(("| {} " * 16 + "|").format(
            r["block"], med_range([float(x["rps"]) for x in a]),
            med_range([float(x["rps"]) for x in f]),
            "{:.2f} ({:.2f}..{:.2f})".format(*ratio) if ratio else "-",
            med_range([float(x["p99_ms"]) for x in a], "{:.1f}"),
            med_range([float(x["p99_ms"]) for x in f], "{:.1f}"),
            med_range([h["cpu_ms_per_crash"] for h in hooks_a], "{:.2f}"),
            "{:.2f} / {:.2f}".format(
                statistics.median(h["user_ms_per_crash"] for h in hooks_a),
                statistics.median(h["sys_ms_per_crash"] for h in hooks_a)) if hooks_a else "-",
            f"{block_cpu:.2f}" if block_cpu else "-",
            med_range([h["cpu_ms_per_crash"] for h in hooks_f], "{:.2f}"),
            f"{s.get('peak_rss_mb', '-')} / {s.get('peak_pss_mb', '-')}",
            answered, stored, lost, orphaned,
            med_range([h.get("other_cpu_pct") for h in r["hooks"]], "{:.0f}")))
    extra = []
    for r in results:
        for h in r["hooks"]:
            if h["kind"] == "collector" and (h["incomplete"] or h["tmp_left"] or h["sha_bad"]
                                             or h["drain_s"] is None or h["undrained"]
                                             or h["surplus"] > 2 * h["conc"]):
                extra.append(f"note: {r['block']} round {h['round']}: {h}")
    if orphaned_total:
        extra.append(f"orphaned: {orphaned_total} spool entries written for requests whose "
                     "client left during the spool write (logged 'spool write failed; answered "
                     "busy', CancelledError), never queued for storage until a restart; "
                     "removed by the bench after each run")
    out += [""] + extra

    by_block = {r["block"]: r for r in results}
    # CPU per crash against the work: the floor's CPU per request in the same
    # round plus the SHA-256 (and inflate) of the body (bench/work_floor.py).
    for block in ("400k-c32", "400k_gz-c32", "3m-c8"):
        r = by_block.get(block)
        row = (work or {}).get(block.rsplit("-c", 1)[0])
        if not r or not row:
            continue
        rounds = collections.defaultdict(dict)
        for h in r["hooks"]:
            rounds[h["round"]][h["label"]] = h["cpu_ms_per_crash"]
        pairs = [(v["antenna"], v["floor"]) for v in rounds.values()
                 if v.get("antenna") and v.get("floor")]
        if not pairs:
            continue
        ratios = [a / (f + row["work_ms"]) for a, f in pairs]
        m = statistics.median(ratios)
        a_med = statistics.median(a for a, _ in pairs)
        f_med = statistics.median(f for _, f in pairs)
        acceptance.append((
            f"2. CPU per crash against floor + work, {block}", "<= 1.3x",
            f"{m:.2f}x (rounds {min(ratios):.2f}..{max(ratios):.2f}; {a_med:.2f} ms against "
            f"{f_med:.2f} + {row['work_ms']:.2f} ms)", m <= 1.3))
    r = by_block.get("400k-c32")
    if r:
        p99 = [float(x["p99_ms"]) for x in target_runs(r, "antenna")]
        acceptance.append(("3a. p99 at conc 32, 400 KB", "<= 50 ms",
                           f"{statistics.median(p99):.0f} ms (rounds {min(p99):.0f}.."
                           f"{max(p99):.0f})", statistics.median(p99) <= 50))
    peaks = [float(r["sampler"]["peak_rss_mb"]) for r in results
             if r["block"].startswith("400k") and r["sampler"]]
    if peaks:
        acceptance.append(("4a. peak RSS during 400 KB runs", "<= 150 MB",
                           f"{max(peaks):.0f} MB ({args.workers} workers + parent)",
                           max(peaks) <= 150))
    if down:
        acceptance.append((
            f"4b. RSS flat with {down['waiting']} crashes waiting (storage down)",
            "within 10%",
            f"{100 * down['growth']:+.1f}% ({down['rss_base'][2]:.0f} MB at "
            f"{down['rss_base'][1]} waiting -> max {down['rss_max'][2]:.0f} MB at "
            f"{down['rss_max'][1]})", down["growth"] <= 0.10))
    if workers_result and workers_result["summary"]:
        # antenna-tw's N/1 worker ratio against the floor's own, round by round
        n = args.workers
        rps = collections.defaultdict(dict)
        for x in workers_result["runs"]:
            rps[x["round"]][x["target"]] = float(x["rps"])
        per_round = [(v[f"w{n}"] / v["w1"], v[f"floor-w{n}"] / v["floor-w1"])
                     for v in rps.values() if len(v) == 4 and v["w1"] and v["floor-w1"]]
        if per_round:
            ratios = [tw / fl for tw, fl in per_round]
            m = statistics.median(ratios)
            acceptance.append((
                f"3b. --workers {n}/1 against the floor's {n}/1 (400k, conc 32)", ">= 0.9x",
                f"{m:.2f}x (rounds {min(ratios):.2f}..{max(ratios):.2f}; antenna-tw "
                f"{statistics.median(tw for tw, _ in per_round):.2f}x, floor "
                f"{statistics.median(fl for _, fl in per_round):.2f}x)", m >= 0.9))
        for h in workers_result["hooks"]:
            if h["kind"] != "collector":
                continue
            lost_total += h.get("lost", 0)
            answered_total += h["answered"]
            stored_total += h.get("stored", 0)
    if down:
        lost_total += down["lost"]
        answered_total += down["answered"]
        stored_total += down["stored"]
    acceptance.append(("every answered crash stored", "0 lost",
                       f"{lost_total} lost; {stored_total} stored for {answered_total} "
                       "answered", lost_total == 0))
    out += ["Acceptance:", "",
            "| figure | target | measured | verdict |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {verdict(d)} |" for a, b, c, d in acceptance]
    if workers_result:
        per_label = collections.defaultdict(list)
        for h in workers_result["hooks"]:
            per_label[h["label"]].append(h["cpu_ms_per_crash"])
        out += ["", "workers block, CPU ms per stored crash (per request for the floors): "
                + ", ".join(f"{label} {med_range(values, '{:.2f}')}"
                            for label, values in per_label.items()),
                "workers block, crashes/s: " + ", ".join(
                    f"{label} "
                    + med_range([float(x["rps"]) for x in target_runs(workers_result, label)])
                    for label in per_label)]
    if work:
        out += ["", f"work per body (bench/work_floor.py, median ms of CPU; inflate "
                f"{work.get('_backend', {}).get('inflate', '?')}): " + ", ".join(
                    f"{name} SHA-256 {row['sha256_ms']:.2f} + inflate {row['inflate_ms']:.2f}"
                    for name, row in work.items() if not name.startswith("_"))]
    if down:
        out += ["", "spool-down: {answered} x {payload} answered in {fill_s} s with storage "
                "down ({failed_saves} 'save failed' log lines; {wait_cpu_pct}% CPU while "
                "waiting); RSS {rss_base[2]} MB at "
                "{rss_base[1]} waiting, {rss_full_min}..{rss_full_max} MB while all waited "
                "{wait_s} s; after a restart with storage back the spool drained in "
                "{recover_s} s (peak RSS {recover_peak_rss} MB); stored {stored}, lost "
                "{lost}.".format(**down)]
    return out


# -- profile ------------------------------------------------------------------

# py-spy does not see these waits as idle here; their samples are dropped.
IDLE_LEAVES = ("Condition.wait (threading.py", "Thread.join", "Event.wait",
               "EPollReactor.doPoll (twisted/internet/epollreactor.py", "_wait_for_tstate_lock")

# Areas, checked from the leaf of each stack towards its root: the first frame
# that matches decides. (pattern on "function (file)", area name)
AREAS = [
    (r"\(antenna_tw/logs\.py|\(twisted/logger/|formatEvent|Logger\.emit", "logging"),
    (r"^Decompressor\.", "gunzip (zlib)"),
    (r"^_write_all|^_write_file|^Spool\._put", "spool write (open/writev/rename, thread)"),
    (r"^Spool\.(load_blocking|load_files_blocking|_checked)|^_read_file|^_file_sha256"
     r"|^parse_raw_crash",
     "spool read (start-up entries and non-FS backends, thread)"),
    (r"^serialize_raw_crash|^serialize_dump_names|^Crash\.serialized", "storage JSON dumps"),
    (r"^write_atomically|^place_file|^_copy_into_place|^FSCrashStorage\.",
     "storage writes (link/write/rename, thread)"),
    (r"^Spool\.remove_blocking|^_unlink \(antenna_tw/spool", "spool unlink (thread)"),
    (r"^_Part\.|\(multipart\.py|\(antenna_tw/intake/formdata\.py|^PayloadParser\.|^UploadReader\.",
     "multipart parsing"),
    (r"^build_raw_crash|^finish_raw_crash|^Throttler|\(antenna_tw/throttler\.py"
     r"|\(antenna_tw/crashid\.py|^uuid4", "raw crash, throttle, crash id"),
    (r"callFromThread|wakeUp|\(twisted/_threads/|\(twisted/python/threadpool\.py"
     r"|deferToThreadPool|\(threading\.py", "thread-pool hops"),
    (r"\(twisted/internet/defer\.py|\(klein/", "Deferreds, klein routing"),
    (r"\(antenna_tw/", "antenna_tw other"),
    (r"\(twisted/web/", "twisted.web HTTP"),
    (r"\(twisted/internet/|\(socket\.py", "reactor, sockets (accept/recv/close)"),
]


# Inclusive time is listed for these frames only (the rest is framework plumbing).
INTERESTING = r"\((antenna_tw/|twisted/web/|klein/|multipart\.py|json/|tempfile\.py|uuid\.py)"


def _frame_key(frame, keep_line):
    m = re.match(r"^(.*) \((.*?)(?::(\d+))?\)$", frame)
    if not m:
        return frame
    func, path, line = m.groups()
    path = re.sub(r"^.*?/(site-packages|lib/python3\.\d+)/", "", path)
    path = re.sub(r"^.*?/(antenna_tw/)", r"\1", path)
    return f"{func} ({path}:{line})" if keep_line and line else f"{func} ({path})"


def analyse_profile(raw_path, cpu_ms_per_crash, top=20):
    """Self time by line, inclusive time by function, and areas, from py-spy --format raw."""
    by_line, inclusive, areas = (collections.Counter() for _ in range(3))
    busy = idle = 0
    for line in open(raw_path, errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        stack = re.sub(r'(process|thread) [^"]*?"[^"]*";', "", stack)  # --subprocesses frames
        frames = stack.split(";")
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            idle += count
            continue
        busy += count
        by_line[_frame_key(frames[-1], True)] += count
        keys = [_frame_key(f, False) for f in frames]
        for key in set(keys):
            if re.search(INTERESTING, key):
                inclusive[key] += count
        area = "other"  # the leaf-most frame that matches an area decides
        for key in reversed(keys):
            hit = next((name for pattern, name in AREAS if re.search(pattern, key)), None)
            if hit:
                area = hit
                break
        areas[area] += count

    def pct(n):
        return 100.0 * n / busy if busy else 0.0

    def ms(n):
        return cpu_ms_per_crash * n / busy if busy and cpu_ms_per_crash else 0.0

    out = [f"busy samples {busy}, idle samples dropped {idle}; "
           f"CPU per crash over the run {cpu_ms_per_crash:.2f} ms", "",
           "By area (leaf-most matching frame):", "",
           "| area | % busy | ms/crash |", "|---|---|---|"]
    out += [f"| {a} | {pct(n):.1f} | {ms(n):.3f} |" for a, n in areas.most_common()]
    out += ["", f"Top {top} lines by self time:", "", "| line | % busy | ms/crash | source |",
            "|---|---|---|---|"]
    for key, n in by_line.most_common(top):
        out.append(f"| {key} | {pct(n):.1f} | {ms(n):.3f} | {_source(key)} |")
    out += ["", f"Top {top} functions of antenna_tw, twisted.web, klein, multipart, json, "
            "tempfile, uuid by inclusive time:", "", "| function | % busy |", "|---|---|"]
    out += [f"| {k} | {pct(n):.1f} |" for k, n in inclusive.most_common(top)]
    return out


def _source(key):
    m = re.match(r"^.* \((.*):(\d+)\)$", key)
    if not m:
        return ""
    path, line = m.group(1), int(m.group(2))
    for base in [ROOT] + [Path(p) for p in sys.path if p]:
        candidate = base / path
        if candidate.is_file():
            try:
                text = candidate.read_text(errors="replace").splitlines()[line - 1].strip()
            except IndexError:
                return ""
            return "`" + text.replace("|", "\\|")[:70] + "`"
    return ""


def profile(args):
    run = Run(args.out)
    sha = prepare_payloads(args)
    py_spy = Path(args.twistd).parent / "py-spy"
    if not py_spy.exists():
        raise SystemExit(f"bench: no {py_spy}; run make install-bench")
    site = subprocess.run([str(Path(args.twistd).parent / "python"), "-c",
                           "import twisted, os; print(os.path.dirname(os.path.dirname("
                           "twisted.__file__)))"], capture_output=True, text=True).stdout.strip()
    sys.path.append(site)  # for _source(): the collector's site-packages
    info = versions(args)
    collector = Collector(args, "profiled", args.port_base + 3, args.workers,
                          args.scratch / "profiled").start()
    report = ["\n".join(info), ""]
    try:
        for name in args.payloads_list:
            raw = args.scratch / f"profile-{name}.raw.txt"
            raw.unlink(missing_ok=True)
            env = dict(os.environ, CONN_CLOSE="1", WARMUP="2", LABEL="profiled",
                       LOG_DIR=str(args.scratch / "wrk-logs"))
            before = tree_cpu_ticks(collector.pid)
            threads_before = thread_cpu_ticks(collector.worker_pids())
            load = subprocess.Popen([str(args.harness / "run_load.sh"), collector.url,
                                     str(args.payloads), name, str(args.conc),
                                     str(args.duration + 3)], env=env, stdout=subprocess.PIPE,
                                    text=True, start_new_session=True)
            stopper = lambda: stop_group(load, signal.SIGTERM, 5, "run_load")  # noqa: E731
            _cleanups.append(stopper)
            time.sleep(3.5)
            subprocess.run([str(py_spy), "record", "--pid", str(collector.pid),
                            "--subprocesses", "--duration", str(args.duration),
                            "--rate", str(args.rate), "--format", "raw", "-o", str(raw)]
                           + (["--gil"] if args.gil else []),
                           check=True, stdout=subprocess.DEVNULL)
            line = load.communicate()[0].strip().splitlines()[-1]
            _cleanups.remove(stopper)
            wait_drained(collector.spool, collector.log_path)
            cpu = cpu_delta_seconds(before, tree_cpu_ticks(collector.pid))
            threads = thread_cpu_ticks(collector.worker_pids())
            counts = count_stored(collector.storage, then="delete", manifest_sha=sha.get(name))
            fields = kv_line(line)
            answered = int(fields["ok200"]) + int(fields["warmup_ok200"])
            per_crash = 1000 * cpu / counts["stored"] if counts["stored"] else 0.0
            stored = max(1, counts["stored"])

            def per_crash_ms(kind, i):
                return 1000 * (threads[kind][i] - threads_before[kind][i]) / HZ / stored

            faults = (threads["minflt"] - threads_before["minflt"]) / stored
            head = [f"## {name}, conc {args.conc}, CONN_CLOSE=1, --workers {args.workers}, "
                    f"py-spy {args.rate} Hz for {args.duration} s"
                    + (" (--gil: GIL holders only)" if args.gil else ""), "",
                    f"load: {line}",
                    f"stored {counts['stored']} for {answered} answered; collector CPU "
                    f"{cpu:.1f} s = {per_crash:.2f} ms/crash. Per crash in the workers: "
                    f"main (reactor) threads user {per_crash_ms('reactor', 0):.2f} + sys "
                    f"{per_crash_ms('reactor', 1):.2f} ms, other (thread pool) threads user "
                    f"{per_crash_ms('threads', 0):.2f} + sys {per_crash_ms('threads', 1):.2f} "
                    f"ms; {faults:.0f} minor page faults", ""]
            section = head + analyse_profile(raw, per_crash, args.top) + [""]
            print("\n".join(section), flush=True)
            report += section
    finally:
        collector.stop()
    (run.out / "profile.txt").write_text("\n".join(report) + "\n")
    print(f"written {run.out / 'profile.txt'}; raw py-spy stacks in {args.scratch}")


# -- command line -------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="antenna-tw against the nginx floor; see the module docstring.")
    parser.add_argument("mode", nargs="?", default="matrix", choices=["matrix", "profile", "s3"])
    harness = os.environ.get("BENCH_HARNESS")
    parser.add_argument("--harness", type=Path, default=Path(harness) if harness else None,
                        help="the load harness folder (compare.sh, run_load.sh, "
                        "make_payloads.py, ...); default $BENCH_HARNESS")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/antenna-tw-bench"),
                        help="spool, storage, floor and logs (wiped per collector)")
    parser.add_argument("--out", type=Path, default=None,
                        help="raw outputs (default bench/results/<UTC date>[-profile])")
    parser.add_argument("--twistd", default=str(ROOT / ".venv" / "bin" / "twistd"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="extra collector setting (repeatable)")
    parser.add_argument("--port-base", type=int, default=19310,
                        help="antenna, +1 one worker, +2 spool-down, +3 profile, +80 floor")
    parser.add_argument("--blocks", nargs="+", default=BLOCKS, choices=BLOCKS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--secs", type=int, default=None,
                        help="measured seconds per run (default 10; s3: 60)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--down-crashes", type=int, default=10000)
    parser.add_argument("--down-payload", default="100k")
    parser.add_argument("--down-wait", type=int, default=30)
    parser.add_argument("--payloads", dest="payloads_list", nargs="+",
                        default=["400k", "400k_gz"], help="profile: payload names")
    parser.add_argument("--conc", type=int, default=32, help="profile: concurrency")
    parser.add_argument("--duration", type=int, default=15, help="profile: py-spy seconds")
    parser.add_argument("--rate", type=int, default=100, help="profile: py-spy samples/s")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--gil", action="store_true",
                        help="profile: only samples of threads holding the GIL (py-spy --gil)")
    parser.add_argument("--stored", choices=["set-aside", "delete"], default="set-aside",
                        help="after each run, set the counted crashes aside (dumps emptied, "
                        "inodes kept until the end) or delete them at once (before 2026-11-28)")
    parser.add_argument("--keep-counted", action="store_true",
                        help="leave the set-aside crashes under <storage>/.counted at the end "
                        "(deleting them slows the next minutes' runs on this machine)")
    parser.add_argument("--max-minutes", type=float, default=30,
                        help="watchdog: stop everything after this long")
    s3 = parser.add_argument_group("s3 mode (bench/s3_mode.py)")
    s3.add_argument("--run", dest="runs", action="append",
                    metavar="LABEL=KIND[@TWISTD][,KEY=VALUE...]",
                    help="a collector to run: KIND fs or s3, another checkout's twistd "
                    "and its own settings optional (repeatable; default fs=fs s3=s3)")
    s3.add_argument("--pairs", type=int, default=3, help="rounds of the --run collectors")
    s3.add_argument("--payload", default="400k")
    s3.add_argument("--sample", type=float, default=1.0, help="seconds between samples")
    s3.add_argument("--drain-timeout", type=float, default=120.0,
                    help="longest wait for the spool to empty after the load")
    s3.add_argument("--standin-workers", type=int, default=1,
                    help="nginx worker processes of the S3 stand-in")
    args = parser.parse_args(argv)
    args.settings = dict(s.split("=", 1) for s in args.settings)
    if "LOGGING_LEVEL" in args.settings:
        args.log_level = args.settings.pop("LOGGING_LEVEL")
    if args.harness is None:
        raise SystemExit("bench: no load harness given: pass --harness DIR or set BENCH_HARNESS")
    args.harness = args.harness.resolve()
    args.scratch = args.scratch.resolve()
    args.payloads = args.scratch / "payloads"
    if args.secs is None:
        args.secs = 60 if args.mode == "s3" else 10
    if args.out is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        suffix = ("-profile" + ("-gil" if args.gil else "")) if args.mode == "profile" else ""
        suffix = "-s3" if args.mode == "s3" else suffix
        args.out = ROOT / "bench" / "results" / (stamp + suffix)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_hook"]:
        return hook(argv[1])
    args = parse_args(argv)
    if not (args.harness / "compare.sh").exists():
        raise SystemExit(f"bench: no load harness at {args.harness} (no compare.sh there; "
                         "pass --harness DIR or set BENCH_HARNESS)")
    if args.mode == "s3":
        from s3_standin import ensure_nginx

        ensure_nginx()  # nginx-light with apt-get when missing
    for tool in ("wrk", "nginx", "ss"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} not found (apt-get install -y wrk nginx-light "
                             "libnginx-mod-http-echo iproute2)")
    if not Path(args.twistd).exists():
        raise SystemExit(f"bench: no {args.twistd}; run make install")
    # A fresh scratch area for our collectors (only the directories we create).
    for sub in ("antenna", "one-worker", "down", "profiled", "state", "floor", "floor-w1",
                f"floor-w{args.workers}"):
        shutil.rmtree(args.scratch / sub, ignore_errors=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    arm_watchdog(args.max_minutes)
    try:
        if args.mode == "profile":
            profile(args)
        elif args.mode == "s3":
            # s3_mode imports run_bench: let it have this module, cleanups and all.
            sys.modules.setdefault("run_bench", sys.modules[__name__])
            from s3_mode import s3_mode

            s3_mode(args)
        else:
            matrix(args)
    finally:
        disarm_watchdog()
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
