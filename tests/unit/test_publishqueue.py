"""
The publish queue on a clock: batches up to the publisher's size, removal
from the spool only after confirmation, retries with back-off that never
drop an id, ACCEPT-only publishing, and the stop.
"""

import random

import attr
from twisted.internet import defer
from zope.interface import implementer

from antenna_tw import metricnames
from antenna_tw.backoff import Backoff
from antenna_tw.metrics import Metrics
from antenna_tw.publisher import ICrashPublisher, PublishFailed
from antenna_tw.publishqueue import PublishQueue, accepted, throttle_digit
from antenna_tw.spool import SpoolEntry
from tests.helpers import ImmediatePool, ImmediateReactor

ACCEPTED = "de0e4a4e-0d1c-4f2a-9d7e-3c5b1a%d60504"
DEFERRED = "de0e4a4e-0d1c-4f2a-9d7e-3c5b11%d60504"


def crash_id(index, digit=0):
    return f"de0e4a4e-0d1c-4f2a-9d7e-{index:05x}{digit}260504"


@attr.s
class FakeSpool:
    threadpool = attr.ib(factory=ImmediatePool)
    removed = attr.ib(factory=list)
    fail_removal = attr.ib(default=False)

    def remove_blocking(self, entry):
        if self.fail_removal:
            raise OSError("disk gone")
        self.removed.append(entry.crash_id)


@implementer(ICrashPublisher)
@attr.s
class FakePublisher:
    """Each publish() waits until the test answers it with ``answer``."""

    batch_size = attr.ib(default=3)
    calls = attr.ib(factory=list)  # [(ids, Deferred)]
    name = "fake"
    health_ttl = 0.0

    def verify(self):
        pass

    def publish(self, crash_ids):
        d = defer.Deferred()
        self.calls.append((list(crash_ids), d))
        return d

    def answer(self, index=-1, failed=()):
        ids, d = self.calls[index]
        if failed:
            d.errback(PublishFailed(list(failed), "queue down"))
        else:
            d.callback(None)

    def check_health(self):
        return defer.succeed([])

    def close(self):
        return defer.succeed(None)


class Recording:
    def __init__(self):
        self.records = []

    def emit_to_backend(self, record):
        self.records.append(record)


def entry(crash_id, created=0.0):
    return SpoolEntry(f"00000000000000000001-{crash_id}.crash", crash_id, 100, created)


def make(workers=1, accepted_only=False, batch_size=3):
    reactor = ImmediateReactor()
    spool = FakeSpool()
    publisher = FakePublisher(batch_size=batch_size)
    backend = Recording()
    queue = PublishQueue(publisher, spool, reactor, Metrics([backend], checked=True),
                         backoff=Backoff(1.0, 60.0, rng=random.Random(4)),
                         accepted_only=accepted_only, workers=workers)
    return queue, publisher, spool, reactor, backend


def test_the_throttle_digit_is_read_from_the_id():
    assert throttle_digit(crash_id(1, 0)) == 0
    assert throttle_digit(crash_id(1, 1)) == 1
    assert accepted(crash_id(1, 0)) and not accepted(crash_id(1, 1))
    assert throttle_digit("short") is None


def test_ids_are_batched_up_to_the_publishers_size_and_removed_when_confirmed():
    queue, publisher, spool, _, backend = make()
    queue.start()
    ids = [crash_id(index) for index in range(7)]
    for one in ids:
        queue.add(entry(one))
    # The first call took the first id at once; the rest wait for it in batches of 3.
    assert [call[0] for call in publisher.calls] == [ids[:1]]
    assert queue.backlog() == 7
    publisher.answer()
    assert spool.removed == ids[:1]
    assert [call[0] for call in publisher.calls][1:] == [ids[1:4]]
    publisher.answer()
    publisher.answer()
    assert [call[0] for call in publisher.calls][2:] == [ids[4:7]]
    assert spool.removed == ids
    assert queue.backlog() == 0
    counted = sum(record.value for record in backend.records
                  if record.key == metricnames.PUBLISH_CRASH_COUNT)
    assert counted == 7


def test_failed_ids_stay_and_are_retried_after_a_backoff_never_dropped():
    queue, publisher, spool, reactor, backend = make()
    queue.start()
    ids = [crash_id(index) for index in range(3)]
    for one in ids:
        queue.add(entry(one))
    publisher.answer(failed=ids[:1])  # first call: [id0]
    assert spool.removed == []
    assert len(publisher.calls) == 1  # waiting out the back-off
    assert queue.backlog() == 3
    for attempt in range(1, 30):  # a long outage: every call fails
        reactor.advance(61)
        assert len(publisher.calls) == attempt + 1
        publisher.answer(failed=publisher.calls[-1][0])
    assert spool.removed == [] and queue.backlog() == 3
    reactor.advance(61)
    assert sorted(publisher.calls[-1][0]) == sorted(ids)
    publisher.answer()
    assert sorted(spool.removed) == sorted(ids)
    errors = [r for r in backend.records if r.key == metricnames.PUBLISH_CRASH_EXCEPTION_COUNT]
    assert len(errors) == 30


def test_a_partly_confirmed_batch_removes_only_the_confirmed():
    queue, publisher, spool, reactor, _ = make()
    queue.start()
    first, *rest = [crash_id(index) for index in range(4)]
    for one in [first, *rest]:
        queue.add(entry(one))
    publisher.answer()  # [first]
    publisher.answer(failed=[rest[1]])  # [rest0, rest1, rest2]: rest1 not confirmed
    assert spool.removed == [first, rest[0], rest[2]]
    reactor.advance(61)
    assert publisher.calls[-1][0] == [rest[1]]


def test_the_backoff_grows_and_resets_after_a_success():
    queue, publisher, _, reactor, _ = make()
    queue.start()
    queue.add(entry(crash_id(1)))
    delays = []
    for _ in range(4):
        publisher.answer(failed=publisher.calls[-1][0])
        waited, before = 0.0, len(publisher.calls)
        while len(publisher.calls) == before:
            reactor.advance(0.25)
            waited += 0.25
        delays.append(waited)
    assert delays[-1] > delays[0]
    publisher.answer()
    assert queue.failures_in_a_row() == 0


def test_accepted_only_removes_deferred_crashes_unpublished():
    queue, publisher, spool, _, _ = make(accepted_only=True)
    queue.start()
    queue.add(entry(crash_id(1, digit=1)))
    queue.add(entry(crash_id(2, digit=0)))
    assert spool.removed == [crash_id(1, digit=1)]
    assert [call[0] for call in publisher.calls] == [[crash_id(2)]]


def test_a_failed_removal_is_logged_and_not_counted_as_backlog():
    queue, publisher, spool, _, _ = make()
    spool.fail_removal = True
    queue.start()
    queue.add(entry(crash_id(1)))
    publisher.answer()
    assert queue.backlog() == 0


def test_stop_waits_for_the_backlog_then_gives_up():
    queue, publisher, spool, reactor, _ = make()
    queue.start()
    queue.add(entry(crash_id(1)))
    stopped = queue.stop(10.0)
    assert not stopped.called
    publisher.answer()
    assert stopped.called

    queue, publisher, spool, reactor, _ = make()
    queue.start()
    queue.add(entry(crash_id(2)))
    stopped = queue.stop(10.0)
    reactor.advance(10)
    assert stopped.called
    assert spool.removed == []  # left in the spool, marked stored, for the next start


def test_two_loops_keep_two_batches_in_flight():
    queue, publisher, _, _, _ = make(workers=2)
    queue.start()
    for index in range(5):
        queue.add(entry(crash_id(index)))
    assert [len(call[0]) for call in publisher.calls] == [1, 1]


def test_after_a_failure_ids_are_sent_again_only_once_the_health_check_passes():
    queue, publisher, spool, reactor, _ = make()
    health = [["queue unreachable"]] * 3 + [[]]
    publisher.check_health = lambda: defer.succeed(health.pop(0))
    queue.start()
    queue.add(entry(crash_id(1)))
    publisher.answer(failed=[crash_id(1)])
    for _ in range(3):  # three failed probes: no batch goes out meanwhile
        reactor.advance(61)
        assert len(publisher.calls) == 1
    assert queue.failures_in_a_row() == 4
    reactor.advance(61)  # the probe passes: the id goes out again
    assert len(publisher.calls) == 2 and health == []
    publisher.answer()
    assert spool.removed == [crash_id(1)]
    assert queue.failures_in_a_row() == 0
