#!/usr/bin/env python3
"""
Two versions of the collector against each other, in alternating runs, at one
load (400 KB bodies, concurrency 32, one crash per connection): e.g. a commit
from before a refactor ("A") and the code after it ("B"). Not run by CI.
Traffic goes to 127.0.0.1 only.

Each version runs from its own checkout with its own ``.venv`` (``make
install`` there), given as the path of that checkout's twistd:

    .venv/bin/python bench/ab_versions.py --harness DIR \
        --a-twistd /path/to/old-checkout/.venv/bin/twistd --a-label old \
        --b-twistd .venv/bin/twistd --b-label new --pairs 3 --out DIR

Both collectors are started once, each ``twistd -n antenna --workers N`` on
its own port, with the settings of ``bench/run_bench.py`` (filesystem
storage and spool under ``--scratch``, SPOOL_FSYNC=false, METRICS_CLASS=none,
LOGGING_LEVEL=INFO to a file), and stay up for the whole session; only the
one under load gets traffic. Runs alternate A B A B ... (``--first B`` gives
B A B A ...). Each run is the harness's ``run_load.sh URL PAYLOADS 400k 32
SECS`` with ``CONN_CLOSE=1`` and a ``--warmup`` s warm-up, bounded by
``timeout``. After each run the spool must drain, the complete crashes
stored must be at least the 200 answers (warm-up included: nothing lost),
5 dumps' SHA-256 are checked, the counted crashes are set aside, and the CPU
of the collector's process tree (warm-up to drain) is divided by the crashes
stored.

Per run it prints one JSON line (also appended to ``--out``/runs.jsonl):
crashes/s (wrk's rps), p50, p99, CPU ms per crash, lost/surplus, and the
machine's other load (CPU of everything but the collector and wrk, in % of
all CPUs, and the 1-minute load average), since a shared machine is noisy.
At the end (or with ``--summarize runs.jsonl ...`` for earlier sessions)
it prints, and writes to ``summary.md``/``summary.json``, the per-pair B/A
ratios and the medians.

``--a-set``/``--b-set KEY=VALUE`` give one version settings of its own
(the same checkout twice, e.g. the console off and on), and ``--poll-console
LABEL`` polls that version's console (``CONSOLE_PORT`` in its settings,
``SECRET_CONSOLE_TOKEN`` as its bearer token) once a second during each of
its runs: ``GET /api/status`` and ``GET /api/crashes``, as an operator's
open console page and a script would. The polls answered, and their median
and slowest answer times, go into the run's record::

    .venv/bin/python bench/ab_versions.py --harness DIR \
        --a-twistd .venv/bin/twistd --a-label console-off \
        --b-twistd .venv/bin/twistd --b-label console-polled \
        --b-set CONSOLE_PORT=tcp:19530 --b-set SECRET_CONSOLE_TOKEN=bench \
        --poll-console B --pairs 3 --out bench/results/2026-12-03-console

The load harness is a folder holding ``run_load.sh`` and ``make_payloads.py``
(``--harness DIR`` or $BENCH_HARNESS). Needs wrk and ss.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb  # noqa: E402

MATCHED_LOAD = 10  # points of "other load" % between a pair's two runs

FIGURES = [  # (key, heading, format, better when)
    ("rps", "crashes/s", "{:.0f}", "higher"),
    ("p50_ms", "p50 ms", "{:.1f}", "lower"),
    ("p99_ms", "p99 ms", "{:.1f}", "lower"),
    ("cpu_ms_per_crash", "CPU ms per crash", "{:.3f}", "lower"),
]


class VersionCollector(rb.Collector):
    """A collector started from the twistd of one checkout, with its own extra settings."""

    def __init__(self, args: argparse.Namespace, name: str, port: int, workers: int,
                 directory: Path, twistd: Path, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(args, name, port, workers, directory, extra_env)
        self.twistd = str(Path(twistd).absolute())  # it runs in its own folder

    def start(self, timeout: float = 60.0) -> VersionCollector:
        super().start(timeout)
        # Listening is not serving yet (a parent may hold the socket before
        # its workers are up): wait for a few answers from the collector.
        if not answers(self.port, timeout, self.process):
            raise SystemExit(f"bench: {self.name} does not answer:\n" + self.log_tail())
        time.sleep(1.0)
        return self


def answers(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    """Whether ``/__lbheartbeat__`` on ``port`` answers 200 five times in a row within
    ``timeout`` s (False at once if ``process`` exits)."""
    url = f"http://127.0.0.1:{port}/__lbheartbeat__"
    deadline, good = time.monotonic() + timeout, 0
    while good < 5 and time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                good += response.status == 200
        except OSError:
            good = 0
            time.sleep(0.2)
    return good >= 5


def machine_busy() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine."""
    with open("/proc/stat") as fp:
        fields = [int(x) for x in fp.readline().split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def load_average() -> float:
    with open("/proc/loadavg") as fp:
        return float(fp.read().split()[0])


def run_load(args: argparse.Namespace, url: str, payload: str,
             label: str) -> tuple[str, float, float]:
    """
    One bounded ``run_load.sh`` (CONN_CLOSE=1, --warmup, --secs, --conc):
    its summary line, its start (epoch seconds) and wrk's CPU seconds.
    """
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, CONN_CLOSE="1", WARMUP=str(args.warmup), LABEL=label,
               LOG_DIR=str(args.scratch / "wrk-logs"))
    cmd = ["timeout", "-k", "5", str(args.secs + args.warmup + 40),
           str(args.harness / "run_load.sh"), url, str(args.payloads),
           payload, str(args.conc), str(args.secs)]
    started = time.time()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = (out.stdout.strip().splitlines() or ["(no output) " + out.stderr[-300:]])[-1]
    wrk_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    return line, started, wrk_cpu


class ConsolePoller:
    """
    Polls a collector's console API once a second in a thread (a bounded
    number of polls: the run's length), recording each answer's time.
    """

    def __init__(self, env: dict[str, str], seconds: float) -> None:
        port = env["CONSOLE_PORT"].split(":")[1]
        self.base = f"http://127.0.0.1:{port}"
        self.token = env.get("SECRET_CONSOLE_TOKEN", "")
        self.polls = int(seconds)
        self.times: list[float] = []
        self.failed = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def get(self, path: str) -> None:
        request = urllib.request.Request(self.base + path,
                                         headers={"Authorization": f"Bearer {self.token}"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                answer.read()
            self.times.append(1000 * (time.monotonic() - started))
        except OSError:
            self.failed += 1

    def run(self) -> None:
        for poll in range(self.polls):
            self.get("/api/status")
            self.get("/api/crashes")
            time.sleep(max(0.0, 1.0 - (time.monotonic() % 1.0)))

    def record(self) -> dict[str, Any]:
        self.thread.join(timeout=30)
        return {"console_polls": len(self.times), "console_poll_failed": self.failed,
                "console_poll_p50_ms": round(statistics.median(self.times), 1)
                if self.times else None,
                "console_poll_max_ms": round(max(self.times), 1) if self.times else None}


def one_run(args: argparse.Namespace, label: str, collector: VersionCollector,
            sha: dict[str, str], pair: int) -> dict[str, Any]:
    poller = None
    if args.poll_console == label:
        poller = ConsolePoller(collector.env, args.secs + args.warmup)
        poller.thread.start()
    ticks = rb.tree_cpu_ticks(collector.pid)
    faults = rb.tree_minor_faults(collector.pid)
    busy0, total0 = machine_busy()
    load0 = load_average()
    line, started, wrk_cpu = run_load(args, collector.url, args.payload, label)
    busy1, total1 = machine_busy()
    load1 = load_average()
    drain, orphaned, undrained = rb.wait_drained(collector.spool, collector.log_path)
    counts = dict(rb.count_stored(collector.storage, then="set-aside",
                                  manifest_sha=sha[args.payload]))
    user, system = rb.cpu_delta_split(ticks, rb.tree_cpu_ticks(collector.pid))
    faults = rb.tree_minor_faults(collector.pid) - faults
    fields = rb.kv_line(line)
    answered = int(fields.get("ok200", 0)) + int(fields.get("warmup_ok200", 0))
    # Busy CPU of the load window not spent by the collector (whose figure
    # also holds the drain after it, so this is a lower bound) or by wrk.
    other = (busy1 - busy0) / rb.HZ - (user + system) - wrk_cpu
    stored = counts["stored"]
    polled = poller.record() if poller is not None else {}
    return dict(**polled,
        pair=pair, label=label, version=args.labels[label], started=round(started, 1),
        rps=float(fields.get("rps", 0)), p50_ms=float(fields.get("p50_ms", 0)),
        p99_ms=float(fields.get("p99_ms", 0)),
        non200=int(fields.get("non200", -1)), bad_body=int(fields.get("bad_body", -1)),
        sock_err=fields.get("sock_err"), timeouts=fields.get("timeouts"),
        answered=answered, **counts,
        lost=max(0, answered - stored), surplus=stored - answered,
        drain_s=None if drain is None else round(drain, 1), orphaned=orphaned,
        undrained=undrained,
        cpu_ms_per_crash=round(1000 * (user + system) / stored, 3) if stored else None,
        minor_faults_per_crash=round(faults / stored, 1) if stored else None,
        collector_cpu_s=round(user + system, 2), wrk_cpu_s=round(wrk_cpu, 2),
        other_cpu_pct=max(0.0, round(100 * other / ((total1 - total0) / rb.HZ), 1)),
        loadavg=[load0, load1], wrk_line=line)


def ok(rec: dict[str, Any]) -> bool:
    """Nothing lost, every answer a crash id, the drain finished, dumps intact."""
    return (rec["lost"] == 0 and rec["non200"] == 0 and rec["bad_body"] == 0
            and rec["undrained"] == 0 and rec["drain_s"] is not None
            and rec["sha_bad"] == 0 and rec["incomplete"] == 0 and rec["answered"] > 0)


def med_range(values: list[float | None], fmt: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return (fmt.format(statistics.median(values))
            + f" ({fmt.format(min(values))}..{fmt.format(max(values))})")


def pairs_of(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """[(A record, B record)] for each (session, pair) that has both."""
    found = {}
    for rec in records:
        found.setdefault((rec.get("session", ""), rec["pair"]), {})[rec["label"]] = rec
    return [(p["A"], p["B"]) for _key, p in sorted(found.items()) if "A" in p and "B" in p]


def summarize(records: list[dict[str, Any]], noise: float) -> tuple[str, dict[str, Any]]:
    """Markdown and a dict: per-pair figures and B/A ratios, medians, verdict."""
    pairs = pairs_of(records)
    versions = {rec["label"]: rec.get("version", rec["label"]) for rec in records}
    out = {"pairs": [], "medians": {}, "ratio_medians": {}}
    lines = ["| session | pair | order | " + " | ".join(
        f"A {h} | B {h} | B/A" for _k, h, _f, _b in FIGURES)
        + " | other load % (A, B) | lost (A, B) |",
        "|" + "---|" * (5 + 3 * len(FIGURES))]
    for a, b in pairs:
        row = {"session": a.get("session", ""), "pair": a["pair"],
               "order": "AB" if a["started"] < b["started"] else "BA"}
        cells = [str(row["session"]), str(a["pair"]), row["order"]]
        for key, _h, fmt, _b in FIGURES:
            ratio = b[key] / a[key] if a[key] and b[key] is not None else None
            row[key] = [a[key], b[key], None if ratio is None else round(ratio, 3)]
            cells += [fmt.format(a[key]) if a[key] is not None else "-",
                      fmt.format(b[key]) if b[key] is not None else "-",
                      f"{ratio:.2f}" if ratio is not None else "-"]
        row["other_cpu_pct"] = [a["other_cpu_pct"], b["other_cpu_pct"]]
        row["lost"] = [a["lost"], b["lost"]]
        cells += [f"{a['other_cpu_pct']:.0f}, {b['other_cpu_pct']:.0f}",
                  f"{a['lost']}, {b['lost']}"]
        out["pairs"].append(row)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"| figure | A: {versions.get('A', 'A')} | B: {versions.get('B', 'B')} "
              "| B/A per pair, median (min..max) | pairs B better |", "|---|---|---|---|---|"]
    for key, heading, fmt, better in FIGURES:
        a_vals = [rec[key] for rec in records if rec["label"] == "A"]
        b_vals = [rec[key] for rec in records if rec["label"] == "B"]
        ratios = [row[key][2] for row in out["pairs"] if row[key][2] is not None]
        wins = sum(1 for r in ratios if (r > 1 if better == "higher" else r < 1))
        out["medians"][key] = [statistics.median(a_vals) if a_vals else None,
                               statistics.median(b_vals) if b_vals else None]
        out["ratio_medians"][key] = statistics.median(ratios) if ratios else None
        lines.append(f"| {heading} | {med_range(a_vals, fmt)} | {med_range(b_vals, fmt)} "
                     f"| **{med_range(ratios, '{:.2f}')}** | {wins} of {len(ratios)} |")
    # The machine's other load moves the figures more than anything else:
    # the same ratios over the pairs whose two runs saw about the same.
    matched = [row for row in out["pairs"]
               if abs(row["other_cpu_pct"][0] - row["other_cpu_pct"][1]) <= MATCHED_LOAD]
    out["matched_load"] = {"pairs": len(matched)}
    cells = []
    for key, heading, _f, _b in FIGURES:
        ratios = [row[key][2] for row in matched if row[key][2] is not None]
        out["matched_load"][key] = statistics.median(ratios) if ratios else None
        cells.append(f"{heading} {med_range(ratios, '{:.2f}')}")
    lines += ["", f"Pairs whose two runs' other load differed by <= {MATCHED_LOAD} points "
              f"({len(matched)} of {len(out['pairs'])}), B/A median (min..max): "
              + "; ".join(cells) + "."]
    runs_ok = sum(ok(rec) for rec in records)
    lost = {lab: sum(rec["lost"] for rec in records if rec["label"] == lab) for lab in "AB"}
    answered = {lab: sum(rec["answered"] for rec in records if rec["label"] == lab)
                for lab in "AB"}
    other = [rec["other_cpu_pct"] for rec in records]
    lines += ["", f"Runs with nothing lost, no error, spool drained, dumps intact: "
              f"{runs_ok} of {len(records)}. Lost: A {lost['A']} of {answered['A']} answered, "
              f"B {lost['B']} of {answered['B']}.",
              f"Other load on the machine (% of all CPUs, not the collector or wrk): "
              f"{med_range(other, '{:.0f}')}."]
    within = {}
    for key, _h, _f, better in FIGURES:
        r = out["ratio_medians"][key]
        if r is None:
            continue
        worse = (1 / r if better == "higher" else r) - 1  # > 0: B is worse
        within[key] = worse <= noise
    out["within_noise"] = within
    out["runs_ok"] = [runs_ok, len(records)]
    out["lost"] = lost
    verdict = ("within noise" if within and all(within.values()) and runs_ok == len(records)
               else "NOT within noise (or a run failed): " + ", ".join(
                   k for k, v in within.items() if not v))
    lines += [f"Verdict (B no more than {noise:.0%} worse than A on the per-pair median "
              f"of each figure, every run clean): **{verdict}**."]
    out["verdict"] = verdict
    return "\n".join(lines) + "\n", out


def load_records(paths: list[Path]) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        with open(path) as fp:
            records += [json.loads(line) for line in fp if line.strip()]
    return records


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--harness", type=Path, default=os.environ.get("BENCH_HARNESS"))
    p.add_argument("--a-twistd", type=Path)
    p.add_argument("--b-twistd", type=Path)
    p.add_argument("--a-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of A's collector only")
    p.add_argument("--b-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of B's collector only")
    p.add_argument("--poll-console", choices=["A", "B"],
                   help="poll that version's console API once a second during its runs")
    p.add_argument("--a-label", default="A")
    p.add_argument("--b-label", default="B")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--first", default="A", choices=["A", "B"])
    p.add_argument("--before-b", metavar="COMMAND",
                   help="a shell command run before each of B's runs (bounded by 60 s), e.g. "
                        "what another load leaves behind")
    p.add_argument("--session", default="", help="a name stored with each run")
    p.add_argument("--secs", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--payload", default="400k")
    p.add_argument("--conc", type=int, default=32)
    p.add_argument("--scratch", type=Path, default=Path("/tmp/ab-versions"))
    p.add_argument("--payloads", type=Path, help="payload folder (default SCRATCH/payloads)")
    p.add_argument("--port-base", type=int, default=19520)
    p.add_argument("--noise", type=float, default=0.15,
                   help="how much worse B may be on a per-pair median (0.15: 15 %%)")
    p.add_argument("--out", type=Path)
    p.add_argument("--max-minutes", type=float, default=30)
    p.add_argument("--summarize", nargs="+", type=Path, metavar="RUNS_JSONL",
                   help="only summarize earlier runs.jsonl files")
    args = p.parse_args(argv)
    if not args.summarize:
        for name in ("harness", "a_twistd", "b_twistd", "out"):
            if getattr(args, name) is None:
                p.error(f"--{name.replace('_', '-')} is needed")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.summarize:
        text, result = summarize(load_records(args.summarize), args.noise)
        print(text)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "summary.md").write_text(text)
            (args.out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
        return 0
    for tool in ("wrk", "ss"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} not found")
    for twistd in (args.a_twistd, args.b_twistd):
        if not twistd.exists():
            raise SystemExit(f"bench: no {twistd}; run make install in that checkout")
    args.payloads = args.payloads or args.scratch / "payloads"
    args.twistd, args.log_level, args.settings = None, "INFO", {}
    args.labels = {"A": args.a_label, "B": args.b_label}
    for sub in ("A", "B"):
        shutil.rmtree(args.scratch / sub, ignore_errors=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sha = rb.prepare_payloads(args)

    def on_signal(signum: int, frame: object) -> None:
        raise SystemExit(f"bench: stopped by signal {signum}")

    def on_alarm(signum: int, frame: object) -> None:
        raise SystemExit(f"bench: watchdog: more than {args.max_minutes} minutes")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.max_minutes * 60))
    runs_path = args.out / "runs.jsonl"
    session = []
    try:
        targets = {
            "A": VersionCollector(args, "A", args.port_base, args.workers,
                                  args.scratch / "A", args.a_twistd,
                                  dict(kv.split("=", 1) for kv in args.a_set)).start(),
            "B": VersionCollector(args, "B", args.port_base + 1, args.workers,
                                  args.scratch / "B", args.b_twistd,
                                  dict(kv.split("=", 1) for kv in args.b_set)).start(),
        }
        order = ["A", "B"] if args.first == "A" else ["B", "A"]
        with open(runs_path, "a") as fp:
            for pair in range(1, args.pairs + 1):
                for label in order:
                    if label == "B" and args.before_b:
                        subprocess.run(args.before_b, shell=True, timeout=60, check=False)
                    rec = one_run(args, label, targets[label], sha, pair)
                    rec.update(session=args.session, workers=args.workers)
                    session.append(rec)
                    fp.write(json.dumps(rec) + "\n")
                    fp.flush()
                    print(json.dumps({k: rec[k] for k in (
                        "pair", "label", "rps", "p50_ms", "p99_ms", "cpu_ms_per_crash",
                        "minor_faults_per_crash",
                        "answered", "stored", "lost", "other_cpu_pct")}
                        | {k: v for k, v in rec.items() if k.startswith("console_")}),
                        flush=True)
    finally:
        signal.alarm(0)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        rb.cleanup()  # stops both collectors
        for label in ("A", "B"):
            src = args.scratch / label / f"{label}.log"
            if src.exists():  # everything but the per-crash lines
                with open(args.out / f"collector-{label}{args.session and '-'}"
                          f"{args.session}.log", "w") as dst:
                    subprocess.run(["grep", "-v", "-e", "matched by", "-e", 'saved"',
                                    str(src)], stdout=dst, check=False)
            rb.remove_set_aside(args.scratch / label / "crashes")
    if session:
        text, result = summarize(session, args.noise)
        print(text)
        (args.out / f"summary{args.session and '-'}{args.session}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
