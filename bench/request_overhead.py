"""
CPU per /submit request outside body parsing and disk (not run by CI).

Builds a real collector (``build_collector``) and feeds whole HTTP requests
through its Site's protocol over a ``StringTransport``: one crash per
connection, as the load benchmark sends them (``Connection: close``), the
body in 256 KiB pieces. The spool write is left out: ``Spool.put`` is
replaced by an already-fired Deferred and the crash movers by a no-op, so
the figures are the reactor thread's work for one request up to and
including the answer: twisted.web's request handling, routing, the body
parse, the raw crash, throttling, the crash id, metrics, log lines
(rendered by the mozlog observer into /dev/null, as twistd would) and the
answer.

It prints CPU microseconds (``time.thread_time``) per request: the whole
request; the same requests with timers around the body parse and around
``Request.process`` (routing, the handler, the answer), so that "whole minus
body parse" is the overhead this script is about; and some pieces on their
own, with warm caches (in a request they cost 3-5 times as much, after the
body has gone through the caches)::

    .venv/bin/python bench/request_overhead.py --payloads /tmp/payloads
    .venv/bin/python bench/request_overhead.py --payloads /tmp/payloads \
        --rules mozilla --profile 30

Make the payloads with ``.venv/bin/python -m tests.payload_maker DIR`` (or
the load harness's payload maker; see bench/payloads.py).
Each figure is the best of ``--rounds`` rounds of ``--requests`` requests.
A run takes a few seconds. Compare code versions in separate processes,
alternately, several times: the allocator's state moves the body parse's
figure by up to 15 % from one process to the next.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from antenna_tw import crashid  # noqa: E402
from antenna_tw.app import build_collector  # noqa: E402
from antenna_tw.config import load_config  # noqa: E402
from antenna_tw.crash import build_raw_crash  # noqa: E402
from antenna_tw.intake.http import CrashRequest  # noqa: E402
from antenna_tw.intake.payload import UploadReader  # noqa: E402
from antenna_tw.logs import make_observer  # noqa: E402
from antenna_tw.spool import SpoolEntry  # noqa: E402
from antenna_tw.submit import SubmitHandler  # noqa: E402
from bench.payloads import read_payload, require_payloads  # noqa: E402

RULES = {
    "accept-all": {},
    "mozilla": {
        "THROTTLE_RULES": "antenna_tw.throttler.MOZILLA_RULES",
        "PRODUCTS": "antenna_tw.throttler.MOZILLA_PRODUCTS",
        "PRODUCT_PACKAGENAMES": "antenna_tw.throttler.MOZILLA_PRODUCT_PACKAGENAMES",
    },
}
READ_SIZE = 256 * 1024  # what intake.UPLOAD_READ_SIZE asks of the socket
CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)


def wire_request(body, headers, path="/submit"):
    """The request as wrk sends it, in the pieces a 256 KiB recv would return."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1:19310"]
    head += [f"{key}: {value}" for key, value in headers]
    head += ["Connection: close", f"Content-Length: {len(body)}", "", ""]
    data = "\r\n".join(head).encode("latin-1") + body
    return [data[n:n + READ_SIZE] for n in range(0, len(data), READ_SIZE)]


def build(args, scratch):
    environ = {
        "CRASHSTORAGE_CLASS": "noop",
        "METRICS_CLASS": args.metrics,
        "LOGGING_LEVEL": args.log_level,
        "SPOOL_DIR": os.path.join(scratch, "spool"),
        "SPOOL_MIN_FREE_BYTES": "0",
        "BASEDIR": scratch,
        **RULES[args.rules],
    }
    collector = build_collector(load_config(environ, None), reactor)
    collector.prepare()

    def put(crash):  # the spool write, left out
        return defer.succeed(SpoolEntry(f"0-{crash.crash_id}.crash", crash.crash_id, 0, 0))

    collector.spool.put = put
    collector.mover.enqueue = lambda entry, crash=None: None
    return collector


def serve_one(site, chunks):
    transport = StringTransport(peerAddress=CLIENT)
    protocol = site.buildProtocol(CLIENT)
    protocol.makeConnection(transport)
    for chunk in chunks:
        protocol.dataReceived(chunk)
    protocol.connectionLost(Failure(ConnectionDone()))
    return transport.value()


class Stopwatch:
    """Wraps methods of classes to add up the time spent in them, by label."""

    def __init__(self):
        self.spent = {}
        self._undo = []

    def wrap(self, label, owner, name):
        own = name in vars(owner)
        original = getattr(owner, name)
        spent = self.spent
        spent.setdefault(label, 0.0)
        clock = CLOCK

        def timed(*args, **kwargs):
            started = clock()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += clock() - started

        setattr(owner, name, timed)
        self._undo.append((owner, name, original, own))

    def unwrap(self):
        for owner, name, original, own in reversed(self._undo):
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)
        self._undo = []


CLOCK = time.thread_time  # CPU time of this thread: other processes inflate it less


def measure_requests(site, chunks, count, rounds):
    """
    CPU microseconds per request, best round of each kind. Rounds alternate:
    plain requests (the whole request), then the same requests with timers
    around the body parse (UploadReader) and ``Request.process`` (routing,
    the handler, the answer).
    """
    for _ in range(50):  # warm up
        serve_one(site, chunks)
    best_plain, best_split = float("inf"), None
    for _ in range(rounds):
        gc.collect()
        started = CLOCK()
        for _ in range(count):
            serve_one(site, chunks)
        best_plain = min(best_plain, (CLOCK() - started) / count * 1e6)

        watch = Stopwatch()
        watch.wrap("body parse", UploadReader, "__init__")
        watch.wrap("body parse", UploadReader, "feed")
        watch.wrap("body parse", UploadReader, "finish")
        watch.wrap("process", CrashRequest, "process")
        try:
            gc.collect()
            started = CLOCK()
            for _ in range(count):
                serve_one(site, chunks)
            whole = CLOCK() - started
        finally:
            watch.unwrap()
        figures = {"whole": whole, **watch.spent}
        figures = {key: value / count * 1e6 for key, value in figures.items()}
        if best_split is None or figures["whole"] < best_split["whole"]:
            best_split = figures
    return best_plain, best_split


def per_call_us(function, count, rounds):
    """Best of ``rounds`` of ``count`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = CLOCK()
        for _ in range(count):
            function()
        best = min(best, (CLOCK() - started) / count * 1e6)
    return best


def pieces(collector, chunks):
    """name -> callable doing one piece of the work of one request."""
    site = collector.site
    handler_log = SubmitHandler.log  # the handler's own kind of Logger
    metrics = collector.metrics
    throttler = collector.throttler

    # The parsed upload of one real request (parsing it here instead would
    # change the allocator's state, and with it the body parse's timings).
    reports = []
    finish = UploadReader.finish
    UploadReader.finish = lambda reader, **kwargs: reports.append(finish(reader, **kwargs)) \
        or reports[-1]
    try:
        sample = serve_one(site, chunks)
    finally:
        UploadReader.finish = finish
    [report] = reports
    submitted = datetime.fromtimestamp(time.time(), timezone.utc)
    query = [("guid", "x")]

    def raw_crash():
        return build_raw_crash(report, submitted, "wrk", query)

    crash = raw_crash()

    def throttle():
        return throttler.throttle(crash)

    def mint():
        return crashid.create_crash_id(datetime.fromtimestamp(time.time(), timezone.utc), 0)

    def one_log_line():
        handler_log.info("{crash_id}: matched by {rule}; returned {result}",
                         crash_id="x", rule="accept_everything", result="ACCEPT")

    def one_debug_line():
        handler_log.debug("{crash_id} spooled", crash_id="x")

    def one_metric():
        metrics.incr("breakpad_resource.throttle", tags=["result:accept"])

    if b" 200 " not in sample.split(b"\r\n", 1)[0] or b"CrashID=bp-" not in sample:
        raise SystemExit(f"unexpected answer: {sample[:300]!r}")
    return {
        "build_raw_crash": raw_crash,
        "throttle": throttle,
        "crash id": mint,
        "one INFO log line": one_log_line,
        "one filtered debug line": one_debug_line,
        "one metrics.incr": one_metric,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payloads", default=None,
                        help="a folder of <name>.body and <name>.headers files")
    parser.add_argument("--payload", default="400k", help="400k, 400k_gz, 100k, ...")
    parser.add_argument("--rules", choices=sorted(RULES), default="accept-all")
    parser.add_argument("--metrics", default="none", help="METRICS_CLASS")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=int, metavar="N", default=0,
                        help="also profile the whole request and print the N top functions")
    args = parser.parse_args(argv)
    require_payloads(args.payloads, [args.payload])

    log_file = open(os.devnull, "w")  # kept open: the observer writes to its fd
    observer = make_observer(log_file, args.log_level, "bench")
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    scratch = tempfile.mkdtemp(prefix="bench-overhead-")
    try:
        collector = build(args, scratch)
        body, headers = read_payload(args.payloads, args.payload)
        chunks = wire_request(body, headers)
        work = pieces(collector, chunks)
        print(f"payload {args.payload} ({len(body)} bytes), rules {args.rules}, "
              f"METRICS_CLASS={args.metrics}, LOGGING_LEVEL={args.log_level}; "
              f"CPU us, best of {args.rounds} x {args.requests}")
        plain, split = measure_requests(collector.site, chunks, args.requests, args.rounds)
        rest = split["whole"] - split["body parse"] - split["process"]
        print(f"  whole request                {plain:9.1f} us")
        print("  with timers on (best round):")
        print(f"    whole request              {split['whole']:9.1f} us")
        print(f"    body parse (UploadReader)  {split['body parse']:9.1f} us")
        print(f"    Request.process            {split['process']:9.1f} us"
              "  (routing, handler, answer)")
        print(f"    the rest                   {rest:9.1f} us"
              "  (connection, request line, headers, close)")
        print(f"    whole minus body parse     {split['whole'] - split['body parse']:9.1f} us")
        print("  pieces on their own (warm caches):")
        for name, function in work.items():
            figure = per_call_us(function, args.requests * 10, args.rounds)
            print(f"    {name:26s} {figure:9.1f} us")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.requests):
                serve_one(collector.site, chunks)
            profiler.disable()
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(args.profile)
            stats.sort_stats("cumulative").print_stats(args.profile)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
