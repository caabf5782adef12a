#!/usr/bin/env python3
"""
The nginx floor's job done by Twisted itself, beside the floor and antenna-tw
in the same rounds: the least CPU per request that any collector on
Twisted's reactor spends, before it parses, hashes or keeps anything. Not
run by CI; loopback only; bounded by ``--max-minutes``.

    .venv/bin/python bench/twisted_floor.py --harness DIR [--payloads 400k 400k_gz]
        [--rounds 3] [--conc 32] [--secs 10] [--out DIR]

Targets, each started once and left up, taken in turn each round (the order
reversed every other round), one crash per connection (``CONN_CLOSE=1``, 2 s
of warm-up, the harness's ``run_load.sh``):

``floor``
    the harness's nginx floor, 2 workers: the body written to a file, the
    answer ``CrashID=...``, the file unlinked.
``twisted``
    two processes of this script's ``serve`` sharing one listening socket (as
    ``--workers 2`` does), each a Twisted reactor (epoll) with a bare
    ``Protocol``: the head read up to its blank line, the body's
    Content-Length bytes written to a file as they arrive, ``CrashID=...``
    answered, the connection closed, the file unlinked. The floor's work
    through Twisted's reactor and transports, with no HTTP library and
    nothing of a collector's: what any collector on Twisted spends at least.
``twisted-sha`` (not by default)
    the same, the body hashed (SHA-256) as it arrives.
``twisted-http`` (not by default)
    ``twisted.web``'s HTTP parsing and request objects (a ``Site`` with its
    form parsing off, a ``Request`` that drops each body chunk, 256 KiB
    reads as antenna-tw's), answering ``CrashID=...``: what the HTTP layer
    antenna-tw is built on costs per request.
``twisted-http-work`` (not by default)
    the same, each chunk inflated (a gzip body, with the collector's
    backend), hashed and held, the body written to a file and
    unlinked in a pool thread before the answer: the HTTP layer, the hash
    and one thread hand-off per crash, without a multipart parse or a spool.
``twisted-web`` (not by default)
    ``twisted.web``'s stock ``Site`` and ``Request`` (form parsing on, the
    body buffered in a temporary file) with a resource answering any POST.
``antenna``
    ``twistd -n antenna --workers 2`` with the settings of
    ``bench/run_bench.py`` (filesystem storage, the spool drained before the
    CPU is read).

CPU per request is each target's whole process tree (user and system, from
the start of the warm-up until antenna-tw's spool has drained) over the
answers. The summary sets the Twisted floor plus the SHA-256 (and inflate)
of the body (``bench/work_floor.py``) against the acceptance line of
``docs/performance.rst``: 1.3 x (the nginx floor + the same work).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import run_bench as rb
from ab_versions import machine_busy, run_load

TWISTED_KINDS = ("twisted", "twisted-sha", "twisted-http", "twisted-http-work", "twisted-web")


def serve(fd: int, kind: str, spill: str) -> None:
    """One server process on an inherited listening socket (``serve --fd N --kind K``)."""
    from twisted.internet import epollreactor

    epollreactor.install()
    sys.path.insert(0, str(rb.ROOT))
    from twisted.internet import protocol, reactor, threads
    from twisted.web import resource, server

    from antenna_tw.intake import inflate

    def crash_id() -> bytes:
        return b"CrashID=bp-" + uuid.uuid4().hex.encode() + b"\n"

    class Answer(resource.Resource):
        isLeaf = True

        def render_POST(self, request: server.Request) -> bytes:
            request.setHeader(b"content-type", b"text/plain")
            return crash_id()

    class Floor(protocol.Protocol):
        """
        The floor's job on Twisted's reactor and transports, no HTTP library:
        the head read up to its blank line, Content-Length bytes of body
        written to a file as they come, the answer, the file unlinked.
        """

        def connectionMade(self) -> None:
            self.head = b""
            self.left = -1
            self.fd = -1
            self.path = ""

        def dataReceived(self, data: bytes) -> None:
            if self.left < 0:
                self.head += data
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, data = self.head[:end], self.head[end + 4:]
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.left = length
                self.path = f"{spill}/{uuid.uuid4().hex}"
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
                self.sha = hashlib.sha256() if kind == "twisted-sha" else None
            if data:
                os.write(self.fd, data)
                if self.sha is not None:
                    self.sha.update(data)
                self.left -= len(data)
            if self.left <= 0:
                os.close(self.fd)
                body = crash_id()
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                                     % (len(body), body))
                self.transport.loseConnection()
                os.unlink(self.path)

    class Body(server.Request):
        """
        twisted.web's HTTP parsing and request objects, the body not buffered:
        each chunk dropped (``twisted-http``) or hashed and kept in memory,
        then written to a file and unlinked in a pool thread before the
        answer (``twisted-http-work``).
        """

        def gotLength(self, length: int | None) -> None:
            self.content = io.BytesIO()  # stays empty
            self.channel.transport.bufferSize = 256 * 1024  # as antenna-tw reads
            self.sha = hashlib.sha256() if kind == "twisted-http-work" else None
            self.chunks: list[bytes] = []
            gzipped = self.requestHeaders.getRawHeaders(b"content-encoding") == [b"gzip"]
            # A gzip body is inflated as it arrives, with the collector's backend.
            self.inflate = (inflate.BACKENDS[inflate.DEFAULT_BACKEND].decompressobj(31)
                            if gzipped and self.sha is not None else None)

        def handleContentChunk(self, data: bytes) -> None:
            if self.sha is not None:
                if self.inflate is not None:
                    data = self.inflate.decompress(data)
                self.sha.update(data)
                self.chunks.append(data)

    def keep(chunks: list[bytes]) -> None:
        path = f"{spill}/{uuid.uuid4().hex}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.writev(fd, chunks)
        os.close(fd)
        os.unlink(path)

    class Work(resource.Resource):
        isLeaf = True

        def render_POST(self, request: Body) -> object:
            if request.sha is None:
                return crash_id()
            written = threads.deferToThread(keep, request.chunks)
            written.addCallback(lambda _: (request.write(crash_id()), request.finish()))
            return server.NOT_DONE_YET

    if kind == "twisted-web":
        factory: protocol.Factory = server.Site(Answer())
        factory.log = lambda request: None  # like the floor: no access log
    elif kind in ("twisted-http", "twisted-http-work"):
        factory = server.Site(Work(), requestFactory=Body, parsePOSTFormSubmission=False)
        factory.log = lambda request: None
    else:
        factory = protocol.Factory.forProtocol(Floor)
    reactor.adoptStreamPort(fd, socket.AF_INET, factory)
    os.close(fd)
    reactor.run()


class TwistedFloor:
    """``--processes`` ``serve`` processes on one listening socket, in their own session."""

    def __init__(self, kind: str, port: int, processes: int, directory: Path) -> None:
        self.kind, self.port, self.processes = kind, port, processes
        self.spill = directory / f"{kind}-bodies"
        self.log = directory / f"{kind}.log"
        self.url = f"http://127.0.0.1:{port}/submit"
        self.process: subprocess.Popen | None = None

    def start(self) -> TwistedFloor:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(1024)
        sock.setblocking(False)
        fd = sock.fileno()
        # One parent (a shell waiting on its children) so the tree is one session.
        self.spill.mkdir(parents=True, exist_ok=True)
        script = " & ".join(f"{sys.executable} {__file__} serve --fd {fd} --kind {self.kind} "
                            f"--spill {self.spill}"
                            for _ in range(self.processes)) + " & wait"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(["sh", "-c", script], pass_fds=[fd],
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        sock.close()
        rb._cleanups.append(self.stop)
        deadline = time.monotonic() + 15
        while len(rb.tree_pids(self.process.pid)) < self.processes + 1:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"bench: the Twisted floor did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        time.sleep(1.0)  # imports done, reactors running
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            rb.stop_group(self.process, 15, 10, "twisted floor")
            self.process = None


def one_run(args: argparse.Namespace, name: str, target, payload: str) -> dict:
    """One bounded load on ``target``; its record (CPU per answer, rate, p99)."""
    busy0 = machine_busy()
    ticks0 = rb.tree_cpu_ticks(target.pid)
    line, _started, wrk_cpu = run_load(args, target.url, payload, name)
    collector = name == "antenna"
    if collector:
        rb.wait_drained(target.spool, target.log_path)
    ticks1 = rb.tree_cpu_ticks(target.pid)
    busy1 = machine_busy()
    fields = rb.kv_line(line)
    answered = int(fields.get("ok200", 0)) + int(fields.get("warmup_ok200", 0))
    if collector:
        # Per stored crash; counted, then set aside with the dumps emptied (the disk does not fill).
        stored = rb.count_stored(target.storage, then="set-aside", check=0)["stored"]
        answered = min(answered, stored)
    cpu = rb.cpu_delta_seconds(ticks0, ticks1)
    busy = (busy1[0] - busy0[0]) / rb.HZ
    total = (busy1[1] - busy0[1]) / rb.HZ
    return {
        "target": name, "payload": payload, "rps": float(fields.get("rps", 0)),
        "p99_ms": float(fields.get("p99_ms", 0)), "answered": answered,
        "non200": int(fields.get("non200", 0)),
        "cpu_ms_per_request": round(1000 * cpu / answered, 3) if answered else None,
        "other_load_pct": round(100 * (busy - cpu - wrk_cpu) / total, 1) if total else None,
        "line": line,
    }


def summarize(args: argparse.Namespace, names: list[str], records: list[dict],
              work: dict) -> list[str]:
    out = [f"{args.rounds} rounds per payload, conc {args.conc}, {args.secs} s + 2 s warm-up, "
           "one crash per connection; medians (min..max) of CPU ms per request (the "
           "collector's per stored crash):", ""]
    targets = [t for t in ("floor", *TWISTED_KINDS, "antenna") if t in args.targets]
    out += ["| payload | " + " | ".join(f"{n} CPU ms" for n in targets)
            + " | " + " | ".join(f"{n} /s" for n in targets) + " | twisted/floor per round |",
            "|---|" + "---|" * (2 * len(targets) + 1)]
    lines = []
    for payload in names:
        mine = [r for r in records if r["payload"] == payload]
        cpu = {n: [r["cpu_ms_per_request"] for r in mine
                   if r["target"] == n and r["cpu_ms_per_request"]] for n in targets}
        rps = {n: [r["rps"] for r in mine if r["target"] == n] for n in targets}
        ratios = [t["cpu_ms_per_request"] / f["cpu_ms_per_request"]
                  for f, t in zip([r for r in mine if r["target"] == "floor"],
                                  [r for r in mine if r["target"] == "twisted"], strict=False)
                  if f["cpu_ms_per_request"] and t["cpu_ms_per_request"]]
        out.append(f"| {payload} | " + " | ".join(rb.med_range(cpu[n], "{:.3f}") for n in targets)
                   + " | " + " | ".join(rb.med_range(rps[n]) for n in targets)
                   + f" | {rb.med_range(ratios, '{:.2f}')} |")
        w = work.get(payload, {}).get("work_ms")
        if w is not None and cpu.get("floor") and cpu.get("twisted"):
            floor = statistics.median(cpu["floor"])
            tw = statistics.median(cpu["twisted"])
            target = 1.3 * (floor + w)
            lines.append(
                f"{payload}: the acceptance line 1.3 x (floor {floor:.3f} + work {w:.3f}) = "
                f"{target:.3f} ms; the Twisted floor plus the same work {tw + w:.3f} ms "
                f"({(tw + w) / (floor + w):.2f}x floor + work)"
                + (f"; antenna-tw {statistics.median(cpu['antenna']):.3f} ms"
                   if cpu.get("antenna") else ""))
        if cpu.get("twisted"):
            base = statistics.median(cpu["twisted"])
            lines.append(f"{payload}, each over the Twisted floor ({base:.3f} ms): " + ", ".join(
                f"{n} {statistics.median(cpu[n]) - base:+.3f} ms" for n in targets
                if n not in ("twisted", "floor") and cpu.get(n)))
    return out + [""] + lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        p = argparse.ArgumentParser(prog="twisted_floor.py serve")
        p.add_argument("--fd", type=int, required=True)
        p.add_argument("--kind", choices=TWISTED_KINDS, default="twisted")
        p.add_argument("--spill", required=True)
        a = p.parse_args(argv[1:])
        serve(a.fd, a.kind, a.spill)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--harness", type=Path, default=os.environ.get("BENCH_HARNESS"))
    p.add_argument("--payloads", nargs="+", default=["400k", "400k_gz"], dest="payload_names")
    p.add_argument("--targets", nargs="+", default=["floor", "twisted", "antenna"],
                   choices=["floor", *TWISTED_KINDS, "antenna"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--conc", type=int, default=32)
    p.add_argument("--secs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="processes of each target")
    p.add_argument("--port-base", type=int, default=19700)
    p.add_argument("--scratch", type=Path, default=Path("/tmp/antenna-tw-twisted-floor"))
    p.add_argument("--twistd", default=str(rb.ROOT / ".venv" / "bin" / "twistd"))
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--max-minutes", type=float, default=20)
    args = p.parse_args(argv)
    if args.harness is None:
        raise SystemExit("bench: give --harness DIR (or $BENCH_HARNESS)")
    args.payloads = args.scratch / "payloads"
    args.settings = {}
    names = args.payload_names
    out = args.out or rb.ROOT / "bench" / "results" / time.strftime("%Y-%m-%d-twisted-floor")
    out.mkdir(parents=True, exist_ok=True)
    rb.arm_watchdog(args.max_minutes)
    try:
        args.scratch.mkdir(parents=True, exist_ok=True)
        rb.prepare_payloads(args)
        work = rb.work_floor(args, names)
        targets = {}
        if "floor" in args.targets:
            targets["floor"] = rb.Floor(args.harness, args.port_base, args.scratch / "floor",
                                        workers=args.workers).start()
        for number, kind in enumerate(TWISTED_KINDS, 3):
            if kind in args.targets:
                targets[kind] = TwistedFloor(kind, args.port_base + number, args.workers,
                                             args.scratch).start()
        if "antenna" in args.targets:
            targets["antenna"] = rb.Collector(args, "antenna", args.port_base + 2,
                                              args.workers, args.scratch / "antenna").start()
        args.stored = "set-aside"
        info = rb.versions(args)
        info[-1] = (f"method: bench/twisted_floor.py, run_load.sh CONN_CLOSE=1 "
                    f"WARMUP={args.warmup} SECS={args.secs} conc {args.conc}, "
                    f"{args.rounds} rounds per payload, the order reversed every other round")
        records = []
        order = [t for t in ("floor", *TWISTED_KINDS, "antenna") if t in targets]
        for payload in names:
            for round_ in range(args.rounds):
                for name in order if round_ % 2 == 0 else order[::-1]:
                    record = one_run(args, name, targets[name], payload)
                    record["round"] = round_
                    records.append(record)
                    print(json.dumps(record), flush=True)
                    with open(out / "runs.jsonl", "a") as fp:
                        fp.write(json.dumps(record) + "\n")
        text = "\n".join(info + [""] + summarize(args, names, records, work)) + "\n"
        (out / "summary.md").write_text(text)
        print("\n" + text)
    finally:
        rb.cleanup()
        shutil.rmtree(args.scratch / "antenna", ignore_errors=True)
        rb.disarm_watchdog()
    return 0


if __name__ == "__main__":
    sys.exit(main())
