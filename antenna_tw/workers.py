"""
``--workers N``: N collector processes under one supervising parent.

Each worker is a ``twistd antenna`` child with its own SO_REUSEPORT socket on
the shared port and its own spool shard (``SPOOL_DIR/worker-<i>``). The
parent restarts a worker that dies, passes SIGTERM on and waits for every
worker to finish draining, then lets its error reporter (Sentry) send what
it still holds. A worker stops by itself when the parent dies,
even by SIGKILL (PR_SET_PDEATHSIG), so no orphan keeps the port.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys

import attr
from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.logger import ILogObserver, LogLevel
from twisted.python.failure import Failure

from antenna_tw.footprint import worker_environment
from antenna_tw.logs import Logger
from antenna_tw.sentry import flush

SHARD = re.compile(r"^worker-(\d+)$")
PR_SET_PDEATHSIG = 1
TWISTD = "from twisted.scripts.twistd import run; run()"


def shard_directory(spool_dir, index):
    return os.path.join(spool_dir, f"worker-{index}")


def adopt_orphan_shards(spool_dir, index, count, log=None):
    """
    Move into worker ``index``'s shard the entries no live worker drains:
    those at the spool's top level (a single-process run) go to worker 0,
    and those of a shard ``worker-k`` with ``k >= count`` go to ``k % count``.
    Returns how many entries were moved. Runs at start-up, before the reactor.
    """
    # not imported by the parent, which needs none of the spool
    from antenna_tw.spool import DUMP_SUFFIX, SUFFIX

    own = shard_directory(spool_dir, index)
    os.makedirs(own, exist_ok=True)
    sources = [spool_dir] if index == 0 else []
    if os.path.isdir(spool_dir):
        for name in os.listdir(spool_dir):
            match = SHARD.match(name)
            if match and int(match.group(1)) >= count and int(match.group(1)) % count == index:
                sources.append(os.path.join(spool_dir, name))
    moved = 0
    for source in sources:
        names = [name for name in os.listdir(source) if not name.startswith(".")]
        # Dumps before the .crash file that commits them, as when they were written.
        for suffix in (DUMP_SUFFIX, SUFFIX):
            for filename in names:
                if filename.endswith(suffix):
                    os.replace(os.path.join(source, filename), os.path.join(own, filename))
                    moved += suffix == SUFFIX
    if moved and log is not None:
        log.info("adopted {count} spooled crashes from stopped workers", count=moved)
    return moved


def die_with_parent(parent_pid):
    """Ask Linux to SIGTERM this process when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class _WorkerProtocol(protocol.ProcessProtocol):
    def __init__(self, supervisor, index):
        self.supervisor = supervisor
        self.index = index

    def processEnded(self, reason):
        self.supervisor.worker_ended(self.index, reason.value)


@attr.s
class WorkerSupervisor(Service):
    """Keeps ``count`` worker processes running; stops them on stopService."""

    reactor = attr.ib()
    count = attr.ib()
    worker_args = attr.ib()  # index -> list of twistd arguments
    environ = attr.ib(factory=lambda: worker_environment(os.environ))
    stop_timeout = attr.ib(default=60.0)
    log_observer = attr.ib(default=None)
    log = Logger(namespace="antenna.workers")

    def __attrs_post_init__(self):
        self._processes = {}
        self._started_at = {}
        self._failures = {}
        self._respawns = {}
        self._stopping = False
        self._all_ended = []

    def setServiceParent(self, parent):
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self):
        super().startService()
        self._stopping = False
        for index in range(self.count):
            self._spawn(index)

    def _spawn(self, index):
        self._respawns.pop(index, None)
        # -P: no current directory on sys.path (as for the twistd script),
        # so a worker imports the same modules as its parent.
        args = [sys.executable, "-P", "-c", TWISTD] + self.worker_args(index)
        self._processes[index] = self.reactor.spawnProcess(
            _WorkerProtocol(self, index), sys.executable, args, env=self.environ,
            childFDs={0: "w", 1: 1, 2: 2})
        self._started_at[index] = self.reactor.seconds()
        self.log.info("worker {index} started, pid {pid}", index=index,
                      pid=self._processes[index].pid)

    def worker_ended(self, index, reason):
        self._processes.pop(index, None)
        if self._stopping:
            self.log.info("worker {index} stopped", index=index)
            if not self._processes:
                waiting, self._all_ended = self._all_ended, []
                for d in waiting:
                    d.callback(None)
            return
        ran = self.reactor.seconds() - self._started_at.get(index, 0)
        failures = 1 if ran > 30 else self._failures.get(index, 0) + 1
        self._failures[index] = failures
        delay = min(30.0, 0.5 * 2 ** (failures - 1))
        # With its failure, so that Sentry hears of it too (an OOM kill, a crash).
        self.log.failure("worker {index} ended ({reason}); restarting in {delay:.1f} s",
                         Failure(reason), LogLevel.error,
                         index=index, reason=str(reason), delay=delay)
        self._respawns[index] = self.reactor.callLater(delay, self._spawn, index)

    def pids(self):
        return {index: process.pid for index, process in self._processes.items()}

    def stopService(self):
        """
        SIGTERM every worker and wait for them (SIGKILL past ``stop_timeout``),
        then flush the error reporter: a failure logged just before the stop
        still reaches Sentry. A Deferred.
        """
        super().stopService()
        self._stopping = True
        for call in self._respawns.values():
            if call.active():
                call.cancel()
        self._respawns.clear()
        d = self._stop_workers()
        d.addCallback(lambda _: flush(self.log_observer, self.reactor))
        return d

    def _stop_workers(self):
        if not self._processes:
            return defer.succeed(None)
        for process in list(self._processes.values()):
            try:
                process.signalProcess("TERM")
            except OSError:
                pass
        d = defer.Deferred()
        self._all_ended.append(d)

        def kill_stragglers(result, timeout):
            for process in list(self._processes.values()):
                try:
                    process.signalProcess("KILL")
                except OSError:
                    pass

        d.addTimeout(self.stop_timeout, self.reactor, onTimeoutCancel=kill_stragglers)
        return d
