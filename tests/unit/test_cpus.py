"""
The default ``--workers``: CPUs from the affinity mask and the cgroup
quota, read from fake ``/proc`` and ``/sys/fs/cgroup`` trees.
"""

import os

import pytest

from antenna_tw.tap import Options
from antenna_tw.workers import usable_cpus

V2_MOUNT = ("30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - "
            "cgroup2 cgroup2 rw\n")
V1_CPU_MOUNT = ("32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - "
                "cgroup cgroup rw,cpu,cpuacct\n")


def tree(root, files):
    """Write ``{relative path: text}`` under ``root``; return ``root``."""
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def test_a_container_with_a_quota_of_two_cpus_on_a_host_of_sixteen(tmp_path):
    # docker --cpus 2: a cgroup namespace, the container's cgroup is the mount's top.
    root = tree(tmp_path, {"proc/self/mountinfo": V2_MOUNT, "proc/self/cgroup": "0::/\n",
                           "sys/fs/cgroup/cpu.max": "200000 100000\n"})
    assert usable_cpus(root, affinity=16) == 2


def test_no_quota_leaves_the_affinity(tmp_path):
    root = tree(tmp_path, {"proc/self/mountinfo": V2_MOUNT, "proc/self/cgroup": "0::/\n",
                           "sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert usable_cpus(root, affinity=3) == 3


def test_affinity_below_the_quota_wins(tmp_path):
    # taskset -c 0 (or docker --cpuset-cpus 0) with --cpus 4.
    root = tree(tmp_path, {"proc/self/mountinfo": V2_MOUNT, "proc/self/cgroup": "0::/\n",
                           "sys/fs/cgroup/cpu.max": "400000 100000\n"})
    assert usable_cpus(root, affinity=1) == 1


@pytest.mark.parametrize(("quota", "expected"), [
    ("150000 100000", 2),  # 1.5 CPUs: two workers use it all
    ("50000 100000", 1),   # half a CPU: still one worker
    ("100000 100000", 1),
    ("250000 50000", 5),   # another period
])
def test_a_fractional_quota_is_rounded_up(tmp_path, quota, expected):
    root = tree(tmp_path, {"proc/self/mountinfo": V2_MOUNT, "proc/self/cgroup": "0::/\n",
                           "sys/fs/cgroup/cpu.max": quota + "\n"})
    assert usable_cpus(root, affinity=8) == expected


def test_a_systemd_unit_on_the_host_the_lowest_quota_on_the_path(tmp_path):
    # CPUQuota=300% on the service, 200% on its slice: the slice's wins.
    service = "sys/fs/cgroup/system.slice/antenna-tw.service"
    root = tree(tmp_path, {
        "proc/self/mountinfo": V2_MOUNT,
        "proc/self/cgroup": "0::/system.slice/antenna-tw.service\n",
        "sys/fs/cgroup/system.slice/cpu.max": "200000 100000\n",
        f"{service}/cpu.max": "300000 100000\n",
        "sys/fs/cgroup/other.slice/cpu.max": "100000 100000\n",  # not ours
    })
    assert usable_cpus(root, affinity=16) == 2


def test_a_path_outside_the_mount_means_the_mount_is_ours(tmp_path):
    # /proc/self/cgroup names the host's path, the mount shows only our cgroup.
    root = tree(tmp_path, {
        "proc/self/mountinfo": "30 23 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "proc/self/cgroup": "0::/kubepods/pod1/abc\n",
        "sys/fs/cgroup/cpu.max": "300000 100000\n",
    })
    assert usable_cpus(root, affinity=16) == 3


@pytest.mark.parametrize(("ours", "expected"), [
    ("250000", 3),  # 2.5 CPUs in our cgroup, none above it
    ("-1", 16),     # no quota anywhere: the affinity
])
def test_cgroup_v1_quota_and_period(tmp_path, ours, expected):
    root = tree(tmp_path, {
        "proc/self/mountinfo": V1_CPU_MOUNT,
        "proc/self/cgroup": "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": ours + "\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })
    assert usable_cpus(root, affinity=16) == expected


def test_hybrid_hierarchy_the_cpu_controller_in_v1(tmp_path):
    # cgroup2 mounted at unified/ without the cpu controller (no cpu.max there).
    root = tree(tmp_path, {
        "proc/self/mountinfo": (
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
            "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"),
        "proc/self/cgroup": "2:cpuacct:/\n1:cpu:/\n0::/\n",
        "sys/fs/cgroup/unified/cgroup.controllers": "",
        "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "100000\n",
        "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
        "sys/fs/cgroup/cpuacct/cpu.cfs_quota_us": "50000\n",  # not the cpu controller
        "sys/fs/cgroup/cpuacct/cpu.cfs_period_us": "1000000\n",
    })
    assert usable_cpus(root, affinity=4) == 1


@pytest.mark.parametrize("files", [
    {},  # no /proc at all
    {"proc/self/mountinfo": V2_MOUNT, "proc/self/cgroup": "0::/\n"},  # no cpu.max
    {"proc/self/mountinfo": V2_MOUNT, "proc/self/cgroup": "0::/\n",
     "sys/fs/cgroup/cpu.max": "garbage\n"},
    {"proc/self/mountinfo": "not a mount line\n", "proc/self/cgroup": "0::/\n"},
])
def test_what_cannot_be_read_leaves_the_affinity(tmp_path, files):
    assert usable_cpus(tree(tmp_path, files), affinity=5) == 5


def test_never_fewer_than_one(tmp_path):
    assert usable_cpus(tmp_path, affinity=0) == 1


def test_this_machine_by_default():
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_the_workers_option_defaults_to_the_usable_cpus():
    options = Options()
    options.parseOptions([])
    assert options["workers"] == usable_cpus()
    options = Options()
    options.parseOptions(["--workers", "0"])
    assert options["workers"] == 0
