"""
The parent of ``--workers N``: keeps N ``twistd antenna`` worker processes
running, and stops them in order.

A worker that dies is restarted after a delay that doubles while it keeps
dying young (``antenna_tw.backoff.Backoff``). On stop the parent passes
SIGTERM on and waits for every worker to finish draining (SIGKILL past the
stop timeout), then lets its error reporter (Sentry) send what it still
holds. The workers write their logs straight to the parent's stdout and
stderr, or, when the parent logs to a file (twistd's ``--logfile``, a
daemon), to pipes whose lines it writes there (``relay``). They serve the
parent's listening sockets (``listener.py``): they
stay open while a worker restarts, so connections wait in their queues
instead of being refused. Why this is not ``twisted.runner.procmon.ProcessMonitor``:
docs/architecture.rst, *Choices worth knowing*.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attr
from twisted.application.service import IServiceCollection, Service
from twisted.internet import defer, protocol
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.logger import ILogObserver, LogLevel
from twisted.python.failure import Failure

from antenna_tw.backoff import Backoff
from antenna_tw.logs import Logger
from antenna_tw.prometheus import MULTIPROC_DIR, mark_process_dead
from antenna_tw.sentry import flush
from antenna_tw.workers.footprint import worker_environment
from antenna_tw.workers.listener import WORKER_FD

TWISTD = "from twisted.scripts.twistd import run; run()"
# A worker that ran this long before it died starts again from the shortest delay.
STABLE_RUN = 30.0


def _restart_backoff() -> Backoff:
    # 0.5 s after a first death, doubling up to 30 s; the ceiling is used,
    # without jitter: one parent restarts its own workers.
    return Backoff(base=0.5, cap=30.0)


# A worker's output held back waiting for the end of its line, at most.
MAX_PARTIAL_LINE = 64 * 1024


class _WorkerProtocol(protocol.ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        # Only with a relay (pipes for 1 and 2): whole lines, so that two
        # workers' lines never interleave.
        relay = self.supervisor.relay
        if relay is None or childFD not in self._partial:
            return
        data = self._partial[childFD] + data
        end = data.rfind(b"\n") + 1
        if not end and len(data) < MAX_PARTIAL_LINE:
            self._partial[childFD] = data
            return
        if not end:
            end = len(data)
        self._partial[childFD] = data[end:]
        relay(data[:end], childFD == 2)

    def processEnded(self, reason: Failure) -> None:
        relay = self.supervisor.relay
        for fd, left in self._partial.items():
            if left and relay is not None:
                relay(left + b"\n", fd == 2)
        self.supervisor.worker_ended(self.index, reason)


@attr.s
class WorkerSupervisor(Service):
    """
    Keeps ``count`` worker processes running; stops them on stopService.
    ``listeners``: the listening sockets (one per ``--port``) every worker
    gets as descriptors ``WORKER_FD``, ``WORKER_FD + 1``, ...; this service
    closes them on stopService (the workers' copies keep each open until the
    last of them stops listening).
    """

    # IReactorProcess and IReactorTime, and a thread pool for the flush.
    reactor: Any = attr.ib()
    count: int = attr.ib()
    # index -> the twistd arguments of that worker
    worker_args: Callable[[int], list[str]] = attr.ib()
    environ: Mapping[str, str] = attr.ib(factory=lambda: worker_environment(os.environ))
    stop_timeout: float = attr.ib(default=60.0)
    log_observer: ILogObserver | None = attr.ib(default=None)
    restart_backoff: Backoff = attr.ib(factory=_restart_backoff)
    listeners: Sequence[socket.socket] = attr.ib(default=())
    # METRICS_CLASS=prometheus: the directory of the workers' metric files.
    metrics_dir: str | None = attr.ib(default=None)
    #: Where the workers' output goes when it is not the parent's stdout and
    #: stderr: ``relay(lines, from_stderr)``, given their whole lines.
    relay: Callable[[bytes, bool], None] | None = attr.ib(default=None)
    log = Logger(namespace="antenna.workers")

    def __attrs_post_init__(self) -> None:
        self._processes: dict[int, IProcessTransport] = {}
        self._started_at: dict[int, float] = {}
        self._pids: dict[int, int] = {}
        self._failures: dict[int, int] = {}
        self._respawns: dict[int, IDelayedCall] = {}
        self._stopping = False
        self._all_ended: list[defer.Deferred[None]] = []

    def setServiceParent(self, parent: IServiceCollection) -> None:
        # twistd asks its Application for an ILogObserver before it starts logging.
        set_component = getattr(parent, "setComponent", None)
        if self.log_observer is not None and set_component is not None:
            set_component(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        for index in range(self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._respawns.pop(index, None)
        # -P: no current directory on sys.path (as for the twistd script),
        # so a worker imports the same modules as its parent.
        args = [sys.executable, "-P", "-c", TWISTD] + self.worker_args(index)
        # childFDs 1 and 2: a worker's log lines go out as it wrote them, or
        # through pipes to ``relay``.
        child_fds: dict[int, int | str] = (
            {0: "w", 1: 1, 2: 2} if self.relay is None else {0: "w", 1: "r", 2: "r"})
        for offset, listener in enumerate(self.listeners):
            child_fds[WORKER_FD + offset] = listener.fileno()
        env = dict(self.environ)
        if self.metrics_dir is not None:
            env[MULTIPROC_DIR] = self.metrics_dir
        self._processes[index] = self.reactor.spawnProcess(
            _WorkerProtocol(self, index), sys.executable, args, env=env,
            childFDs=child_fds)
        self._pids[index] = self._processes[index].pid
        self._started_at[index] = self.reactor.seconds()
        self.log.info("worker {index} started, pid {pid}", index=index,
                      pid=self._processes[index].pid)

    def worker_ended(self, index: int, reason: Failure) -> None:
        """Worker ``index`` exited (``reason``): restart it, or count it out when stopping."""
        self._processes.pop(index, None)
        pid = self._pids.pop(index, None)
        if self.metrics_dir is not None and pid is not None:
            mark_process_dead(pid, self.metrics_dir)  # its gauges no longer count
        if self._stopping:
            self.log.info("worker {index} stopped", index=index)
            if not self._processes:
                waiting, self._all_ended = self._all_ended, []
                for d in waiting:
                    d.callback(None)
            return
        ran = self.reactor.seconds() - self._started_at.get(index, 0)
        failures = 1 if ran > STABLE_RUN else self._failures.get(index, 0) + 1
        self._failures[index] = failures
        delay = self.restart_backoff.ceiling(failures)
        # With its failure, so that Sentry hears of it too (an OOM kill, a crash).
        self.log.failure("worker {index} ended ({reason}); restarting in {delay:.1f} s",
                         reason, LogLevel.error,
                         index=index, reason=str(reason.value), delay=delay)
        self._respawns[index] = self.reactor.callLater(delay, self._spawn, index)

    def pids(self) -> dict[int, int | None]:
        """The pid of each running worker, by index."""
        return {index: process.pid for index, process in self._processes.items()}

    def stopService(self) -> defer.Deferred[None]:
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
        for listener in self.listeners:
            # No worker starts again; a socket closes when the last worker's
            # copy does, as each stops listening before it drains.
            listener.close()
        d.addCallback(lambda _: flush(self.log_observer, self.reactor))
        return d

    def _stop_workers(self) -> defer.Deferred[None]:
        if not self._processes:
            return defer.succeed(None)
        for process in list(self._processes.values()):
            try:
                process.signalProcess("TERM")
            except (OSError, ProcessExitedAlready):
                pass  # it has exited; its end is on its way
        d: defer.Deferred[None] = defer.Deferred()
        self._all_ended.append(d)

        def kill_stragglers(result: object, timeout: float) -> None:
            # A last resort: a worker stops within SHUTDOWN_TIMEOUT plus a
            # second (app.STOP_GRACE) whatever storage does.
            for index, process in list(self._processes.items()):
                self.log.error("worker {index} (pid {pid}) still running {timeout:.0f} s after "
                               "SIGTERM; SIGKILL", index=index, pid=process.pid,
                               timeout=timeout)
                try:
                    process.signalProcess("KILL")
                except (OSError, ProcessExitedAlready):
                    pass

        d.addTimeout(self.stop_timeout, self.reactor, onTimeoutCancel=kill_stragglers)
        return d
