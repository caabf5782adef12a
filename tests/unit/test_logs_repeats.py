"""
A failure that repeats is logged once per interval with a count
(``logs.Repeats``, on ``task.Clock``), and twisted's lines for connections
refused for lack of file descriptors come out as one warning per interval
(``logs.QuietAcceptErrors``), pinned against the real twisted TCP port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

from twisted.internet import task
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from antenna_tw.logs import ACCEPT_ERROR_FORMATS, Logger, QuietAcceptErrors, format_message


def repeats(interval=10.0):
    events = []
    clock = task.Clock()
    log = Logger(namespace="antenna.test", observer=events.append)
    return log.repeats(clock, interval), clock, events


def messages(events):
    return [format_message(event) for event in events]


def test_the_first_is_logged_at_once_the_rest_once_per_interval_with_a_count():
    limited, clock, events = repeats(10.0)
    for n in range(5):
        limited.warn("disk full", "{crash_id}: disk full", crash_id=f"c{n}")
        clock.advance(1)
    assert messages(events) == ["c0: disk full"]
    assert events[0]["repeats"] == 1 and events[0]["log_level"] == LogLevel.warn
    clock.advance(5)  # the interval ends: the last one held back, with the count
    assert messages(events) == ["c0: disk full", "c4: disk full (4 times in the last 10 s)"]
    assert events[1]["repeats"] == 4
    for n in range(100):  # a flood: still one line per interval
        limited.warn("disk full", "{crash_id}: disk full", crash_id=f"d{n}")
        clock.advance(0.1)
    clock.advance(10)
    assert len(events) == 3 and events[2]["repeats"] == 100
    clock.advance(10)  # an interval with nothing: nothing logged, the window closes
    assert len(events) == 3 and not clock.getDelayedCalls()
    limited.warn("disk full", "{crash_id}: disk full", crash_id="e")
    assert messages(events)[-1] == "e: disk full"  # at once again


def test_keys_are_counted_apart():
    limited, clock, events = repeats(10.0)
    for _ in range(3):
        limited.warn("a", "fault {name}", name="a")
        limited.warn("b", "fault {name}", name="b")
    assert messages(events) == ["fault a", "fault b"]
    clock.advance(10)
    assert sorted(messages(events)[2:]) == ["fault a (2 times in the last 10 s)",
                                            "fault b (2 times in the last 10 s)"]


def test_a_failure_keeps_its_traceback_once_per_interval():
    limited, clock, events = repeats(10.0)
    for n in range(3):
        try:
            raise OSError(5, f"I/O error {n}")
        except OSError:
            limited.failure("io", "write failed")
    assert len(events) == 1 and events[0]["log_failure"].value.strerror == "I/O error 0"
    assert events[0]["log_level"] == LogLevel.critical
    clock.advance(10)
    assert len(events) == 2 and events[1]["log_failure"].value.strerror == "I/O error 2"
    assert messages(events)[1] == "write failed (2 times in the last 10 s)"


def test_flush_logs_what_is_held_and_stops_the_timers():
    limited, clock, events = repeats(10.0)
    failure = Failure(RuntimeError("x"))
    for _ in range(3):
        limited.failure("x", "broke", failure)
    clock.advance(4)
    limited.flush()
    assert messages(events) == ["broke", "broke (2 times in the last 4 s)"]
    assert not clock.getDelayedCalls()


def test_a_single_repeat_is_still_logged_as_a_count():
    # A bare line would read as a failure that had stopped and begun again.
    limited, clock, events = repeats(10.0)
    limited.warn("full", "{crash_id}: disk full", crash_id="c0")
    limited.warn("full", "{crash_id}: disk full", crash_id="c1")
    clock.advance(10)
    limited.warn("full", "{crash_id}: disk full", crash_id="c2")
    limited.flush()  # at stop: the one held back since
    assert messages(events) == ["c0: disk full", "c1: disk full (1 time in the last 10 s)",
                                "c2: disk full (1 time in the last 0 s)"]
    assert [event["repeats"] for event in events] == [1, 1, 1]


def accept_event(log_format, when, **fields):
    return dict(fields, log_format=log_format, log_level=LogLevel.info,
                log_namespace="twisted.internet.tcp.Port", log_time=when)


def emfile_round(when, address=("127.0.0.1", 4242)):
    """What twisted's Port logs for one connection it had to close (tcp._accept)."""
    return [accept_event("EMFILE encountered; releasing reserved file descriptor.", when),
            accept_event("EMFILE recovery: Closed socket from {address}", when, address=address),
            accept_event("Re-reserving EMFILE recovery file descriptor.", when)]


def test_refused_connections_come_out_as_one_warning_per_interval():
    seen = []
    quiet = QuietAcceptErrors(seen.append, interval=60.0)
    quiet(accept_event("listening", 0.0))
    for n in range(300):  # 5 a second for 60 s, then one more
        for event in emfile_round(n * 0.2):
            quiet(event)
    for event in emfile_round(60.5):
        quiet(event)
    quiet(accept_event("Could not accept new connection ({acceptError})", 61.0,
                       acceptError="ENFILE"))
    text = messages(seen)
    assert text == [
        "listening",
        "a connection was refused: no file descriptor free (EMFILE); more are counted "
        "and logged once per 60 s",
        "300 connections refused in the last 60 s: no file descriptor free (EMFILE)",
    ]
    assert [event["log_level"] for event in seen[1:]] == [LogLevel.warn] * 2
    assert seen[2]["refused"] == 300


PORT_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from twisted.internet import protocol, reactor
    from twisted.logger import globalLogBeginner
    from antenna_tw.logs import QuietAcceptErrors, format_message

    def write(event):
        sys.stdout.write(json.dumps([event.get("log_format"), format_message(event)]) + "\\n")
        sys.stdout.flush()

    globalLogBeginner.beginLoggingTo([QuietAcceptErrors(write, 60.0)],
                                     redirectStandardIO=False)
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol),
                             interface="127.0.0.1")
    # No descriptor left for a new connection.
    held = []
    while True:
        try:
            held.append(open("/dev/null"))
        except OSError:
            break
    print(json.dumps(["port", port.getHost().port]), flush=True)
    reactor.callLater(float(sys.argv[1]), reactor.stop)
    reactor.run()
""")


def test_twisted_port_out_of_descriptors_is_one_warning():
    """
    Pins twisted's lines for EMFILE (matched by their text): a real TCP port
    with no descriptor free, ten connections refused, no line of twisted's
    own among what the filter passes on.
    """
    process = subprocess.Popen([sys.executable, "-c", PORT_SCRIPT, "3"],
                               stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        first = json.loads(process.stdout.readline())
        while first[0] != "port":
            first = json.loads(process.stdout.readline())
        clients = []
        for _ in range(10):
            clients.append(socket.create_connection(("127.0.0.1", first[1]), timeout=5))
            time.sleep(0.05)
        out, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    for client in clients:
        client.close()
    lines = [json.loads(line) for line in out.splitlines()]
    formats = [log_format for log_format, _ in lines]
    assert not set(formats) & ACCEPT_ERROR_FORMATS, lines
    refused = [text for _, text in lines if "no file descriptor free" in text]
    assert refused == ["a connection was refused: no file descriptor free (EMFILE); more are "
                       "counted and logged once per 60 s"], lines


def test_without_the_filter_twisted_logs_three_lines_per_refused_connection():
    """The same port without our filter: what the filter is for is still there to filter."""
    script = PORT_SCRIPT.replace("QuietAcceptErrors(write, 60.0)", "write")
    process = subprocess.Popen([sys.executable, "-c", script, "2"], stdout=subprocess.PIPE,
                               text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        first = json.loads(process.stdout.readline())
        while first[0] != "port":
            first = json.loads(process.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", first[1]), timeout=5)
                   for _ in range(3)]
        out, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    for client in clients:
        client.close()
    formats = [json.loads(line)[0] for line in out.splitlines()]
    assert formats.count("EMFILE recovery: Closed socket from {address}") == 3
    assert set(formats) & ACCEPT_ERROR_FORMATS == {
        "EMFILE encountered; releasing reserved file descriptor.",
        "EMFILE recovery: Closed socket from {address}",
        "Re-reserving EMFILE recovery file descriptor."}
