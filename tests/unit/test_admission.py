"""
Admission: the in-flight byte budget of uploads being received and the
spool's limits (max bytes, min free bytes, shutting down), in one object.
"""

import attr
from twisted.internet import task

from antenna_tw.admission import RECENT_WRITE_FAILURE, Admission


@attr.s
class FakeSpool:
    total_bytes = attr.ib(default=0)
    writing_bytes = attr.ib(default=0)
    free = attr.ib(default=10**12)
    statvfs_calls = attr.ib(default=0)

    def free_bytes(self):
        self.statvfs_calls += 1
        if isinstance(self.free, Exception):
            raise self.free
        return self.free


def admission(spool=None, clock=None, max_inflight_bytes=10**9):
    return Admission(spool or FakeSpool(), clock or task.Clock(), max_bytes=1000,
                     min_free_bytes=500, max_inflight_bytes=max_inflight_bytes)


def test_busy_reasons():
    spool = FakeSpool()
    gate = admission(spool)
    assert gate.busy() is None
    spool.total_bytes = 1001
    assert gate.busy() == "spool is over SPOOL_MAX_BYTES"
    spool.total_bytes, spool.writing_bytes = 600, 401  # writes in flight count
    assert gate.busy() == "spool is over SPOOL_MAX_BYTES"
    assert gate.used_bytes() == 1001
    spool.writing_bytes = 400
    assert gate.busy() is None
    gate.close()
    assert gate.closing
    assert gate.busy() == "shutting down"


def test_free_space_is_read_at_most_once_per_interval():
    clock = task.Clock()
    spool = FakeSpool(free=400)
    gate = admission(spool, clock)
    assert gate.busy() == "disk under the spool is nearly full"
    spool.free = 10_000
    assert gate.busy() == "disk under the spool is nearly full"  # cached
    assert spool.statvfs_calls == 1
    clock.advance(1.0)
    assert gate.busy() is None
    assert gate.free_bytes() == 10_000
    assert spool.statvfs_calls == 2
    spool.free = OSError("gone")
    clock.advance(1.0)
    assert gate.busy() == "disk under the spool is nearly full"
    assert gate.free_bytes() == 0


def test_a_lone_upload_is_never_busy_for_memory():
    gate = admission(max_inflight_bytes=100)
    hold = gate.hold()
    assert hold.update(50) is False
    assert hold.update(10_000) is False  # alone: MAX_DECOMPRESSED_SIZE bounds it
    assert gate.inflight_bytes == 10_000
    hold.release()
    assert gate.inflight_bytes == 0
    hold.release()  # twice is harmless
    assert gate.inflight_bytes == 0


def test_the_upload_that_passes_the_budget_while_others_hold_bytes_is_busy():
    gate = admission(max_inflight_bytes=100)
    first, second = gate.hold(), gate.hold()
    assert first.update(60) is False
    assert second.update(40) is False  # 100: at the budget, not past it
    assert second.update(41) is True
    assert gate.inflight_bytes == 101
    second.release()
    assert gate.inflight_bytes == 60
    assert first.update(70) is False  # alone again
    first.release()
    assert gate.inflight_bytes == 0


def test_the_spool_limits_and_the_budget_are_independent():
    spool = FakeSpool(total_bytes=5000)
    gate = admission(spool, max_inflight_bytes=100)
    assert gate.busy() == "spool is over SPOOL_MAX_BYTES"
    assert gate.hold().update(10) is False


def test_the_last_failed_spool_write_is_reported_while_recent_and_until_a_write_succeeds():
    clock = task.Clock()
    gate = admission(clock=clock)
    assert gate.write_failure() is None
    gate.write_failed("No space left on device (ENOSPC)")
    clock.advance(3)
    assert gate.write_failure() == (
        "crashes are refused: the last spool write failed 3 s ago: "
        "No space left on device (ENOSPC)")
    gate.write_succeeded()
    assert gate.write_failure() is None
    gate.write_failed("No space left on device (ENOSPC)")
    clock.advance(RECENT_WRITE_FAILURE + 1)  # nothing written since: nothing known now
    assert gate.write_failure() is None
    assert gate.busy() is None  # a failed write alone does not turn crashes away
