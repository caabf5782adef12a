"""
``--workers N``: several collector processes serving one port on one node.

The one seam for running several processes; only the composition root
(``antenna_tw.app``) and ``twistd antenna`` (``antenna_tw.tap``, the plugin)
use it, and only through the names below (``tests/unit/test_workers_seam.py``):

- ``WorkerSupervisor``: the parent, which keeps N workers running and stops
  them in order (``supervisor.py``);
- ``Worker``: this process as one of them: its spool shard and share of the
  limits, the parent's listening sockets that it adopts (``listener.py``),
  and what its heartbeat learns of the other shards (``shardstatus.py``, an
  ``antenna_tw.health.IOtherShards``);
- ``parse_port``, ``PortError``, ``UnknownPortKind`` and ``open_listeners``:
  the ``--port`` descriptions parsed once, up front (``ports.py``), and the
  parent's listening sockets, one per port, that every worker serves;
- ``console_shards``: every shard's status and spool files, which the
  parent's console reads (``shardstatus.py``'s ``ConsoleShards``);
- the footprint functions: what keeps the parent and TLS-free workers
  without pyOpenSSL (``footprint.py``);
- ``usable_cpus``: the CPUs this process may use (affinity, cgroup quota),
  the default worker count (``cpus.py``).

The rest of the collector (health, intake, spool, submit) knows nothing of
workers. Importing this package imports neither the reactor nor the web
stack: the parent imports it before anything else.
"""

from __future__ import annotations

from typing import Any

from antenna_tw.workers.cpus import usable_cpus
from antenna_tw.workers.footprint import (
    builtin_storage,
    forbid_pyopenssl,
    publisher_checks_without_tls,
    publisher_needs_tls,
    storage_needs_tls,
    without_pyopenssl,
)
from antenna_tw.workers.listener import EveryPortEndpoint
from antenna_tw.workers.ports import (
    Port,
    PortError,
    SharedPort,
    UnknownPortKind,
    check_shareable,
    open_listeners,
    parse_port,
    socket_activation,
)
from antenna_tw.workers.supervisor import WorkerSupervisor
from antenna_tw.workers.worker import Worker

__all__ = [
    "EveryPortEndpoint",
    "Port",
    "PortError",
    "SharedPort",
    "UnknownPortKind",
    "Worker",
    "WorkerSupervisor",
    "builtin_storage",
    "check_shareable",
    "console_shards",
    "forbid_pyopenssl",
    "open_listeners",
    "parse_port",
    "publisher_checks_without_tls",
    "publisher_needs_tls",
    "socket_activation",
    "storage_needs_tls",
    "usable_cpus",
    "without_pyopenssl",
]


def console_shards(spool_dir: str, count: int, reactor: Any, threadpool: Any) -> Any:
    """
    The ``count`` workers' shards under ``spool_dir`` as the parent's console
    reads them (an ``antenna_tw.console.node.INodeSource``). Imported here,
    when the console is on: the web stack comes with it.
    """
    from antenna_tw.workers.shardstatus import ConsoleShards
    from antenna_tw.workers.worker import shard_directory

    return ConsoleShards(tuple(shard_directory(spool_dir, index) for index in range(count)),
                         reactor, threadpool)
