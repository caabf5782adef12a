"""
LOGGING_FORMAT=text, the extra fields of mozlog lines, the refusal lines'
budget, and where lines go as twistd's --logfile and --syslog say
(antenna_tw/logs.py), with the --workers parent relaying its workers' lines.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

from antenna_tw import logs
from antenna_tw.logs import (
    Destination,
    LineBudget,
    Logger,
    MozLogObserver,
    SyslogObserver,
    TextObserver,
    address_text,
    client_value,
    make_observer,
    twistd_destination,
)
from antenna_tw.workers import WorkerSupervisor
from tests.unit.test_workers import ProcessReactor

# The documented format (docs/architecture.rst, Logs).
TEXT_LINE = re.compile(r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) "
                       r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<logger>\S+) "
                       r"(?P<crash_id>\S+) (?P<client>\S+) (?P<message>.*)")
ESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4})")


def unescape(text):
    """What the text format escaped, back."""
    def one(match):
        code = match.group(1)
        return {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}.get(code) or chr(int(code[1:], 16))
    return ESCAPE.sub(one, text)


def text_line(log_format="{text}", **fields):
    lines = []
    Logger(namespace="antenna.breakpad_resource",
           observer=TextObserver(lines.append)).info(log_format, **fields)
    [line] = lines
    return line


def test_a_text_line_has_its_columns_in_the_documented_order():
    line = text_line("{crash_id}: matched by {rule}; returned {result}",
                     crash_id="de1e7e5a-0000-4000-8000-000000261203", rule="accept_everything",
                     result="ACCEPT", client="127.0.0.1:50312", crash_product="Firefox",
                     crash_version="120.0")
    match = TEXT_LINE.fullmatch(line.rstrip("\n"))
    assert match and line.endswith("\n") and line.count("\n") == 1
    assert match.group("level", "logger", "crash_id", "client") == (
        "INFO", "antenna.breakpad_resource", "de1e7e5a-0000-4000-8000-000000261203",
        "127.0.0.1:50312")
    assert match.group("message") == ("de1e7e5a-0000-4000-8000-000000261203: matched by "
                                      "accept_everything; returned ACCEPT"
                                      " | product=Firefox version=120.0")


def test_a_line_without_crash_id_or_client_has_dashes_there():
    match = TEXT_LINE.fullmatch(text_line("stopped").rstrip("\n"))
    assert match.group("crash_id", "client", "message") == ("-", "-", "stopped")


@given(text=st.text(), product=st.text(max_size=80))
def test_whatever_a_client_sends_a_text_event_stays_one_parsable_line(text, product):
    line = text_line(text=text, client="[::1]:1", crash_product=client_value(product),
                     crash_version="")
    assert line.endswith("\n") and len(line.splitlines()) == 1
    match = TEXT_LINE.fullmatch(line[:-1])
    assert match, line
    message, _, suffix = match.group("message").rpartition(" | product=")
    assert unescape(message) == text
    shown, _, version = suffix.rpartition(" version=")
    assert unescape(shown) == client_value(product) or (shown == "-" and not product)
    assert version == "-"


def test_a_failure_s_traceback_stays_on_its_line():
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        failure = Failure()
    lines = []
    Logger(namespace="antenna.crashmover", observer=TextObserver(lines.append)).failure(
        "{crash_id}: save failed", failure, crash_id="c0ffee")
    [line] = lines
    match = TEXT_LINE.fullmatch(line.rstrip("\n"))
    assert match.group("level", "crash_id") == ("CRITICAL", "c0ffee")
    assert unescape(match.group("message")).startswith("c0ffee: save failed\nTraceback")
    assert "RuntimeError: boom\\nsecond line" in line


def test_client_values_are_cut_and_addresses_read_as_host_and_port():
    assert client_value("x" * 100) == "x" * logs.MAX_VALUE_CHARS + "..."
    assert client_value(["not", "text"]) == "['not', 'text']"
    assert address_text(IPv4Address("TCP", "127.0.0.1", 5)) == "127.0.0.1:5"
    assert address_text(IPv6Address("TCP", "::1", 5)) == "[::1]:5"
    assert address_text(UNIXAddress(b"/run/a.sock")) == "unix"
    assert address_text(None) == "-"


def mozlog(event):
    lines = []
    MozLogObserver(lines.append, "host-id", "host", 7)(dict(event))
    return lines[0]


@pytest.mark.parametrize("extras", [
    {"client": "127.0.0.1:9"},
    {"client": "[::1]:9", "crash_product": "Firefox \u00e9\n", "crash_version": "1"},
    {"crash_product": "", "crash_version": "\"2\""},
])
def test_mozlog_puts_the_client_product_and_version_in_fields_as_json_dumps_would(extras):
    event = dict(extras, log_format="{crash_id} saved", crash_id="c0ffee",
                 log_level=LogLevel.info, log_namespace="antenna.crashmover", log_time=1.5)
    observer = MozLogObserver(None, "host-id", "host", 7)
    assert mozlog(event) == json.dumps(observer.record(event)) + "\n"
    fields = json.loads(mozlog(event))["Fields"]
    names = {"client": "client", "crash_product": "product", "crash_version": "version"}
    assert fields == dict({"host_id": "host-id", "msg": "c0ffee saved"},
                          **{names[key]: value for key, value in extras.items()})


def test_an_event_without_extras_is_the_mozlog_line_it_always_was():
    event = {"log_format": "stopped", "log_level": LogLevel.info,
             "log_namespace": "antenna.service", "log_time": 1.5}
    assert json.loads(mozlog(event))["Fields"] == {"host_id": "host-id", "msg": "stopped"}


def test_make_observer_writes_text_at_or_above_the_level(tmp_path):
    path = tmp_path / "log"
    with open(path, "w") as stream:
        log = Logger(namespace="antenna.test",
                     observer=make_observer(stream, "INFO", "", log_format="text"))
        log.debug("hidden")
        log.warn("shown {client}", client="127.0.0.1:1")
    [line] = path.read_text().splitlines()
    assert TEXT_LINE.fullmatch(line).group("level", "client", "message") == (
        "WARNING", "127.0.0.1:1", "shown 127.0.0.1:1")


def test_the_refusal_budget_bounds_the_lines_of_a_flood():
    clock = task.Clock()
    warnings = []
    budget = LineBudget(clock, per_second=50, interval=60,
                        log=Logger(namespace="antenna.logs", observer=warnings.append))
    allowed = 0
    for _ in range(120):  # two minutes of 10,000 refusals a second
        for _ in range(100):
            for _ in range(100):
                allowed += budget.allows()
            clock.advance(0.01)
    clock.advance(1)  # the second interval ends
    # A burst of 50, then 50 a second; past them only counted.
    assert 50 * 120 <= allowed <= 50 * 121
    # One warning at once, then one per interval with its count.
    assert len(warnings) == 3
    assert warnings[-1]["repeats"] > 500_000
    assert logs.format_message(warnings[0]).startswith("more than 50 refusal lines a second")


def test_a_quiet_budget_lets_every_line_through():
    clock = task.Clock()
    budget = LineBudget(clock, per_second=2)
    allowed = []
    for _ in range(20):
        allowed.append(budget.allows())
        clock.advance(0.5)
    assert all(allowed)


def test_syslog_gets_each_line_at_its_event_s_severity():
    sent = []
    observer = SyslogObserver(TextObserver, lambda severity, line: sent.append((severity, line)))
    log = Logger(namespace="antenna.test", observer=observer)
    log.info("one\ntwo")
    log.error("three")
    assert [severity for severity, _ in sent] == [6, 3]
    assert sent[0][1].endswith(" antenna.test - - one\\ntwo")
    assert "\n" not in sent[0][1]


def test_destination_without_twistd_or_with_n_is_stdout(tmp_path):
    stdout = open(tmp_path / "out", "w")  # noqa: SIM115 (closed below)
    try:
        for options in (None, {"nodaemon": True, "logfile": ""},
                        {"nodaemon": True, "logfile": "-"}):
            assert twistd_destination(options, stdout) == Destination(stdout)
    finally:
        stdout.close()
    with pytest.raises(SystemExit, match="Daemons cannot log to stdout"):
        twistd_destination({"nodaemon": False, "logfile": "-"}, stdout)


def test_a_log_file_is_twisteds_rotating_log_file(tmp_path, monkeypatch):
    rotated = []
    destination = twistd_destination({"nodaemon": False, "logfile": str(tmp_path / "a.log")},
                                     None, rotated.append)
    assert isinstance(destination.stream, LogFile) and not destination.to_stdout
    assert rotated == [destination.stream]  # SIGUSR1 rotates it, as twistd's does
    log = Logger(namespace="antenna.test", observer=make_observer(
        destination.stream, "INFO", "", log_format="text"))
    log.info("before")
    destination.stream.rotate()
    log.info("after")
    destination.relay(b"a worker's line\n")
    assert "before" in (tmp_path / "a.log.1").read_text()
    assert (tmp_path / "a.log").read_text().endswith(" after\na worker's line\n")
    monkeypatch.chdir(tmp_path)  # a daemon without --logfile: twistd.log, as twistd's
    default = twistd_destination({"nodaemon": False, "logfile": None}, None, rotated.append)
    assert default.stream.path == str(tmp_path / "twistd.log")


def test_with_syslog_the_workers_own_output_is_sent_line_by_line(monkeypatch):
    import syslog

    opened, sent = [], []
    monkeypatch.setattr(syslog, "openlog", lambda *args: opened.append(args))
    monkeypatch.setattr(syslog, "syslog", lambda *args: sent.append(args))
    destination = twistd_destination({"syslog": True, "prefix": "antenna-1"}, None)
    assert opened == [("antenna-1", 0, syslog.LOG_USER)] and not destination.to_stdout
    destination.relay(b"Traceback\n  File x\n", from_stderr=True)
    destination.relay(b"out\n")
    assert sent == [(3, "Traceback"), (3, "  File x"), (6, "out")]


def test_the_parent_relays_its_workers_whole_lines():
    reactor = ProcessReactor()
    relayed = []
    supervisor = WorkerSupervisor(reactor, 2, lambda index: ["antenna"],
                                  relay=lambda data, err: relayed.append((data, err)))
    supervisor.startService()
    first, second = (process.protocol for process in reactor.processes)
    assert reactor.processes[0].child_fds == {0: "w", 1: "r", 2: "r"}
    first.childDataReceived(1, b'{"a": ')
    second.childDataReceived(1, b"whole\n")
    first.childDataReceived(1, b'1}\n{"b"')
    first.childDataReceived(2, b"Traceback\n")
    assert relayed == [(b"whole\n", False), (b'{"a": 1}\n', False), (b"Traceback\n", True)]
    reactor.processes[0].end()  # what was left without its newline is not lost
    assert relayed[-1] == (b'{"b"\n', False)
    supervisor.stopService()


def test_a_worker_s_endless_line_is_relayed_in_bounded_pieces():
    reactor = ProcessReactor()
    relayed = []
    WorkerSupervisor(reactor, 1, lambda index: ["antenna"],
                     relay=lambda data, err: relayed.append(data)).startService()
    protocol = reactor.processes[0].protocol
    for _ in range(100):
        protocol.childDataReceived(1, b"x" * 4096)
    assert relayed and max(map(len, relayed)) <= 64 * 1024 + 4096
    assert sum(map(len, relayed)) > 300_000
