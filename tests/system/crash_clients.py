"""
Clients and storage checks for the spool system tests: post crashes from
threads with http.client (as a crash reporter would), time the answers, and
read back what the filesystem storage holds.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import attr

from antenna_tw.send_crash import build_multipart
from tests.helpers import minidump

CRASH_ID = re.compile(r"^CrashID=bp-([0-9a-f-]{36})\n$")


@attr.s(frozen=True)
class Sent:
    """One crash as the client sent it."""

    sequence = attr.ib()
    annotations = attr.ib()
    dumps = attr.ib()
    body = attr.ib(repr=False)
    content_type = attr.ib()


@attr.s(frozen=True)
class Answer:
    """What the collector answered (status 0: no answer, the connection failed)."""

    sent = attr.ib()
    status = attr.ib()
    headers = attr.ib(factory=dict)
    body = attr.ib(default=b"")
    seconds = attr.ib(default=0.0)

    @property
    def crash_id(self):
        match = CRASH_ID.match(self.body.decode("utf-8", "replace"))
        return match.group(1) if self.status == 200 and match else None


def make_crash(sequence, dump_bytes=40_000):
    """A crash with two dumps whose bytes name the crash, so any mix-up shows."""
    annotations = {"ProductName": "Test", "Version": "1.0", "Sequence": str(sequence)}
    stamp = f"<crash {sequence}>".encode()
    dumps = {
        "upload_file_minidump": minidump() + stamp * (dump_bytes // len(stamp)),
        "memory_report": stamp * 100,
    }
    body, content_type = build_multipart(annotations, dumps)
    return Sent(sequence, annotations, dumps, body, content_type)


def post_crash(port, sent, timeout=30.0, pace=0.0):
    """
    POST one crash to 127.0.0.1:port; never raises for a failed connection.
    ``pace``: seconds to spread the body over, in ten pieces (a slow link).
    """
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if pace:
            connection.putrequest("POST", "/submit")
            connection.putheader("Content-Type", sent.content_type)
            connection.putheader("Content-Length", str(len(sent.body)))
            connection.endheaders()
            piece = len(sent.body) // 10 + 1
            for offset in range(0, len(sent.body), piece):
                time.sleep(pace / 10)
                connection.send(sent.body[offset:offset + piece])
        else:
            connection.request("POST", "/submit", body=sent.body,
                               headers={"Content-Type": sent.content_type})
        response = connection.getresponse()
        body = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Answer(sent, response.status, headers, body, time.perf_counter() - started)
    except (OSError, http.client.HTTPException):
        return Answer(sent, 0, seconds=time.perf_counter() - started)
    finally:
        connection.close()


def post_many(port, sequences, threads=8, interval=0.0, stop=None, on_answer=None):
    """
    Post a crash for each sequence number from ``threads`` threads; with
    ``interval``, crash n is not sent before ``n * interval`` seconds after
    the start (a steady arrival rate). Stops sending once ``stop`` is set.
    ``on_answer`` sees each Answer as it comes. Returns every Answer.
    """
    sequences = list(sequences)
    started = time.monotonic()
    stop = stop or threading.Event()

    def one(position_sequence):
        position, sequence = position_sequence
        if interval:
            delay = started + position * interval - time.monotonic()
            if delay > 0:
                stop.wait(delay)
        if stop.is_set():
            return None
        answer = post_crash(port, make_crash(sequence))
        if on_answer is not None:
            on_answer(answer)
        return answer

    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(one, enumerate(sequences)))
    return [answer for answer in answers if answer is not None]


def percentile(values, fraction):
    """The value below which ``fraction`` of ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[index]


def milliseconds(answers):
    """``(p50, p99)`` of the answer times in ms."""
    times = [answer.seconds * 1000 for answer in answers]
    return round(percentile(times, 0.50), 1), round(percentile(times, 0.99), 1)


@attr.s
class FSStore:
    """What the filesystem crash storage under ``root`` holds (docs/spool.rst, *Where crashes are stored*)."""

    root = attr.ib()

    def raw_crash_ids(self):
        """Ids whose raw crash is stored: the crashes visible downstream."""
        return {os.path.basename(path)[: -len(".json")]
                for path in glob.glob(os.path.join(self.root, "*", "raw_crash", "*.json"))}

    def day(self, crash_id):
        return os.path.join(self.root, "20" + crash_id[-6:])

    def read(self, crash_id):
        """``(raw_crash, dump_names, {name: bytes})``; OSError when a file is missing."""
        day = self.day(crash_id)
        with open(os.path.join(day, "raw_crash", crash_id + ".json"), "rb") as raw_file:
            raw_crash = json.loads(raw_file.read())
        with open(os.path.join(day, "dump_names", crash_id + ".json"), "rb") as names_file:
            dump_names = json.loads(names_file.read())
        dumps = {}
        for name in dump_names:
            with open(os.path.join(day, name, crash_id), "rb") as dump_file:
                dumps[name] = dump_file.read()
        return raw_crash, dump_names, dumps

    def check(self, answer):
        """The crash answered with ``answer`` is stored completely, with the bytes sent."""
        crash_id = answer.crash_id
        raw_crash, dump_names, dumps = self.read(crash_id)
        assert raw_crash["uuid"] == crash_id
        assert raw_crash["Sequence"] == answer.sent.annotations["Sequence"], crash_id
        assert dump_names == sorted(answer.sent.dumps), crash_id
        assert dumps == answer.sent.dumps, crash_id

    def check_every_visible_crash_is_complete(self):
        """No raw crash without its dump_names and every dump they list."""
        for crash_id in self.raw_crash_ids():
            raw_crash, dump_names, dumps = self.read(crash_id)
            assert set(dumps) == set(dump_names) == set(
                raw_crash["metadata"]["dump_checksums"]), crash_id

    def wait_stored(self, crash_ids, timeout):
        """Wait until every id's raw crash is stored; AssertionError after ``timeout`` s."""
        wanted = set(crash_ids)
        deadline = time.monotonic() + timeout
        while True:
            missing = wanted - self.raw_crash_ids()
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(missing)} of {len(wanted)} crashes not stored "
                                     f"after {timeout} s")
            time.sleep(0.1)


def spool_entries(spool_dir):
    """
    Names of the entries (their ``.crash`` files) in a spool directory and
    its worker shards (``worker-<i>/``), not the temp files of writes in
    progress.
    """
    names = []
    for folder, subfolders, files in os.walk(spool_dir):
        subfolders[:] = [name for name in subfolders if name.startswith("worker-")]
        names += [name for name in files if name.endswith(".crash") and not name.startswith(".")]
    return sorted(names)


def log_records(output):
    """The mozlog JSON records in a collector's output, in order."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def logged_total(output, pattern):
    """The sum of the first group of ``pattern`` over every log message it matches."""
    regex = re.compile(pattern)
    return sum(int(match.group(1)) for record in log_records(output)
               if (match := regex.fullmatch(record["Fields"]["msg"])))
