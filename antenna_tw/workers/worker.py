"""
One worker of ``--workers N``: its spool shard, its share of the node's
limits, its listening endpoint, and what it knows of the other shards.

Each worker is a ``twistd antenna`` child that serves the parent's listening
sockets, inherited as descriptors 3 and up (``listener.py``), and has its own spool
shard (``SPOOL_DIR/worker-<i>``). A worker stops by itself when the parent
dies, even by SIGKILL (PR_SET_PDEATHSIG), so no orphan keeps the port.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attr

from antenna_tw.logs import Logger
from antenna_tw.workers.listener import WORKER_FD, AdoptedPortEndpoint, EveryPortEndpoint

if TYPE_CHECKING:
    from twisted.internet.interfaces import IStreamServerEndpoint
    from twisted.python.threadpool import ThreadPool

    from antenna_tw.config import Config
    from antenna_tw.health import IOtherShards
    from antenna_tw.workers.ports import Port
    from antenna_tw.workers.shardstatus import StatusPublisher

SHARD = re.compile(r"^worker-(\d+)$")
PR_SET_PDEATHSIG = 1


def shard_directory(spool_dir: str, index: int) -> str:
    """The spool shard of worker ``index`` under ``spool_dir``."""
    return os.path.join(spool_dir, f"worker-{index}")


def adopt_orphan_shards(spool_dir: str, index: int, count: int,
                        log: Logger | None = None) -> int:
    """
    Move into worker ``index``'s shard the entries no live worker drains:
    those at the spool's top level (a single-process run) go to worker 0,
    and those of a shard ``worker-k`` with ``k >= count`` go to ``k % count``.
    Returns how many entries were moved. Runs at start-up, before the reactor.
    """
    # not imported by the parent, which needs none of the spool
    from antenna_tw.spool import DUMP_SUFFIX, STORED_SUFFIX, SUFFIX

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
        # Dumps (and stored markers) before the .crash file that commits them,
        # as when they were written.
        for suffix in (DUMP_SUFFIX, STORED_SUFFIX, SUFFIX):
            for filename in names:
                if filename.endswith(suffix):
                    os.replace(os.path.join(source, filename), os.path.join(own, filename))
                    moved += suffix == SUFFIX
    if moved and log is not None:
        log.info("adopted {count} spooled crashes from stopped workers", count=moved)
    return moved


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this process when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@attr.s(frozen=True)
class Worker:
    """
    This process as worker ``index`` of ``count``, started by the parent
    ``parent_pid``, with its shard under the node's ``spool_dir``.
    """

    index: int = attr.ib()
    count: int = attr.ib()
    parent_pid: int = attr.ib()
    spool_dir: str = attr.ib()

    @property
    def shard(self) -> str:
        """This worker's spool shard."""
        return shard_directory(self.spool_dir, self.index)

    def start(self) -> None:
        """
        Before the reactor runs: die with the parent, and adopt the spooled
        crashes that no live worker drains.
        """
        die_with_parent(self.parent_pid)
        adopt_orphan_shards(self.spool_dir, self.index, self.count)

    def configure(self, config: Config) -> Config:
        """``config`` for this worker: its shard, its share of the node's size limits."""
        return attr.evolve(
            config,
            spool=attr.evolve(
                config.spool,
                spool_dir=self.shard,
                spool_max_bytes=config.spool.spool_max_bytes // self.count),
            intake=attr.evolve(
                config.intake,
                max_inflight_bytes=config.intake.max_inflight_bytes // self.count))

    def endpoint(self, reactor: Any, ports: Sequence[Port]) -> IStreamServerEndpoint:
        """
        This worker's listening endpoint: the parent's listening socket of
        each of ``ports`` (the parsed ``--port`` descriptions, in order),
        inherited as descriptors ``WORKER_FD``, ``WORKER_FD + 1``, ... and
        shared with the other workers, adopted with
        ``reactor.adoptStreamPort``, behind TLS for an ``ssl:`` port.
        """
        return EveryPortEndpoint([AdoptedPortEndpoint(reactor, WORKER_FD + offset, port.tls)
                                  for offset, port in enumerate(ports)])

    def other_shards(self) -> IOtherShards | None:
        """The other workers' shards, for this worker's heartbeat; None when it is alone."""
        if self.count < 2:
            return None
        from antenna_tw.workers.shardstatus import SiblingShards

        return SiblingShards(tuple(shard_directory(self.spool_dir, other)
                                   for other in range(self.count) if other != self.index))

    def status_publisher(self, directory: str, retrying: Callable[[], int],
                         reactor: Any, threadpool: ThreadPool, figures: Any = None,
                         extra: Callable[[], dict[str, Any]] | None = None
                         ) -> StatusPublisher | None:
        """
        What publishes, in spool ``directory``, the ``retrying()`` count that
        the others' heartbeats cannot read from files, and with the console
        on, the ``figures`` and ``extra()`` its parent's console reads; None
        when it is alone and the console is off.
        """
        if self.count < 2 and figures is None:
            return None
        from antenna_tw.workers.shardstatus import StatusPublisher

        return StatusPublisher(directory, retrying, reactor, threadpool,
                               figures=figures, extra=extra)
