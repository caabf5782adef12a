"""
The crash movers on a task.Clock: the backoff schedule (capped, jittered,
seeded), "never dropped" after any number of failures, shutdown, the
two ways of moving (whole moves in the pool for IFileCrashStorage), and the
in-memory hand-off with gathered loads and removals for storage that saves
on the reactor.
"""

import os
import random

import attr
import pytest
from twisted.internet import defer, task
from zope.interface import implementer

from antenna_tw.backoff import Backoff
from antenna_tw.crash import Crash, SpooledCrash
from antenna_tw.crashmover import MOVE_BATCH, OUTAGE_AFTER, CrashMover
from antenna_tw.ext.fs import FSCrashStorage
from antenna_tw.ext.noop import NoOpCrashStorage
from antenna_tw.spool import CORRUPT_DIR, CorruptEntry, Spool, SpoolEntry
from antenna_tw.storage import CrashDamaged, IFileCrashStorage
from tests.helpers import ImmediatePool, ImmediateReactor, ManualPool


@attr.s
class MemorySpool:
    """The spool's load/remove/quarantine, in memory and synchronous."""

    crashes = attr.ib(factory=dict)  # filename -> Crash or CorruptEntry
    removed = attr.ib(factory=list)
    loaded = attr.ib(factory=list)
    quarantined = attr.ib(factory=list)

    def add(self, crash_id, created=0.0, sequence=None):
        sequence = len(self.crashes) if sequence is None else sequence
        filename = f"{sequence:020d}-{crash_id}.crash"
        self.crashes[filename] = Crash(crash_id, {"uuid": crash_id},
                                       {"upload_file_minidump": b"MDMP"})
        return SpoolEntry(filename, crash_id, 100, created)

    def load(self, entry):
        crash = self.crashes[entry.filename]
        if isinstance(crash, Exception):
            return defer.fail(crash)
        return defer.succeed(crash)

    def remove(self, entry):
        self.removed.append(entry.filename)
        del self.crashes[entry.filename]
        return defer.succeed(None)

    def quarantine(self, entry, reason):
        self.quarantined.append((entry.filename, reason))
        del self.crashes[entry.filename]
        return defer.succeed(None)


@attr.s
class FlakyStorage:
    """Fails the first ``failures`` saves, then stores; records when each try came."""

    clock = attr.ib()
    failures = attr.ib(default=0)
    seconds_per_save = attr.ib(default=0.0)
    attempts = attr.ib(factory=list)  # (clock time, crash id)
    saved = attr.ib(factory=list)
    cancelled = attr.ib(factory=list)

    def save_crash(self, crash):
        self.attempts.append((self.clock.seconds(), crash.crash_id))
        if self.failures:
            self.failures -= 1
            return defer.fail(OSError("storage is down"))
        if not self.seconds_per_save:
            self.saved.append(crash.crash_id)
            return defer.succeed(None)
        d = task.deferLater(self.clock, self.seconds_per_save, self.saved.append, crash.crash_id)
        d.addErrback(lambda failure: self.cancelled.append(crash.crash_id) or failure)
        return d


@attr.s
class RecordingMetrics:
    records = attr.ib(factory=list)

    def incr(self, name, value=1, tags=None):
        self.records.append(("incr", name, value))

    def gauge(self, name, value, tags=None):
        self.records.append(("gauge", name, value))

    def timing(self, name, milliseconds, tags=None):
        self.records.append(("timing", name, milliseconds))

    def histogram(self, name, value, tags=None):
        self.records.append(("histogram", name, value))

    def named(self, name):
        return [value for _, metric, value in self.records if metric == name]


def make_mover(clock, storage, spool=None, workers=1, base=1.0, cap=8.0, seed=42,
               outage_after=OUTAGE_AFTER):
    spool = spool if spool is not None else MemorySpool()
    metrics = RecordingMetrics()
    mover = CrashMover(spool, storage, clock, metrics, workers=workers,
                       backoff=Backoff(base, cap, random.Random(seed)),
                       outage_after=outage_after)
    return mover, spool, metrics


def fired(d):
    results = []
    d.addBoth(results.append)
    return results


# -- the schedule ---------------------------------------------------------


def test_backoff_ceiling_doubles_up_to_the_cap():
    backoff = Backoff(base=1.0, cap=30.0)
    assert [backoff.ceiling(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.ceiling(10_000) == 30.0  # no overflow after many failures


def test_backoff_delays_are_jittered_between_half_the_base_and_the_ceiling():
    backoff = Backoff(base=1.0, cap=30.0, rng=random.Random(7))
    delays = [backoff.delay(n) for n in range(1, 200)]
    for failures, delay in enumerate(delays, 1):
        assert 0.5 <= delay <= backoff.ceiling(failures)
    capped = delays[10:]
    assert max(capped) <= 30.0
    assert len({round(delay, 6) for delay in capped}) > 150  # jitter, not a fixed step
    assert sum(capped) / len(capped) == pytest.approx(15.0, rel=0.2)  # uniform under the cap


def test_backoff_is_reproducible_with_a_seeded_rng():
    first = [Backoff(1.0, 30.0, random.Random(3)).delay(n) for n in range(1, 20)]
    again = [Backoff(1.0, 30.0, random.Random(3)).delay(n) for n in range(1, 20)]
    other = [Backoff(1.0, 30.0, random.Random(4)).delay(n) for n in range(1, 20)]
    assert first == again
    assert first != other


def test_failed_saves_are_retried_on_the_backoff_schedule():
    clock = task.Clock()
    storage = FlakyStorage(clock, failures=7)
    # One crash failing is not an outage here: only its own schedule counts.
    mover, spool, _ = make_mover(clock, storage, base=1.0, cap=8.0, seed=42, outage_after=100)
    entry = spool.add("a")
    mover.enqueue(entry)
    mover.start()
    twin = Backoff(1.0, 8.0, random.Random(42))  # draws the same delays
    delays = []
    for failures in range(1, 8):
        delay = twin.delay(failures)
        delays.append(delay)
        due = storage.attempts[-1][0] + delay
        clock.advance(due - clock.seconds() - 0.001)
        assert len(storage.attempts) == failures  # not a moment early
        clock.advance(0.002)
        assert len(storage.attempts) == failures + 1  # and on time
    assert all(0.5 <= delay <= 8.0 for delay in delays)
    assert delays[-1] > 4.0  # grew past the first ceilings
    assert storage.saved == ["a"]
    assert spool.removed == [entry.filename]
    assert mover.queue_length() == 0


@pytest.mark.parametrize("failures", [1, 25, 1000])
def test_a_crash_is_never_dropped_whatever_the_number_of_failures(failures):
    clock = task.Clock()
    storage = FlakyStorage(clock, failures=failures)
    mover, spool, metrics = make_mover(clock, storage, base=0.5, cap=5.0)
    entry = spool.add("a")
    mover.enqueue(entry)
    mover.start()
    for _ in range(failures * 2 + 10):
        if storage.saved:
            break
        assert mover.queue_length() == 1
        assert spool.removed == []  # the spool keeps it while it fails
        assert mover.failures(entry) == len(storage.attempts)
        clock.advance(5.0)
    assert len(storage.attempts) == failures + 1
    assert storage.saved == ["a"]
    assert spool.removed == [entry.filename]
    assert mover.queue_length() == 0 and mover.failures(entry) == 0
    assert len(metrics.named("breakpad_resource.save_crash_exception.count")) == failures
    assert metrics.named("breakpad_resource.save_crash.count") == [1]


def test_crashes_failing_together_retry_at_different_times():
    clock = task.Clock()
    storage = FlakyStorage(clock, failures=20)
    mover, spool, _ = make_mover(clock, storage, workers=4, base=1.0, cap=30.0,
                                 outage_after=100)
    for n in range(20):
        mover.enqueue(spool.add(f"c{n}"))
    mover.start()
    assert len(storage.attempts) == 20  # every one failed once, at time 0
    clock.advance(0.5)  # the earliest any retry may come
    assert len(storage.attempts) == 20
    clock.advance(0.25)
    retried = len(storage.attempts) - 20
    assert 0 < retried < 20  # spread over [0.5, 1] s by the jitter
    for _ in range(100):
        clock.advance(1.0)
    assert sorted(storage.saved) == sorted(f"c{n}" for n in range(20))
    assert mover.queue_length() == 0


def test_an_outage_is_probed_one_save_at_a_time_with_growing_waits():
    clock = task.Clock()
    storage = FlakyStorage(clock, failures=1_000_000)
    mover, spool, _ = make_mover(clock, storage, workers=4, base=1.0, cap=30.0)
    for n in range(1000):
        mover.enqueue(spool.add(f"c{n}"))
    mover.start()
    # The first OUTAGE_AFTER saves fail back to back, then storage looks down.
    assert len(storage.attempts) == OUTAGE_AFTER
    assert mover.storage_looks_down()
    for _ in range(600):  # ten minutes
        clock.advance(1.0)
    probes = [when for when, _ in storage.attempts[OUTAGE_AFTER:]]
    # About one try per half-ceiling once the waits reach the 30 s cap, not
    # one per crash per backoff: 1000 crashes would make thousands.
    assert 10 < len(probes) < 80, len(probes)
    assert all(later >= earlier for earlier, later in zip(probes, probes[1:]))
    gaps = [later - earlier for earlier, later in zip(probes, probes[1:])]
    assert max(gaps[-5:]) > 5.0  # the waits grew
    assert mover.queue_length() == 1000 and storage.saved == []
    assert len(clock.getDelayedCalls()) <= 2  # the heap's timer and one probe wait

    storage.failures = 0  # storage is back: the next probe succeeds and all flow
    for _ in range(40):
        clock.advance(1.0)
    assert not mover.storage_looks_down()
    for _ in range(200):
        clock.advance(1.0)
    assert sorted(storage.saved) == sorted(f"c{n}" for n in range(1000))
    assert mover.queue_length() == 0 and mover.retrying() == 0


def test_one_crash_that_always_fails_does_not_stop_the_others():
    clock = task.Clock()

    @attr.s
    class PoisonStorage(FlakyStorage):
        def save_crash(self, crash):
            if crash.crash_id == "poison":
                self.attempts.append((self.clock.seconds(), crash.crash_id))
                return defer.fail(OSError("this one is refused"))
            return super().save_crash(crash)

    storage = PoisonStorage(clock)
    mover, spool, _ = make_mover(clock, storage, workers=2, base=1.0, cap=4.0)
    mover.enqueue(spool.add("poison"))
    mover.start()
    for n in range(50):
        mover.enqueue(spool.add(f"c{n}"))
        clock.advance(0.5)
    assert not mover.storage_looks_down()
    assert sorted(storage.saved) == sorted(f"c{n}" for n in range(50))
    assert mover.queue_length() == 1 and mover.retrying() == 1


def test_same_crash_id_spooled_twice_is_tracked_twice():
    clock = task.Clock()
    storage = FlakyStorage(clock)
    mover, spool, _ = make_mover(clock, storage)
    first, second = spool.add("same"), spool.add("same")
    mover.enqueue(first)
    mover.enqueue(second)
    assert mover.queue_length() == 2
    mover.start()
    assert storage.saved == ["same", "same"]
    assert spool.removed == [first.filename, second.filename]
    assert mover.queue_length() == 0


def test_an_unreadable_entry_is_quarantined_never_saved():
    clock = task.Clock()
    storage = FlakyStorage(clock)
    mover, spool, _ = make_mover(clock, storage)
    bad = spool.add("bad")
    spool.crashes[bad.filename] = CorruptEntry("dump 'upload_file_minidump' is damaged")
    good = spool.add("good")
    mover.enqueue(bad)
    mover.enqueue(good)
    mover.start()
    assert storage.saved == ["good"]
    assert spool.quarantined == [(bad.filename, "dump 'upload_file_minidump' is damaged")]
    assert mover.queue_length() == 0


def test_a_crash_storage_finds_damaged_is_quarantined_not_retried():
    clock = task.Clock()

    class Refusing(FlakyStorage):
        def save_crash(self, crash):
            if crash.crash_id == "bad":
                self.attempts.append((self.clock.seconds(), crash.crash_id))
                return defer.fail(CrashDamaged("S3 PUT v1/dump/bad answered 400 "
                                               "XAmzContentSHA256Mismatch"))
            return super().save_crash(crash)

    storage = Refusing(clock)
    mover, spool, _ = make_mover(clock, storage)
    bad, good = spool.add("bad"), spool.add("good")
    mover.enqueue(bad)
    mover.enqueue(good)
    mover.start()
    clock.advance(3600)  # a retried crash would be tried again within the hour
    assert [crash_id for _, crash_id in storage.attempts] == ["bad", "good"]
    assert spool.quarantined == [
        (bad.filename, "S3 PUT v1/dump/bad answered 400 XAmzContentSHA256Mismatch")]
    assert spool.removed == [good.filename]
    assert mover.queue_length() == 0


def test_entries_that_cannot_be_read_log_once_per_interval_with_a_count():
    from twisted.logger import globalLogPublisher

    from antenna_tw.logs import format_message

    clock = task.Clock()
    storage = FlakyStorage(clock)
    mover, spool, _ = make_mover(clock, storage)
    entries = [spool.add(f"c{n}") for n in range(20)]
    for entry in entries:
        spool.crashes[entry.filename] = OSError(5, "Input/output error")  # a failing disk
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        for entry in entries:
            mover.enqueue(entry)
        mover.start()
        clock.advance(60)
    finally:
        globalLogPublisher.removeObserver(events.append)
    failed = [event for event in events if "could not read spool entry" in format_message(event)]
    # Each entry failed at least once (the first 20 tries), then again as it retries.
    first, second = (format_message(event) for event in failed)
    assert first == "c0: could not read spool entry"
    assert second.endswith(" times in the last 60 s)") and failed[1]["repeats"] >= 19
    assert all(event["log_failure"].value.errno == 5 for event in failed)
    assert mover.retrying() == 20


def test_queue_length_oldest_age_and_metrics():
    clock = task.Clock()
    clock.advance(1000.0)
    storage = FlakyStorage(clock, seconds_per_save=2.0)
    mover, spool, metrics = make_mover(clock, storage)
    mover.enqueue(spool.add("old", created=990.0))
    mover.enqueue(spool.add("new", created=999.0))
    assert (mover.queue_length(), mover.oldest_age()) == (2, 10.0)
    mover.start()
    clock.advance(2.0)
    assert (mover.queue_length(), mover.oldest_age()) == (1, 3.0)
    clock.advance(2.0)
    assert (mover.queue_length(), mover.oldest_age()) == (0, 0.0)
    assert metrics.named("breakpad_resource.save_queue_size") == [1, 2, 1, 0]
    assert metrics.named("breakpad_resource.save_crash.count") == [1, 1]
    assert metrics.named("breakpad_resource.crash_handling.time") == [12000.0, 5000.0]
    assert len(metrics.named("breakpad_resource.crash_save.time")) == 2


# -- shutdown -------------------------------------------------------------


def test_stop_lets_the_movers_drain_then_returns():
    clock = task.Clock()
    storage = FlakyStorage(clock, seconds_per_save=1.0)
    mover, spool, _ = make_mover(clock, storage)
    for name in "abc":
        mover.enqueue(spool.add(name))
    mover.start()
    stopped = fired(mover.stop(timeout=10.0))
    clock.advance(1.0)
    clock.advance(1.0)
    assert not stopped
    clock.advance(1.0)
    assert len(stopped) == 1
    assert storage.saved == ["a", "b", "c"] and mover.queue_length() == 0
    assert clock.getDelayedCalls() == []


def test_stop_gives_up_in_flight_saves_at_the_deadline_and_keeps_them_spooled():
    clock = task.Clock()
    storage = FlakyStorage(clock, seconds_per_save=10.0)
    mover, spool, _ = make_mover(clock, storage, workers=2)
    for name in "abc":
        mover.enqueue(spool.add(name))
    mover.start()
    stopped = fired(mover.stop(timeout=3.0))
    clock.advance(2.9)
    assert not stopped
    clock.advance(0.1)
    assert len(stopped) == 1
    assert sorted(storage.cancelled) == ["a", "b"]
    assert storage.saved == [] and spool.removed == []
    assert mover.queue_length() == 3  # still in the spool for the next start
    assert clock.getDelayedCalls() == []
    clock.advance(100.0)
    assert len(storage.attempts) == 2  # nothing started after the stop


def test_stop_cancels_backoff_waits():
    clock = task.Clock()
    storage = FlakyStorage(clock, failures=1000)
    mover, spool, _ = make_mover(clock, storage, cap=30.0)
    mover.enqueue(spool.add("a"))
    mover.start()
    clock.advance(20.0)
    tries = len(storage.attempts)
    stopped = fired(mover.stop(timeout=1.0))
    clock.advance(1.0)
    assert len(stopped) == 1
    assert clock.getDelayedCalls() == []
    clock.advance(1000.0)
    assert len(storage.attempts) <= tries + 1
    assert mover.queue_length() == 1


def test_stop_with_nothing_queued_returns_at_once():
    clock = task.Clock()
    mover, _, _ = make_mover(clock, FlakyStorage(clock))
    mover.start()
    stopped = fired(mover.stop(timeout=30.0))
    assert len(stopped) == 1
    assert clock.getDelayedCalls() == []


# -- backends that store in a pool thread -----------------------------------


@attr.s
class BlockingSpool(MemorySpool):
    """MemorySpool with the spool's blocking verbs, as the pool jobs use them."""

    def load_files_blocking(self, entry):
        crash = self.crashes[entry.filename]
        if isinstance(crash, Exception):
            raise crash
        return SpooledCrash(crash.crash_id, f"/spool/{entry.filename}")

    def load_blocking(self, entry):
        self.loaded.append(entry.filename)
        crash = self.crashes[entry.filename]
        if isinstance(crash, Exception):
            raise crash
        return crash

    def remove_blocking(self, entry):
        self.removed.append(entry.filename)
        del self.crashes[entry.filename]

    def quarantine_blocking(self, entry, reason):
        self.quarantined.append((entry.filename, reason))
        del self.crashes[entry.filename]


@implementer(IFileCrashStorage)
@attr.s
class BlockingStorage:
    failing = attr.ib(factory=set)  # crash ids whose save raises
    saved = attr.ib(factory=list)
    attempts = attr.ib(factory=list)

    def save_spooled_blocking(self, spooled):
        self.attempts.append(spooled.crash_id)
        if spooled.crash_id in self.failing:
            raise OSError("storage is down")
        self.saved.append(spooled.crash_id)


def make_blocking_mover(storage, workers=2, batch_wait=0.0):
    clock = ImmediateReactor()
    pool = ImmediatePool()
    spool = BlockingSpool()
    mover = CrashMover(spool, storage, clock, RecordingMetrics(), workers=workers,
                       backoff=Backoff(1.0, 8.0, random.Random(1)), threadpool=pool,
                       batch_wait=batch_wait)
    return mover, spool, pool, clock


def test_queued_crashes_are_moved_in_batches_one_pool_job_each():
    storage = BlockingStorage()
    mover, spool, pool, _ = make_blocking_mover(storage)
    entries = [spool.add(f"c{n}") for n in range(40)]
    for entry in entries:
        mover.enqueue(entry)
    mover.start()
    assert storage.saved == [f"c{n}" for n in range(40)]
    assert spool.removed == [entry.filename for entry in entries]
    assert pool.jobs == 3  # 16 + 16 + 8, not 40
    assert mover.queue_length() == 0


def test_crashes_arriving_one_by_one_gather_into_one_job_during_batch_wait():
    storage = BlockingStorage()
    mover, spool, pool, clock = make_blocking_mover(storage, workers=1, batch_wait=0.02)
    mover.start()
    for n in range(5):
        mover.enqueue(spool.add(f"c{n}"))
        clock.advance(0.003)
    assert storage.saved == [] and pool.jobs == 0  # still gathering
    clock.advance(0.006)  # 20 ms after the first crash arrived
    assert storage.saved == [f"c{n}" for n in range(5)]
    assert pool.jobs == 1
    assert mover.queue_length() == 0


def test_a_full_batch_is_moved_without_waiting():
    storage = BlockingStorage()
    mover, spool, pool, clock = make_blocking_mover(storage, workers=1, batch_wait=0.02)
    for n in range(MOVE_BATCH):
        mover.enqueue(spool.add(f"c{n}"))
    mover.start()
    assert storage.saved == [f"c{n}" for n in range(MOVE_BATCH)] and pool.jobs == 1


def test_a_failed_save_in_a_batch_sends_the_rest_back_untried():
    storage = BlockingStorage(failing={"c3"})
    mover, spool, pool, clock = make_blocking_mover(storage, workers=1)
    for n in range(10):
        mover.enqueue(spool.add(f"c{n}"))
    mover.start()
    # c0-c2 stored, c3 failed, c4-c9 skipped in that job and then moved in the next.
    assert storage.attempts == [f"c{n}" for n in range(10)]
    assert sorted(storage.saved) == sorted(f"c{n}" for n in range(10) if n != 3)
    assert mover.retrying() == 1 and mover.queue_length() == 1
    storage.failing.clear()
    clock.advance(8.0)
    assert "c3" in storage.saved and mover.queue_length() == 0


def test_an_unreadable_entry_is_quarantined_in_the_pool_job():
    storage = BlockingStorage()
    mover, spool, pool, _ = make_blocking_mover(storage, workers=1)
    bad = spool.add("bad")
    spool.crashes[bad.filename] = CorruptEntry("dump 'upload_file_minidump' is damaged")
    good = spool.add("good")
    mover.enqueue(bad)
    mover.enqueue(good)
    mover.start()
    assert storage.saved == ["good"] and pool.jobs == 1
    assert spool.quarantined == [(bad.filename, "dump 'upload_file_minidump' is damaged")]
    assert mover.queue_length() == 0 and mover.retrying() == 0


def test_the_file_path_is_chosen_by_the_interface_not_by_a_method_name():
    @attr.s
    class LooksLikeFiles(FlakyStorage):
        """Has the file method but does not declare IFileCrashStorage."""

        def save_spooled_blocking(self, spooled):
            raise AssertionError("not declared: never called")

    clock = ImmediateReactor()
    storage = LooksLikeFiles(clock)
    pool = ImmediatePool()
    spool = BlockingSpool()
    mover = CrashMover(spool, storage, clock, RecordingMetrics(), threadpool=pool)
    mover.enqueue(spool.add("a"))
    mover.start()
    assert storage.saved == ["a"]


@pytest.mark.parametrize("files", [True, False])
def test_the_spool_counts_its_bytes_down_whichever_way_crashes_move(tmp_path, files):
    clock = ImmediateReactor()
    pool = ImmediatePool()
    spool = Spool(str(tmp_path / "spool"), clock, pool)
    spool.open()
    storage = (FSCrashStorage(str(tmp_path / "crashes"), clock, pool) if files
               else NoOpCrashStorage())
    [good], [bad] = (fired(spool.put(Crash(name, {"uuid": name},
                                           {"upload_file_minidump": b"MDMP" * size})))
                     for name, size in (("good", 1000), ("bad", 10)))
    assert spool.total_bytes == good.size + bad.size
    with open(os.path.join(spool.directory, bad.filename), "wb") as raw_crash:
        raw_crash.write(b"{")  # unreadable: moved aside, never stored
    bad = attr.evolve(bad, recovered=True)  # as found at start-up: it is read and checked
    mover = CrashMover(spool, storage, clock, RecordingMetrics(), threadpool=pool)
    mover.enqueue(good)
    mover.enqueue(bad)
    pool.jobs = 0
    mover.start()
    assert mover.queue_length() == 0 and mover.retrying() == 0
    assert spool.total_bytes == 0
    assert sorted(os.listdir(os.path.join(spool.directory, CORRUPT_DIR))) == sorted(
        [bad.filename, bad.dump_filename("upload_file_minidump")])
    assert sorted(os.listdir(spool.directory)) == [CORRUPT_DIR]
    # One batch, or each crash loaded, then removed or quarantined.
    assert pool.jobs == (1 if files else 4)


# -- with a crash publisher: mark stored, hand over -------------------------


@pytest.mark.parametrize("files", [True, False])
def test_with_a_publisher_stored_entries_are_marked_and_handed_over_not_removed(
        tmp_path, files):
    clock = ImmediateReactor()
    pool = ImmediatePool()
    spool = Spool(str(tmp_path / "spool"), clock, pool)
    spool.open()
    storage = (FSCrashStorage(str(tmp_path / "crashes"), clock, pool) if files
               else NoOpCrashStorage())
    [entry] = fired(spool.put(Crash("good", {"uuid": "good"}, {"upload_file_minidump": b"M"})))
    handed = []
    mover = CrashMover(spool, storage, clock, RecordingMetrics(), threadpool=pool,
                       stored=handed.append)
    mover.enqueue(entry)
    mover.start()
    assert handed == [entry]
    assert mover.queue_length() == 0
    assert spool.total_bytes == entry.size  # still spooled, until published
    assert sorted(os.listdir(spool.directory)) == sorted(
        [CORRUPT_DIR, entry.filename, entry.dump_filename("upload_file_minidump"),
         entry.stored_filename])
    # A restart finds it stored: it goes straight to the publisher, not to storage.
    again = Spool(str(tmp_path / "spool"), clock, pool)
    [found] = again.open()
    assert found.stored and found.crash_id == "good"
    attempts = []
    storage.save_crash = attempts.append  # would be called if it were stored again
    restarted = CrashMover(again, storage, clock, RecordingMetrics(), threadpool=pool,
                           stored=handed.append)
    restarted.enqueue(found)
    restarted.start()
    assert handed[-1] == found and attempts == []
    assert restarted.queue_length() == 0


def test_a_marker_that_cannot_be_written_still_hands_the_crash_over(tmp_path):
    clock = ImmediateReactor()
    pool = ImmediatePool()
    spool = Spool(str(tmp_path / "spool"), clock, pool)
    spool.open()
    [entry] = fired(spool.put(Crash("good", {"uuid": "good"}, {})))

    def refuse(entry):
        raise OSError("read-only")

    spool.mark_stored_blocking = refuse
    handed = []
    mover = CrashMover(spool, NoOpCrashStorage(), clock, RecordingMetrics(), threadpool=pool,
                       stored=handed.append)
    mover.enqueue(entry)
    mover.start()
    assert handed == [entry]


def test_without_a_publisher_a_marked_entry_is_stored_again():
    clock = task.Clock()
    storage = FlakyStorage(clock)
    mover, spool, _ = make_mover(clock, storage)
    entry = attr.evolve(spool.add("a"), stored=True)
    mover.enqueue(entry)
    mover.start()
    assert storage.saved == ["a"]
    assert spool.removed == [entry.filename]


# -- saved on the reactor: the hand-off, gathered loads and removals --------


@attr.s
class KeepingStorage(FlakyStorage):
    """FlakyStorage that also keeps each crash object it was given."""

    given = attr.ib(factory=list)

    def save_crash(self, crash):
        self.given.append(crash)
        return super().save_crash(crash)


def make_handoff_mover(handoff_bytes=1000, workers=1, failures=0, seconds_per_save=0.0):
    clock = ImmediateReactor()
    pool = ManualPool()
    spool = BlockingSpool()
    storage = KeepingStorage(clock, failures=failures, seconds_per_save=seconds_per_save)
    mover = CrashMover(spool, storage, clock, RecordingMetrics(), workers=workers,
                       backoff=Backoff(1.0, 8.0, random.Random(1)), threadpool=pool,
                       handoff_bytes=handoff_bytes)
    return mover, spool, storage, pool, clock


def in_memory(entry):
    """The crash the intake would hand over with ``entry`` (not the spool's copy)."""
    return Crash(entry.crash_id, {"uuid": entry.crash_id}, {"upload_file_minidump": [b"MD", b"MP"]})


def test_a_crash_handed_over_is_saved_from_memory_and_leaves_the_spool_after_its_save():
    mover, spool, storage, pool, clock = make_handoff_mover(seconds_per_save=0.1)
    entry = spool.add("a")
    crash = in_memory(entry)
    mover.enqueue(entry, crash)
    mover.start()
    assert storage.given == [crash] and pool.waiting == []  # no load job
    assert mover.held_bytes() == entry.size
    assert spool.removed == []  # spooled until stored
    clock.advance(0.1)
    assert storage.saved == ["a"] and mover.held_bytes() == 0
    assert spool.removed == [] and mover.queue_length() == 1  # its removal waits in the pool
    pool.run_all()
    assert spool.removed == [entry.filename] and spool.loaded == []
    assert mover.queue_length() == 0 and mover.handed_over == 1


def test_past_the_budget_crashes_are_read_back_their_loads_gathered_in_one_job():
    mover, spool, storage, pool, clock = make_handoff_mover(
        handoff_bytes=250, workers=4, seconds_per_save=0.1)
    entries = [spool.add(f"c{n}") for n in range(4)]  # 100 bytes each
    for entry in entries:
        mover.enqueue(entry, in_memory(entry))
    assert mover.held_bytes() == 200  # c0 and c1; c2 would pass 250
    mover.start()
    assert [crash.crash_id for crash in storage.given] == ["c0", "c1"]
    pool.run_next()  # c2's load, alone: nothing else waited when it started
    pool.run_next()  # c3's, which waited behind it
    assert spool.loaded == [entries[2].filename, entries[3].filename]
    assert [crash.crash_id for crash in storage.given] == ["c0", "c1", "c2", "c3"]
    assert storage.given[2] is spool.crashes[entries[2].filename]  # the spool's copy
    clock.advance(0.1)
    assert mover.held_bytes() == 0
    pool.run_all()  # the four removals: one job, and one for those that came after it
    assert sorted(spool.removed) == sorted(entry.filename for entry in entries)
    assert mover.queue_length() == 0 and mover.handed_over == 2
    # Room again: the next crash is held.
    late = spool.add("late")
    crash = in_memory(late)
    mover.enqueue(late, crash)
    assert mover.held_bytes() == late.size and storage.given[-1] is crash


def test_the_budget_is_never_passed_whatever_arrives():
    mover, spool, storage, pool, clock = make_handoff_mover(
        handoff_bytes=1000, workers=2, seconds_per_save=0.05)
    mover.start()
    most = 0
    for n in range(200):
        entry = spool.add(f"c{n}")
        mover.enqueue(entry, in_memory(entry))
        most = max(most, mover.held_bytes())
        clock.advance(0.01)
        pool.run_all()
    for _ in range(1000):
        clock.advance(0.05)
        pool.run_all()
    assert most == 1000 and mover.held_bytes() == 0
    assert mover.queue_length() == 0 and len(storage.saved) == 200
    assert 0 < mover.handed_over < 200 and len(spool.loaded) == 200 - mover.handed_over


def test_a_failed_save_lets_go_of_the_crash_and_the_retry_reads_the_spool():
    mover, spool, storage, pool, clock = make_handoff_mover(failures=1)
    entry = spool.add("a")
    mover.enqueue(entry, in_memory(entry))
    mover.start()
    assert storage.saved == [] and mover.held_bytes() == 0 and mover.retrying() == 1
    clock.advance(8.0)
    pool.run_all()
    assert storage.saved == ["a"] and spool.loaded == [entry.filename]
    assert spool.removed == [entry.filename] and mover.queue_length() == 0


def test_crashes_found_at_start_up_and_file_storage_are_never_held():
    mover, spool, _, _, _ = make_handoff_mover()
    found = attr.evolve(spool.add("found"), recovered=True)
    mover.enqueue(found, in_memory(found))
    assert mover.held_bytes() == 0
    files = CrashMover(spool, BlockingStorage(), ImmediateReactor(), RecordingMetrics(),
                       threadpool=ImmediatePool(), handoff_bytes=1000)
    entry = spool.add("fs")
    files.enqueue(entry, in_memory(entry))
    assert files.held_bytes() == 0


def test_removals_of_crashes_stored_meanwhile_go_in_one_job_the_mover_not_waiting():
    mover, spool, storage, pool, _ = make_handoff_mover(workers=1)
    entries = [spool.add(f"c{n}") for n in range(5)]
    for entry in entries:
        mover.enqueue(entry, in_memory(entry))
    mover.start()
    assert storage.saved == [f"c{n}" for n in range(5)]  # one mover, none waited for
    assert len(pool.waiting) == 1  # c0's removal; the others gather behind it
    pool.run_all()
    assert pool.jobs == 2 and spool.removed == [entry.filename for entry in entries]
    assert mover.queue_length() == 0


def test_stop_waits_for_removals_in_flight():
    mover, spool, storage, pool, clock = make_handoff_mover()
    entry = spool.add("a")
    mover.enqueue(entry, in_memory(entry))
    mover.start()
    stopped = fired(mover.stop(timeout=0))
    clock.advance(0)
    assert storage.saved == ["a"] and stopped == []
    pool.run_all()
    assert len(stopped) == 1 and spool.removed == [entry.filename]


def test_a_removal_that_fails_is_reported_stored_with_its_entry_left():
    mover, spool, storage, pool, _ = make_handoff_mover()
    entry = spool.add("a")

    def refuse(entry):
        raise OSError("read-only")

    spool.remove_blocking = refuse
    mover = CrashMover(spool, storage, mover.reactor, RecordingMetrics(), threadpool=pool,
                       handoff_bytes=1000)
    mover.enqueue(entry, in_memory(entry))
    mover.start()
    pool.run_all()
    assert storage.saved == ["a"] and mover.queue_length() == 0 and mover.retrying() == 0
