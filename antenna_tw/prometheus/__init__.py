"""
Prometheus metrics for the whole node: ``METRICS_CLASS=prometheus``.

``prometheus_client``'s multi-process mode: each process that counts
(every ``--workers`` worker, or the single process of ``--workers 0``)
writes its values to its own memory-mapped files in one directory, and
``GET /metrics``, answered by whichever process the connection reaches,
adds up the files of every process (``backend.py``). The directory must be
in ``PROMETHEUS_MULTIPROC_DIR`` before ``prometheus_client`` is imported:
the process the operator started makes a private one (``private_directory``)
and, with workers, passes it on in their environment; it is removed when
that process stops, or, after a SIGKILL, by the next start (its name holds
the pid of the process that made it).

This module imports nothing from ``prometheus_client`` nor the reactor:
the ``--workers`` parent, which never counts, imports it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

from antenna_tw.config import metrics_class_names
from antenna_tw.files import process_running

#: The environment variable ``prometheus_client`` reads its directory from.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "antenna-tw-metrics-"
_OWNED = re.compile(re.escape(PREFIX) + r"(\d+)-")


def wanted(metrics_class: str) -> bool:
    """True when METRICS_CLASS names ``prometheus``."""
    return "prometheus" in metrics_class_names(metrics_class)


def remove_orphans(parent: str) -> list[str]:
    """
    Remove the metric directories in ``parent`` that this user's processes
    made and that outlived them (a SIGKILL skips the removal at shutdown);
    the paths removed. A directory whose pid now names another live process
    stays: a few files kept are better than a live node's counts lost.
    """
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        owner = _OWNED.match(name)
        path = os.path.join(parent, name)
        if owner is None or process_running(int(owner.group(1))):
            continue
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def private_directory(reactor: Any) -> str:
    """
    A new empty directory for the node's metric files, removed after
    ``reactor`` shuts down (every worker has ended by then). A directory
    inherited in the environment is not used: files left by an earlier run
    would be counted again. Orphans of earlier runs are removed first.
    Called at start-up, before the reactor runs.
    """
    remove_orphans(tempfile.gettempdir())
    path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    reactor.addSystemEventTrigger("after", "shutdown", shutil.rmtree, path, True)
    return path


def mark_process_dead(pid: int, path: str) -> None:
    """
    Worker ``pid`` has ended: its gauges stop counting (its counters and
    histograms stay in the node's totals).
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


def directory_in_environment() -> str:
    """``PROMETHEUS_MULTIPROC_DIR``; ValueError unless it names a directory."""
    path = os.environ.get(MULTIPROC_DIR, "")
    if not path or not os.path.isdir(path):
        raise ValueError(
            f"METRICS_CLASS=prometheus needs {MULTIPROC_DIR} to name a directory before "
            f"prometheus_client is imported ({MULTIPROC_DIR}={path!r}); `twistd antenna` sets it")
    return path
