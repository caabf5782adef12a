"""
The real ``twistd antenna``'s logs: ``LOGGING_FORMAT=text``
lines read back by the documented format, refusals and 413s with the client's
address and the reason, one start-up configuration line per node, and the
crash lines in twistd's ``--logfile`` in daemon mode (without ``-n``), with
workers and without.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime

import pytest

from antenna_tw.send_crash import build_multipart
from tests.helpers import minidump
from tests.s3server import free_port
from tests.system.collector_process import TWISTD, children_of, running, wait_for

# The text format as docs/architecture.rst (Logs) describes it.
TEXT_LINE = re.compile(r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) "
                       r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<logger>\S+) "
                       r"(?P<crash_id>\S+) (?P<client>\S+) (?P<message>.*)")
CRASH_ID = re.compile(rb"CrashID=bp-([0-9a-f-]{36})")
MAX_PAYLOAD = 100_000


def parse_text(line):
    """A text line's columns (``-`` read as None); AssertionError if it is not one."""
    match = TEXT_LINE.fullmatch(line)
    assert match, f"not a text log line: {line!r}"
    fields = {key: (None if value == "-" else value) for key, value in match.groupdict().items()}
    fields["time"] = datetime.strptime(fields["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=UTC)
    return fields


def exchange(port, request, until=None):
    """
    Send ``request`` from a socket of our own; return our address as the
    collector sees it (``host:port``) and what it answered, read until
    ``until`` is in it, or until it closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        client = "%s:%d" % sock.getsockname()
        sock.sendall(request)
        answer = b""
        while until is None or until not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return client, answer


def send_three(port):
    """A crash, a malformed upload and one over MAX_PAYLOAD_SIZE: (client, answer) each."""
    body, content_type = build_multipart({"ProductName": "Firefox", "Version": "120.0 b"},
                                         {"upload_file_minidump": minidump()})
    crash = exchange(port, (
        f"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
    malformed = exchange(port, b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                               b"Content-Length: 1\r\nConnection: close\r\n\r\nx")
    # Headers only: the 413 comes at once, before any of the body (the
    # collector then waits for the body a while: read only the answer).
    too_large = exchange(port, b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Type: "
                               b"multipart/form-data; boundary=b\r\n"
                               b"Content-Length: %d\r\n\r\n" % (MAX_PAYLOAD * 10),
                         b"Discarded=too_large")
    return crash, malformed, too_large


def test_text_lines_parse_back_with_the_client_and_the_reason(tmp_path, collectors):
    collector = collectors.start(tmp_path, {
        "LOGGING_FORMAT": "text", "MAX_PAYLOAD_SIZE": str(MAX_PAYLOAD),
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"),
        "CRASHSTORAGE_SECRET_ACCESS_KEY": "do-not-log-me"}, args=["--workers", "2"])
    wait_for(lambda: collector.output().count(" listening on ") == 2)  # both workers
    started = datetime.now(UTC)
    (client, answer), (bad_client, bad), (big_client, big) = send_three(collector.port)
    assert b" 200 " in answer.split(b"\r\n")[0], answer
    crash_id = CRASH_ID.search(answer).group(1).decode()
    assert b" 400 " in bad.split(b"\r\n")[0] and b" 413 " in big.split(b"\r\n")[0]
    wait_for(lambda: f"{crash_id} saved" in collector.output())
    collector.stop()

    output = (tmp_path / "stdout").read_text()
    assert (tmp_path / "stderr").read_text() == "", output
    lines = [parse_text(line) for line in output.splitlines()]
    assert all(started.timestamp() - 60 < line["time"].timestamp() < time.time() + 1
               for line in lines), output
    by_message = Lines({line["message"]: line for line in lines}, output)

    accepted = by_message[f"{crash_id}: matched by accept_everything; returned ACCEPT"
                          " | product=Firefox version=120.0\\x20b"]
    assert (accepted["level"], accepted["logger"], accepted["crash_id"], accepted["client"]) \
        == ("INFO", "antenna.breakpad_resource", crash_id, client)
    saved = by_message[f"{crash_id} saved"]
    assert (saved["logger"], saved["crash_id"], saved["client"]) == (
        "antenna.crashmover", crash_id, None)

    refused = by_message[f"refused: malformed_wrong_content_type, from {bad_client}"]
    assert (refused["level"], refused["crash_id"], refused["client"]) == (
        "INFO", None, bad_client)
    too_large = by_message[f"refused: too_large, from {big_client}: the body is over "
                           f"MAX_PAYLOAD_SIZE ({MAX_PAYLOAD} bytes); answered 413"]
    assert (too_large["crash_id"], too_large["client"]) == (None, big_client)

    # One configuration line for the node, secrets masked; one line per worker.
    [summary] = [line["message"] for line in lines
                 if line["message"].startswith("configuration: ")]
    assert "CRASHSTORAGE_SECRET_ACCESS_KEY=*****" in summary.split()
    assert sum(line["message"].startswith("worker ") and " of 2: spool shard " in line["message"]
               for line in lines) == 2
    assert not any("do-not-log-me" in line["message"] for line in lines)
    assert len(lines) < 50  # was about 95 lines of options alone


def environment(directory, **settings):
    """The environment of a collector started by hand, its files under ``directory``."""
    return dict(os.environ, AWS_EC2_METADATA_DISABLED="true", METRICS_CLASS="none",
                SPOOL_DIR=str(directory / "spool"), SPOOL_MIN_FREE_BYTES="0",
                CRASHSTORAGE_FS_ROOT=str(directory / "crashes"),
                MAX_PAYLOAD_SIZE=str(MAX_PAYLOAD), **settings)


class Lines(dict):
    """Lines by message; a missing one fails with the whole log."""

    def __init__(self, lines, output):
        super().__init__(lines)
        self.output = output

    def __missing__(self, message):
        raise AssertionError(f"no line {message!r} in:\n{self.output}")


def daemon_pid(pidfile, logfile, timeout=20.0):
    """The daemon's pid, once its pidfile names it and it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(pidfile.read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"no pidfile; the log says: {_read(logfile)}")


def _read(path):
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _kill_tree(pid):
    for child in children_of(pid):
        os.kill(child, signal.SIGKILL)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("workers", [2, 0])
def test_a_daemon_writes_its_crash_lines_to_its_logfile(tmp_path, workers):
    port = free_port()
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "antenna.log"
    env = environment(tmp_path)
    # No -n: twistd forks, its first process exits, stdout and stderr become /dev/null.
    started = subprocess.run(
        [TWISTD, "--pidfile", str(pidfile), "--logfile", str(logfile), "antenna",
         "--port", f"tcp:{port}:interface=127.0.0.1", "--workers", str(workers)],
        cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert started.returncode == 0, started
    pid = daemon_pid(pidfile, logfile)
    try:
        wait_for(lambda: _read(logfile).count("listening on") == max(workers, 1))
        (client, answer), (bad_client, _), (big_client, _) = send_three(port)
        crash_id = CRASH_ID.search(answer).group(1).decode()
        wait_for(lambda: f"{crash_id} saved" in _read(logfile))
        workers_pids = children_of(pid)
        assert len(workers_pids) == workers
        os.kill(pid, signal.SIGTERM)  # as an init script stops it: by its pidfile
        wait_for(lambda: not running(pid) and not any(map(running, workers_pids)))
    finally:
        _kill_tree(pid)

    records = [json.loads(line) for line in _read(logfile).splitlines()]
    messages = Lines({record["Fields"]["msg"]: record for record in records}, _read(logfile))
    accepted = messages[f"{crash_id}: matched by accept_everything; returned ACCEPT"]
    assert accepted["Fields"]["client"] == client
    assert (accepted["Fields"]["product"], accepted["Fields"]["version"]) == (
        "Firefox", "120.0 b")
    assert f"{crash_id} saved" in messages
    assert f"refused: malformed_wrong_content_type, from {bad_client}" in messages
    assert any(message.startswith(f"refused: too_large, from {big_client}: ")
               for message in messages)
    # The workers' lines came through the parent, which wrote them.
    assert {record["Pid"] for record in records if record["Type"] == "antenna.service"} == \
        set(workers_pids or [pid])
    assert "Server Shut Down." in messages
    assert sum(message.startswith("configuration: ") for message in messages) == 1


# Run in a mount namespace of its own: /dev is a tmpfs there, with the few
# devices a collector opens and /dev/log bound to the test's socket, so that
# glibc's syslog() writes to the test (nothing outside the namespace sees it).
PRIVATE_DEV_LOG = r"""
set -e
old="$1"; socket="$2"; shift 2
mount --bind /dev "$old"
mount -t tmpfs tmpfs /dev
for name in null zero full random urandom; do
    touch "/dev/$name"; mount --bind "$old/$name" "/dev/$name"
done
ln -s /proc/self/fd /dev/fd
touch /dev/log; mount --bind "$socket" /dev/log
exec "$@"
"""
SYSLOG_LINE = re.compile(rb"<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d ([^:]+): (.*)", re.DOTALL)


@pytest.fixture
def dev_log(tmp_path):
    """A datagram socket the collector's /dev/log is, in its own mount namespace."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace with its own /dev/log")
    tried = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if tried.returncode:
        pytest.skip(f"cannot make a mount namespace: {tried.stderr.strip()}")
    (tmp_path / "olddev").mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "log"))
    sock.settimeout(0.1)
    yield sock
    sock.close()


def test_syslog_gets_the_lines_of_the_node_and_its_workers(tmp_path, dev_log):
    port = free_port()
    env = environment(tmp_path, LOGGING_FORMAT="text")
    with open(tmp_path / "stdout", "wb") as out:
        process = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", PRIVATE_DEV_LOG, "sh",
             str(tmp_path / "olddev"), str(tmp_path / "log"),
             TWISTD, "-n", "--syslog", "--prefix", "antenna-test", "--pidfile=", "antenna",
             "--port", f"tcp:{port}:interface=127.0.0.1", "--workers", "2"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    received = []

    def read_all():
        while True:
            try:
                received.append(dev_log.recv(65536))
            except TimeoutError:
                return

    def logged(text, times=1):
        read_all()
        return sum(text.encode() in datagram for datagram in received) >= times

    try:
        wait_for(lambda: logged("listening on", 2) or process.poll() is not None)
        assert process.poll() is None, (tmp_path / "stdout").read_text()
        (client, answer), (bad_client, _), _ = send_three(port)
        crash_id = CRASH_ID.search(answer).group(1).decode()
        wait_for(lambda: logged(f"{crash_id} saved"))
        workers = children_of(process.pid)
    finally:
        for pid in children_of(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait(10)

    lines = {}
    for datagram in received:
        match = SYSLOG_LINE.fullmatch(datagram)
        assert match, datagram
        priority, ident, line = match.groups()
        assert ident == b"antenna-test"
        lines[parse_text(line.decode())["message"]] = int(priority)
    # facility user (8) + severity info (6), from a worker; one of the node
    assert lines[f"{crash_id}: matched by accept_everything; returned ACCEPT"
                 " | product=Firefox version=120.0\\x20b"] == 14
    assert lines[f"refused: malformed_wrong_content_type, from {bad_client}"] == 14
    assert sum(message.startswith("configuration: ") for message in lines) == 1
    assert len(workers) == 2
    assert (tmp_path / "stdout").read_text() == ""
