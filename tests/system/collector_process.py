"""
The real ``twistd -n antenna`` process, for system tests.

Tests start collectors through the ``collectors`` fixture (tests/system/
conftest.py), which stops whatever they started, workers included, when
the test ends, however it ends: a collector that never listens, or an
assertion that fails while it runs, leaves no process behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import attr

from tests.s3server import free_port

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
WORKER_STARTED = re.compile(r"worker \d+ started, pid (\d+)")


@attr.s
class CollectorProcess:
    """A collector running as its own process, logs in files under ``directory``."""

    process = attr.ib()
    port = attr.ib()
    directory = attr.ib()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def submit_url(self):
        return self.url + "/submit"

    @classmethod
    def spawn(cls, directory, environ, args=(), preexec_fn=None, port_options="", port=None):
        """
        Start it; it may still be starting (or failing) when this returns.
        ``preexec_fn`` runs in the child before twistd (e.g. to set rlimits);
        ``port_options`` are added to its ``--port`` (e.g. ``:backlog=2048``);
        ``port``: this one (a node restarted in place), else a free one.
        """
        port = port or free_port()
        env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true",
                   SPOOL_DIR=str(directory / "spool"), BASEDIR=str(directory),
                   METRICS_CLASS="none", SPOOL_MIN_FREE_BYTES="0")
        env.update(environ)
        with open(directory / "stdout", "wb") as out, open(directory / "stderr", "wb") as err:
            process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "antenna",
                 "--port", f"tcp:{port}:interface=127.0.0.1{port_options}", *args],
                cwd=directory, env=env, stdout=out, stderr=err, preexec_fn=preexec_fn)
        return cls(process, port, directory)

    @classmethod
    def start(cls, directory, environ, timeout=20.0, args=()):
        """Start it and wait until it listens; stopped again if it does not."""
        collector = cls.spawn(directory, environ, args)
        try:
            collector.wait_listening(timeout)
        except BaseException:
            collector.kill()
            raise
        return collector

    def wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"collector exited {self.process.returncode}: "
                                     f"{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/__lbheartbeat__", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("collector did not listen in time")

    def heartbeat(self, timeout=15.0):
        """``(status, body)`` of /__heartbeat__."""
        try:
            with urllib.request.urlopen(self.url + "/__heartbeat__", timeout=timeout) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def output(self):
        """Everything it wrote, stdout then stderr."""
        return ((self.directory / "stdout").read_text(errors="replace")
                + (self.directory / "stderr").read_text(errors="replace"))

    def wait_exit(self, timeout=30.0):
        return self.process.wait(timeout)

    def stop(self, timeout=30.0):
        """SIGTERM and wait; SIGKILL to all of it past ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def worker_pids(self):
        """The pids of the workers it started (its log says), those still running."""
        pids = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    started = WORKER_STARTED.fullmatch(json.loads(line)["Fields"]["msg"])
                except (ValueError, KeyError, TypeError):
                    continue
                if started and self._is_worker(int(started.group(1))):
                    pids.append(int(started.group(1)))
        return pids

    def _is_worker(self, pid):
        """True while ``pid`` runs as one of this collector's workers (not a reused pid)."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                arguments = cmdline.read().split(b"\0")
        except OSError:
            return False
        return running(pid) and b"--parent-pid" in arguments \
            and str(self.process.pid).encode() in arguments

    def kill(self, timeout=10.0):
        """
        SIGKILL the collector and every worker it started, even those whose
        parent is already gone, and wait until all have ended; AssertionError
        if one is still there after ``timeout`` seconds.
        """
        for pid in self.worker_pids():
            _sigkill(pid)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout)
        deadline = time.monotonic() + timeout
        while left := self.worker_pids():  # one it was starting as it was killed
            for pid in left:
                _sigkill(pid)
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {left} of {self.process.pid} still running")
            time.sleep(0.05)


@attr.s
class Collectors:
    """The collector processes a test started; ``stop_all`` kills what is left of them."""

    started = attr.ib(factory=list)

    def spawn(self, directory, environ, args=(), preexec_fn=None, port_options="", port=None):
        collector = CollectorProcess.spawn(directory, environ, args, preexec_fn, port_options,
                                           port)
        self.started.append(collector)
        return collector

    def start(self, directory, environ, timeout=20.0, args=(), preexec_fn=None,
              port_options="", port=None):
        collector = self.spawn(directory, environ, args, preexec_fn, port_options, port)
        collector.wait_listening(timeout)
        return collector

    def stop_all(self):
        """Kill every one of them, even after one that would not die (raised at the end)."""
        stubborn = []
        for collector in self.started:
            try:
                collector.kill()
            except (AssertionError, subprocess.TimeoutExpired) as error:
                stubborn.append(error)
        if stubborn:
            raise AssertionError(f"collectors still running after SIGKILL: {stubborn}")


def children_of(pid):
    """Pids of the live child processes of ``pid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(name))
    return sorted(found)


def running(pid):
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def sigkill_tree(process):
    """SIGKILL a collector and its worker processes, workers first (else they get SIGTERM)."""
    for pid in children_of(process.pid):
        _sigkill(pid)
    process.send_signal(signal.SIGKILL)


def _sigkill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def listening(collector, pid):
    """True once worker ``pid`` has logged that its port is open."""
    for line in collector.output().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record["Pid"] == pid and record["Fields"]["msg"].startswith("listening on"):
                return True
    return False


def both_listening(collector):
    """The two workers' pids, once both serve."""
    workers = wait_for(lambda: len(children_of(collector.process.pid)) == 2
                       and children_of(collector.process.pid))
    for pid in workers:
        wait_for(lambda: listening(collector, pid))
    return workers
