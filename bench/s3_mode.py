"""
``bench/run_bench.sh s3``: intake and delivery together, the collector
storing to S3 on the nginx stand-in (``bench/s3_standin.py``) against the same
collector storing to the filesystem, in alternating runs. Not run by CI;
loopback only.

    bench/run_bench.sh s3 --harness DIR [--pairs 3] [--secs 60] [--payload 400k]
                          [--conc 32] [--workers 2] [--run LABEL=KIND[@TWISTD] ...]

Each run starts a fresh collector (``twistd -n antenna --workers N``, spool
under --scratch, SPOOL_FSYNC=false, METRICS_CLASS=none), puts it under wrk
load for --secs seconds (the harness's ``post_body.lua``, one crash per
connection, no warm-up, bounded by ``timeout``) and keeps sampling every
--sample s until the spool is empty (at most --drain-timeout s), then stops
it. Samples: crashes waiting in the spool (its entries), crashes delivered
(raw crashes stored: the stand-in's PUT log, or the filesystem storage's
raw_crash files; the raw crash is written last, so each is a complete
crash), the collector's CPU (all its processes, from /proc), the stand-in's
CPU, and the machine's other load. Dumps already counted are emptied during
the run (their inodes stay until the end), so long runs do not fill the disk.

Per run: intake crashes/s (wrk's 200 answers / s), delivered crashes/s
during the load, the spool backlog at 10 s and at the end of the load, the
drain time after it, CPU per stored crash (the collector's CPU from the
start of the load until the spool is empty, divided by the crashes stored),
nothing lost (stored >= answered; 5 stored crashes checked complete).

``--run LABEL=KIND[@TWISTD][,KEY=VALUE...]`` (repeatable; default ``fs=fs
s3=s3``): KIND is ``fs`` or ``s3``; TWISTD another checkout's
``.venv/bin/twistd`` to compare code versions (e.g. ``--run
base=s3@/path/to/old/.venv/bin/twistd --run new=s3``); KEY=VALUE settings of
that collector alone (``--run m8=s3,CONCURRENT_CRASHMOVERS=8``). Runs go A
B A B ... for --pairs pairs. The summary gives per-pair ratios against the
first label and their medians, and the S3 targets (acceptance lines) when
both an ``fs`` and an ``s3`` run are there.
Everything goes to --out (default bench/results/<UTC date>-s3/): runs.jsonl,
samples-<label>-<n>.tsv, summary.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import run_bench as rb
from ab_versions import machine_busy
from s3_standin import PutLog, S3StandIn, free_port


def parse_runs(specs):
    """
    ``[(label, kind, twistd or None, {setting: value})]`` from
    ``LABEL=KIND[@TWISTD][,KEY=VALUE...]`` strings.
    """
    runs = []
    for spec in specs or ["fs=fs", "s3=s3"]:
        label, _, rest = spec.partition("=")
        rest, *settings = rest.split(",")
        kind, _, twistd = rest.partition("@")
        if not label or kind not in ("fs", "s3") or not all("=" in s for s in settings):
            raise SystemExit(f"bench: --run {spec!r}: want LABEL=fs|s3[@TWISTD][,KEY=VALUE...]")
        if twistd and not Path(twistd).exists():
            raise SystemExit(f"bench: --run {spec!r}: no {twistd}")
        runs.append((label, kind, str(Path(twistd).absolute()) if twistd else None,
                     dict(setting.split("=", 1) for setting in settings)))
    if len({run[0] for run in runs}) != len(runs):
        raise SystemExit("bench: --run labels must differ")
    return runs


class FsDelivered:
    """Complete crashes in a filesystem storage root (raw_crash files), dumps emptied."""

    def __init__(self, root):
        self.root = Path(root)
        self.emptied = set()
        self.raw_ids = []
        self._day = {}

    def read(self):
        if not self.root.is_dir():
            return 0
        for day in os.listdir(self.root):
            if day.startswith("."):
                continue
            try:
                names = os.listdir(self.root / day / "raw_crash")
            except FileNotFoundError:
                continue
            for name in names:
                crash_id = name[:-5]
                if name.endswith(".json") and not name.startswith(".") \
                        and crash_id not in self._day:
                    self._day[crash_id] = day
                    self.raw_ids.append(crash_id)
        return len(self.raw_ids)

    def empty_dumps(self):
        for day in os.listdir(self.root) if self.root.is_dir() else ():
            dump_dir = self.root / day / rb.DUMP_NAME
            try:
                dumps = os.listdir(dump_dir)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in dumps:
                if name not in self.emptied and not name.startswith("."):
                    self.emptied.add(name)
                    try:
                        os.truncate(dump_dir / name, 0)
                    except OSError:
                        pass

    def complete(self, crash_id):
        day = self._day[crash_id]
        return all((self.root / day / sub).exists() for sub in (
            f"raw_crash/{crash_id}.json", f"dump_names/{crash_id}.json",
            f"{rb.DUMP_NAME}/{crash_id}"))


class S3Delivered:
    """Complete crashes on the stand-in: raw crashes in its PUT log."""

    def __init__(self, standin):
        self.standin = standin
        self.log = PutLog(standin)
        # Start after what earlier runs logged.
        self.log.offset = standin.puts_log.stat().st_size if standin.puts_log.exists() else 0

    @property
    def raw_ids(self):
        return self.log.raw_ids

    def read(self):
        return self.log.read()

    def empty_dumps(self):
        self.log.empty_dumps()

    def complete(self, crash_id):
        bucket = self.standin.data / self.standin.bucket
        return all((bucket / key).exists() for key in (
            f"v1/dump_names/{crash_id}", f"v1/dump/{crash_id}"))


def _children_tree(pid):
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as fp:
                todo.extend(int(x) for x in fp.read().split())
        except OSError:
            pass
    return pids


def tree_cpu_ticks(pid):
    """{pid: [utime, stime]} of ``pid`` and its descendants; cheaper than a /proc scan."""
    ticks = {}
    for each in _children_tree(pid):
        try:
            fields = rb._proc_stat(each)
            ticks[each] = [int(fields[11]), int(fields[12])]
        except (OSError, ValueError, IndexError):
            pass
    return ticks


def wrk_command(args, url, secs):
    body = args.payloads / f"{args.payload}.body"
    headers = args.payloads / f"{args.payload}.headers"
    threads = min(int(os.environ.get("WRK_THREADS", "2")), args.conc)
    return ["timeout", "-k", "5", str(secs + 15), "wrk", f"-t{threads}", f"-c{args.conc}",
            f"-d{secs}s", "--timeout", "30s", "--latency",
            "-s", str(args.harness / "post_body.lua"), url, "--",
            str(body), str(headers), args.payload, str(args.conc), "close"]


def one_run(args, out, label, kind, twistd, settings, number, standin):
    """One collector under load, sampled until drained; the run's record."""
    directory = args.scratch / "s3mode" / f"{label}-{number}"
    shutil.rmtree(directory, ignore_errors=True)
    extra = standin.collector_env() if kind == "s3" else {}
    extra.update(settings)
    collector = rb.Collector(args, f"{label}-{number}", free_port(), args.workers, directory,
                             extra)
    if twistd:
        collector.twistd = twistd
    collector.start()
    delivered = S3Delivered(standin) if kind == "s3" else FsDelivered(collector.storage)
    delivered.read()
    base_stored = len(delivered.raw_ids)
    samples = []
    stop = threading.Event()
    load_done = threading.Event()
    t0 = time.monotonic()
    cpu0 = tree_cpu_ticks(collector.pid)
    nginx0 = standin.cpu_seconds()
    machine0 = machine_busy()

    lock = threading.Lock()

    def take_sample():
        with lock:
            entries, _ = rb.spool_counts(collector.spool)
            stored = delivered.read() - base_stored
            cpu = rb.cpu_delta_seconds(cpu0, tree_cpu_ticks(collector.pid))
            samples.append({"t": round(time.monotonic() - t0, 2), "spool": entries,
                            "stored": stored, "cpu_s": round(cpu, 2),
                            "standin_cpu_s": round(standin.cpu_seconds() - nginx0, 2),
                            "load": load_done.is_set()})

    def sample():
        # Ahead of the collector and wrk, so that samples come on time.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
        while not stop.is_set():
            take_sample()
            stop.wait(args.sample)

    def reap():
        # At normal priority: the emptying costs the machine, not the samples' timing.
        while not stop.is_set():
            delivered.empty_dumps()  # apart from read(): no lock needed
            stop.wait(args.sample)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    reaper = threading.Thread(target=reap, daemon=True)
    reaper.start()
    wrk_log = out / f"wrk-{label}-{number}.log"
    children0 = os.times()
    with open(wrk_log, "w") as log:
        wrk = subprocess.Popen(wrk_command(args, collector.url, args.secs), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        stopper = lambda: rb.stop_group(wrk, 15, 5, "wrk")  # noqa: E731
        rb._cleanups.append(stopper)
        wrk.wait()
        rb._cleanups.remove(stopper)
    load_secs = time.monotonic() - t0
    take_sample()  # the last one of the load
    load_done.set()
    # wrk (under timeout) is our reaped child: its CPU is in our children's times.
    children1 = os.times()
    wrk_cpu = (children1.children_user + children1.children_system
               - children0.children_user - children0.children_system)
    line = ""
    for text in wrk_log.read_text(errors="replace").splitlines():
        if text.startswith("SUMMARY "):
            line = text[len("SUMMARY "):]
    fields = rb.kv_line(line)
    # Drain: until the spool is empty (and stays so for a moment), bounded.
    drained = None
    deadline = time.monotonic() + args.drain_timeout
    while time.monotonic() < deadline:
        if rb.spool_counts(collector.spool) == (0, 0):
            time.sleep(2 * args.sample + 0.5)  # the PUT log flushes every second
            if rb.spool_counts(collector.spool) == (0, 0):
                drained = time.monotonic() - t0 - load_secs
                break
        time.sleep(0.2)
    stop.set()
    sampler.join()
    reaper.join()
    cpu = rb.cpu_delta_seconds(cpu0, tree_cpu_ticks(collector.pid))
    standin_cpu = standin.cpu_seconds() - nginx0
    machine1 = machine_busy()
    stored = delivered.read() - base_stored
    new_ids = delivered.raw_ids[base_stored:]
    checked = random.sample(new_ids, min(5, len(new_ids)))
    incomplete = sum(1 for crash_id in checked if not delivered.complete(crash_id))
    collector.stop()
    busy = (machine1[0] - machine0[0]) / rb.HZ
    total = (machine1[1] - machine0[1]) / rb.HZ
    other = busy - cpu - standin_cpu - wrk_cpu
    answered = int(fields.get("ok200", 0))
    secs = float(fields.get("secs", args.secs) or args.secs)

    during = [s for s in samples if not s["load"]]
    last = during[-1] if during else {"t": load_secs, "stored": 0, "spool": 0}
    tenth = min(during, key=lambda s: abs(s["t"] - 10), default=last)
    record = {
        "label": label, "kind": kind, "n": number, "payload": args.payload, "conc": args.conc,
        "workers": args.workers, "secs": secs, "answered": answered,
        "non200": int(fields.get("non200", 0)), "sock_err": int(fields.get("sock_err", 0)),
        "intake_per_s": round(answered / secs, 1) if secs else None,
        "p50_ms": float(fields.get("p50_ms", 0)), "p99_ms": float(fields.get("p99_ms", 0)),
        "delivered_per_s": round(last["stored"] / load_secs, 1) if load_secs else None,
        "delivered_per_s_10_to_end": round((last["stored"] - tenth["stored"])
                                           / (last["t"] - tenth["t"]), 1)
        if last["t"] > tenth["t"] else None,
        "backlog_10s": tenth["spool"], "backlog_end": last["spool"],
        "backlog_max": max((s["spool"] for s in samples), default=0),
        **backlog_trend(during),
        "drain_s": None if drained is None else round(drained, 1),
        "stored": stored, "lost": max(0, answered - stored), "checked": len(checked),
        "incomplete": incomplete,
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_crash": round(1000 * cpu / stored, 3) if stored else None,
        "standin_cpu_ms_per_crash": round(1000 * standin_cpu / stored, 3)
        if stored and kind == "s3" else None,
        "wrk_cpu_s": round(wrk_cpu, 2),
        "other_load_pct": round(100 * other / total, 1) if total else None,
        "loadavg": open("/proc/loadavg").read().split()[0],
    }
    with open(out / f"samples-{label}-{number}.tsv", "w") as fp:
        fp.write("t\tspool\tstored\tcpu_s\tstandin_cpu_s\tload_over\n")
        for s in samples:
            fp.write(f"{s['t']}\t{s['spool']}\t{s['stored']}\t{s['cpu_s']}\t"
                     f"{s['standin_cpu_s']}\t{int(s['load'])}\n")
    _set_aside(args, kind, collector, standin)
    shutil.rmtree(directory / "spool", ignore_errors=True)
    return record


def _set_aside(args, kind, collector, standin):
    aside = args.scratch / "s3mode" / ".counted"
    aside.mkdir(parents=True, exist_ok=True)
    stamp = str(time.time_ns())
    if kind == "fs":
        if collector.storage.exists():
            os.rename(collector.storage, aside / f"fs-{stamp}")
    else:
        bucket = standin.data / standin.bucket
        os.rename(bucket, aside / f"s3-{stamp}")
        bucket.mkdir()
        if os.geteuid() == 0:
            shutil.chown(bucket, "nobody")


def _pairs(records, first, second):
    by = {(r["label"], r["pair"]): r for r in records}
    return [(by[first, pair], by[second, pair]) for pair in sorted({r["pair"] for r in records})
            if (first, pair) in by and (second, pair) in by]


def backlog_trend(during):
    """
    Whether the backlog grows, read from every sample of the load rather than
    two: its least-squares slope from 10 s to the end (crashes per minute) and
    its medians over seconds 5-15 and over the last 10 s. A stationary backlog
    makes the one sample at the end larger than the one at 10 s about half the
    time; a growing one (the spool filling) shows as a slope of thousands.
    """
    window = [s for s in during if s["t"] >= 10]
    end = during[-1]["t"] if during else 0
    early = [s["spool"] for s in during if 5 <= s["t"] <= 15]
    late = [s["spool"] for s in during if s["t"] >= end - 10]
    slope = None
    if len(window) >= 3:
        fit = statistics.linear_regression([s["t"] for s in window],
                                           [s["spool"] for s in window])
        slope = round(60 * fit.slope, 1)
    return {"backlog_slope_per_min": slope,
            "backlog_median_5_15s": statistics.median(early) if early else None,
            "backlog_median_last_10s": statistics.median(late) if late else None}


def ratio_rows(records, labels, key):
    """Per-pair ratios of ``key`` for each label against the first; {label: [ratios]}."""
    by = {(r["label"], r["pair"]): r for r in records}
    first = labels[0]
    out = {}
    for label in labels[1:]:
        ratios = []
        for pair in sorted({r["pair"] for r in records}):
            a, b = by.get((first, pair)), by.get((label, pair))
            if a and b and a.get(key) and b.get(key):
                ratios.append(b[key] / a[key])
        out[label] = ratios
    return out


def summarize(args, records, runs, info):
    labels = [run[0] for run in runs]
    keys = [("intake_per_s", "intake crashes/s", "{:.0f}"),
            ("delivered_per_s", "delivered crashes/s", "{:.0f}"),
            ("backlog_10s", "spool backlog at 10 s", "{:.0f}"),
            ("backlog_end", "backlog at end of load", "{:.0f}"),
            ("backlog_median_5_15s", "backlog median, s 5-15", "{:.0f}"),
            ("backlog_median_last_10s", "backlog median, last 10 s", "{:.0f}"),
            ("backlog_slope_per_min", "backlog slope from 10 s, crashes/min", "{:.1f}"),
            ("drain_s", "drain after load, s", "{:.1f}"),
            ("cpu_ms_per_crash", "CPU ms per stored crash", "{:.2f}"),
            ("standin_cpu_ms_per_crash", "stand-in CPU ms/crash", "{:.2f}"),
            ("p99_ms", "p99 ms", "{:.0f}"),
            ("other_load_pct", "other load %", "{:.0f}")]
    out = ["\n".join(info), "",
           f"{args.pairs} pairs x {args.secs} s, {args.payload} conc {args.conc}, "
           f"--workers {args.workers}, one crash per connection; medians (min..max):", "",
           "| figure | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for key, name, fmt in keys:
        cells = [rb.med_range([r.get(key) for r in records if r["label"] == label], fmt)
                 for label in labels]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    lost = sum(r["lost"] for r in records)
    answered = sum(r["answered"] for r in records)
    incomplete = sum(r["incomplete"] for r in records)
    out += ["", f"lost: {lost} of {answered} answered; incomplete among checked: {incomplete}",
            ""]
    if len(labels) > 1:
        out += [f"Per-pair ratios against {labels[0]}, median (min..max):", "",
                "| label | intake crashes/s | delivered crashes/s | CPU per stored crash |",
                "|---|---|---|---|"]
        ratios = {key: ratio_rows(records, labels, key)
                  for key in ("intake_per_s", "delivered_per_s", "cpu_ms_per_crash")}
        for label in labels[1:]:
            out.append(f"| {label} | " + " | ".join(
                rb.med_range(ratios[key][label], "{:.2f}") for key in ratios) + " |")
        out.append("")
    flat_runs = {}  # label: its runs whose backlog at the end was no larger than at 10 s
    for label in labels:
        # The same reading for every run, filesystem ones included: their
        # backlog is the one known not to grow.
        mine = [r for r in records if r["label"] == label]
        flat = flat_runs[label] = [r for r in mine if r["backlog_end"] <= r["backlog_10s"]]
        settled = [r for r in mine if None not in (r.get("backlog_median_last_10s"),
                                                   r.get("backlog_median_5_15s"))
                   and r["backlog_median_last_10s"] <= r["backlog_median_5_15s"]]
        slopes = [r.get("backlog_slope_per_min") for r in mine]
        out.append(f"Backlog ({label}): at the end no larger than at 10 s in {len(flat)} of "
                   f"{len(mine)} runs; median of the last 10 s no larger than that of "
                   f"seconds 5-15 in {len(settled)} of {len(mine)}; slope from 10 s to the end "
                   f"{rb.med_range(slopes, '{:.1f}')} crashes/min")
    out.append("")
    fs = next((run[0] for run in runs if run[1] == "fs"), None)
    for s3 in [run[0] for run in runs if run[1] == "s3"]:
        s3_runs = [r for r in records if r["label"] == s3]
        flat = flat_runs[s3]
        out.append(f"S3 target ({s3}): spool backlog at the end of the load no larger "
                   f"than at 10 s in {len(flat)} of {len(s3_runs)} runs "
                   f"({'PASS' if s3_runs and len(flat) == len(s3_runs) else 'FAIL'})")
        if fs:
            # Crashes/s of the S3 run: what it both took and delivered.
            for r in records:
                r["through_per_s"] = min(r["intake_per_s"] or 0, r["delivered_per_s"] or 0)
            speed = [b["through_per_s"] / a["intake_per_s"]
                     for a, b in _pairs(records, fs, s3) if a["intake_per_s"]]
            cpu = ratio_rows(records, [fs, s3], "cpu_ms_per_crash")[s3]
            if speed:
                m = statistics.median(speed)
                out.append(f"S3 target ({s3}): crashes/s, min(intake, delivered) of {s3} "
                           f"over the intake of {fs}: {rb.med_range(speed, '{:.2f}')}, "
                           f"target >= 0.5 ({'PASS' if m >= 0.5 else 'FAIL'})")
            if cpu:
                m = statistics.median(cpu)
                out.append(f"S3 target ({s3}): CPU per stored crash {s3}/{fs} "
                           f"{rb.med_range(cpu, '{:.2f}')}, target <= 2 "
                           f"({'PASS' if m <= 2 else 'FAIL'})")
    return out


def s3_mode(args):
    """The S3 mode: see the module docstring."""
    runs = parse_runs(args.runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rb.prepare_payloads(args)
    shutil.rmtree(args.scratch / "s3mode", ignore_errors=True)
    info = rb.versions(args)
    info[-2] = (f"settings: --workers {args.workers}, LOGGING_LEVEL={args.log_level}, "
                "SPOOL_FSYNC=false, METRICS_CLASS=none"
                + "".join(f", {k}={v}" for k, v in args.settings.items()))
    described = " ".join(f"{label}={kind}" + (f"@{twistd}" if twistd else "")
                         + "".join(f",{k}={v}" for k, v in settings.items())
                         for label, kind, twistd, settings in runs)
    info[-1] = (f"method: run_bench.sh s3, runs {described}, "
                f"wrk -c{args.conc} one crash per connection, no warm-up, {args.secs} s; "
                f"sampled every {args.sample} s until drained")
    print("\n".join(info), flush=True)
    (out / "versions.txt").write_text("\n".join(info) + "\n")
    standin = S3StandIn(args.scratch / "s3mode" / "standin", 0,
                        workers=args.standin_workers).start()
    rb._cleanups.append(standin.stop)
    rb._cleanups.insert(0, lambda: shutil.rmtree(args.scratch / "s3mode", ignore_errors=True))
    records = []
    number = 0
    try:
        for pair in range(args.pairs):
            for label, kind, twistd, settings in runs:
                number += 1
                record = one_run(args, out, label, kind, twistd, settings, number, standin)
                record["pair"] = pair
                records.append(record)
                print(json.dumps(record), flush=True)
                with open(out / "runs.jsonl", "a") as fp:
                    fp.write(json.dumps(record) + "\n")
    finally:
        standin.stop()
    report = summarize(args, records, runs, info)
    text = "\n".join(report) + "\n"
    (out / "summary.md").write_text(text)
    print("\n" + text, flush=True)
    print(f"raw outputs in {out}", flush=True)
