"""
``--port`` with ``--workers 2`` on the real twistd process: HTTPS and IPv6
beside HTTP, and socket activation, answered by both workers and stored.
"""

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import minidump
from tests.system.collector_process import TWISTD, CollectorProcess, both_listening
from tests.system.test_workers import answered_by, environment_of, send
from tests.tls import make_certificates

# Batches of crashes until both workers have answered some on a port: the
# worker that wakes first takes each connection from the shared queue, so on
# a busy machine one may take a long run of them.
BATCH, MOST = 12, 10
CRASH_ID_PREFIX = "CrashID=bp-"


def loopback_ipv6():
    """Why ::1 cannot be used here, or None when it can."""
    if not socket.has_ipv6:
        return "this Python has no IPv6"
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError as error:
        return f"no IPv6 loopback (::1) on this machine: {error}"
    return None


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def curl_crash(url, dump, *options):
    """One crash posted by curl (``options``: e.g. ``--cacert``); its crash id."""
    answer = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "30", *options,
         "-F", "ProductName=Test", "-F", "Version=1.0",
         "-F", f"upload_file_minidump=@{dump}", url],
        capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith(CRASH_ID_PREFIX), answer.stdout
    return answer.stdout.strip()[len(CRASH_ID_PREFIX):]


def until_both_workers_answer(collector, workers, post):
    """Crashes posted (``post()``: a crash id) in batches until both workers answered some."""
    ids = []
    with ThreadPoolExecutor(4) as pool:
        for _ in range(MOST):
            ids += pool.map(lambda _: post(), range(BATCH))
            by = answered_by(collector)
            if {by.get(crash_id) for crash_id in ids} >= set(workers):
                return ids
    raise AssertionError(f"after {len(ids)} crashes, not answered by both {workers}")


def stored(directory):
    return {path.stem for path in (directory / "crashes").glob("*/raw_crash/*.json")}


def test_https_and_ipv6_beside_http_are_served_by_both_workers(tmp_path, collectors):
    if (reason := loopback_ipv6()) is not None:
        pytest.skip(reason)
    tls = make_certificates(tmp_path)
    dump = tmp_path / "dump"
    dump.write_bytes(minidump())
    https, ipv6 = free_port(), free_port(socket.AF_INET6, "::1")
    collector = collectors.start(tmp_path, {"CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes")},
                                 args=["--workers", "2",
                                       "--port", f"ssl:{https}:privateKey={tls.key}:"
                                                 f"certKey={tls.cert}:interface=127.0.0.1",
                                       "--port", rf"tcp:{ipv6}:interface=\:\:1"])
    try:
        workers = both_listening(collector)
        over_https = until_both_workers_answer(collector, workers, lambda: curl_crash(
            f"https://localhost:{https}/submit", dump, "--cacert", tls.ca))
        over_ipv6 = until_both_workers_answer(collector, workers, lambda: curl_crash(
            f"http://[::1]:{ipv6}/submit", dump, "--globoff"))
        over_http = [send(collector)]  # the first --port still serves
        # TLS is the workers' only: the parent never loads pyOpenSSL
        with open(f"/proc/{collector.process.pid}/maps") as maps:
            assert "/cryptography/" not in maps.read()
    finally:
        collector.stop()
    assert set(over_https + over_ipv6 + over_http) <= stored(tmp_path)


def test_socket_activation_is_served_by_both_workers(tmp_path, collectors):
    # As systemd would: the listening socket is descriptor 3, LISTEN_FDS=1,
    # and LISTEN_PID is the pid of the process that execs twistd.
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(50)
    port = listening.getsockname()[1]
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true", METRICS_CLASS="none",
               SPOOL_DIR=str(tmp_path / "spool"), SPOOL_MIN_FREE_BYTES="0",
               CRASHSTORAGE_FS_ROOT=str(tmp_path / "crashes"), LISTEN_FDS="1")
    env.pop("LISTEN_FDNAMES", None)
    as_systemd = ("import os, sys; os.environ['LISTEN_PID'] = str(os.getpid()); "
                  "os.execv(sys.argv[1], sys.argv[1:])")
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", as_systemd, TWISTD, "-n", "--pidfile=", "antenna",
             "--workers", "2", "--port", "systemd:domain=INET:index=0"],
            cwd=tmp_path, env=env, stdout=out, stderr=err, pass_fds=(3,),
            preexec_fn=lambda: os.dup2(listening.fileno(), 3))
    listening.close()  # the collector holds it now
    collector = CollectorProcess(process, port, tmp_path)
    collectors.started.append(collector)
    try:
        collector.wait_listening(20)
        workers = both_listening(collector)
        ids = until_both_workers_answer(collector, workers, lambda: send(collector))
        for pid in workers:  # the parent's activation is not theirs
            assert "LISTEN_PID" not in environment_of(pid)
    finally:
        collector.stop()
    assert set(ids) <= stored(tmp_path)
