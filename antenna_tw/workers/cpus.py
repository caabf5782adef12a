"""
How many CPUs this process may use: the default of ``--workers``.

``os.cpu_count()`` counts the host's CPUs. A container, or a systemd unit
with ``CPUQuota=``, may use fewer: the CPUs it is pinned to
(``sched_getaffinity``) and its cgroup's CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) along the path from its own
cgroup to the root of the mount it sees. A quota of 1.5 CPUs counts as 2:
a second worker uses the half CPU that one worker would leave idle.

Everything is read from files under ``root`` (``/`` in production, a tree
of fake files in tests); nothing here imports the reactor.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Callable, Iterator


def usable_cpus(root: str | os.PathLike[str] = "/", affinity: int | None = None) -> int:
    """
    The CPUs this process may use, at least 1: the CPUs of its affinity
    mask (``affinity``, read from the kernel when None), capped by every CPU
    quota of its cgroup and the cgroup's ancestors under ``root``.
    """
    if affinity is None:
        affinity = len(os.sched_getaffinity(0))
    count = affinity
    for quota, period in _quotas(pathlib.Path(root)):
        if quota > 0 and period > 0:
            count = min(count, math.ceil(quota / period))
    return max(1, count)


def _quotas(root: pathlib.Path) -> Iterator[tuple[int, int]]:
    """``(quota, period)`` of every cgroup from this process's up to its mount's root."""
    try:
        mounts = (root / "proc/self/mountinfo").read_text().splitlines()
        groups = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return
    for line in mounts:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount_root, mount_point = fields[3], fields[4]
        fs_type, _source, options = (line.split(" - ", 1)[1].split() + ["", ""])[:3]
        if fs_type == "cgroup2":
            path = _group_path(groups, lambda hierarchy, controllers: hierarchy == "0")
            for directory in _ancestors(root, mount_point, mount_root, path):
                yield from _read_v2(directory / "cpu.max")
        elif fs_type == "cgroup" and "cpu" in options.split(","):
            path = _group_path(groups, lambda hierarchy, controllers:
                               "cpu" in controllers.split(","))
            for directory in _ancestors(root, mount_point, mount_root, path):
                yield from _read_v1(directory)


def _group_path(groups: list[str], wanted: Callable[[str, str], bool]) -> str | None:
    """This process's cgroup path in the hierarchy ``wanted(id, controllers)`` picks."""
    for line in groups:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if wanted(hierarchy, controllers):
            return path
    return None


def _ancestors(root: pathlib.Path, mount_point: str, mount_root: str,
               path: str | None) -> Iterator[pathlib.Path]:
    """The cgroup's directory under the mount, then each parent up to the mount point."""
    if path is None:
        return
    top = root / mount_point.lstrip("/")
    # In a cgroup namespace (a container) the path may lie outside what is
    # mounted: then the mount's top is the container's own cgroup.
    relative = os.path.relpath(path, mount_root)
    parts = [] if relative.startswith("..") or relative == "." else relative.split("/")
    for depth in range(len(parts), -1, -1):
        directory = top.joinpath(*parts[:depth])
        if directory.is_dir():
            yield directory


def _read_v2(path: pathlib.Path) -> Iterator[tuple[int, int]]:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return
    if quota != "max":
        yield int(quota), int(period)


def _read_v1(directory: pathlib.Path) -> Iterator[tuple[int, int]]:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return
    yield quota, period
