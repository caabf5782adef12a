"""
A real load balancer for the fleet test: Debian's ``haproxy`` (installed by
.ci/run) in the foreground on a free loopback port, its configuration
written by the test, health checks polling each collector's
``/__lbheartbeat__`` at short intervals, and its admin socket read for each
server's state and counters (``show stat``).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time

import attr

from tests.s3server import free_port

# Short intervals so that a dead node leaves the pool within half a second.
CONFIG = """\
global
    maxconn 1000
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    # A connection a node refuses (dead, or its port closed by SIGTERM) is
    # tried again, on another node: the client never sees it.
    retries 3
    option redispatch 1

frontend crashes
    bind 127.0.0.1:{port}
    default_backend collectors

backend collectors
    balance roundrobin
    option httpchk
    http-check send meth GET uri /__lbheartbeat__
    http-check expect status 200
    default-server check inter {inter}ms fastinter {inter}ms downinter {inter}ms rise 2 fall 2
{servers}
"""


def haproxy_command():
    """The haproxy binary (Debian puts it in /usr/sbin, not always on PATH), or None."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


@attr.s
class HAProxy:
    """A running haproxy in front of ``servers`` (``{name: port}``)."""

    process = attr.ib()
    port = attr.ib()
    socket_path = attr.ib()
    log_path = attr.ib()

    @classmethod
    def start(cls, directory, servers, inter_ms=100, timeout=10.0):
        port = free_port()
        socket_path = os.path.join(directory, "haproxy.sock")
        config_path = os.path.join(directory, "haproxy.cfg")
        with open(config_path, "w") as config:
            config.write(CONFIG.format(
                socket=socket_path, port=port, inter=inter_ms,
                servers="\n".join(f"    server {name} 127.0.0.1:{server_port}"
                                  for name, server_port in servers.items())))
        log_path = os.path.join(directory, "haproxy.log")
        with open(log_path, "wb") as log:
            # -db: in the foreground, not a daemon.
            process = subprocess.Popen([haproxy_command(), "-db", "-f", config_path],
                                       stdout=log, stderr=subprocess.STDOUT)
        balancer = cls(process, port, socket_path, log_path)
        deadline = time.monotonic() + timeout
        while not os.path.exists(socket_path):
            if process.poll() is not None or time.monotonic() > deadline:
                balancer.stop()
                with open(log_path) as log:
                    raise RuntimeError(f"haproxy did not start: {log.read()}")
            time.sleep(0.05)
        return balancer

    def command(self, line):
        """One command on the admin socket (``show stat``, ``set server ...``); its answer."""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.settimeout(5)
            admin.connect(self.socket_path)
            admin.sendall(line.encode() + b"\n")
            data = b""
            while chunk := admin.recv(65536):
                data += chunk
        return data.decode()

    def stats(self):
        """``{server name: row}`` of the backend's servers, from ``show stat``."""
        rows = csv.DictReader(io.StringIO(self.command("show stat").lstrip("# ")))
        return {row["svname"]: row for row in rows
                if row["pxname"] == "collectors" and row["svname"] != "BACKEND"}

    def status(self, name):
        """``UP``, ``DOWN`` (or a transition such as ``UP 1/2``) of one server."""
        return self.stats()[name]["status"]

    def wait_status(self, name, wanted, timeout=15.0):
        """Wait until server ``name`` is ``wanted``; the seconds it took."""
        started = time.monotonic()
        while (status := self.status(name)) != wanted:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{name} still {status}, not {wanted}, after {timeout} s")
            time.sleep(0.02)
        return time.monotonic() - started

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
