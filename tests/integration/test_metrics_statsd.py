"""
Antenna's statsd names from a listening collector: caught as packets by a UDP
listener on loopback, and as records by a recording backend that checks each
one against the registry (antenna_tw.metricnames).
"""

import pytest_twisted
from twisted.internet import defer, reactor, task
from zope.interface import implementer

from antenna_tw import metricnames
from antenna_tw.ext.fs import FSCrashStorage
from antenna_tw.publisher import ICrashPublisher, PublishFailed
from antenna_tw.send_crash import build_multipart
from tests.helpers import StatsdListener, http_request, minidump, raw_request

NAMESPACE = "antenna_test"
BODY, CONTENT_TYPE = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                     {"upload_file_minidump": minidump()})


@pytest_twisted.ensureDeferred
async def test_an_accepted_crash_sends_antennas_statsd_metrics(collector_with):
    listener = StatsdListener()
    port = reactor.listenUDP(0, listener, interface="127.0.0.1")
    try:
        running = await collector_with(METRICS_CLASS="statsd", STATSD_HOST="127.0.0.1",
                                       STATSD_PORT=port.getHost().port,
                                       STATSD_NAMESPACE=NAMESPACE)
        status, _, answer = await raw_request(
            running.port_number, http_request(BODY, [("Content-Type", CONTENT_TYPE)]))
        assert status == 200, answer
        await running.wait_stored(answer.decode().strip()[len("CrashID=bp-"):])
        await running.wait_idle()
        for _ in range(100):  # the datagrams cross loopback on the next reactor turns
            if f"{NAMESPACE}.breakpad_resource.crash_handling.time" in listener.metrics():
                break
            await task.deferLater(reactor, 0.02, lambda: None)
    finally:
        await port.stopListening()

    metrics = listener.metrics()
    prefix = NAMESPACE + ".breakpad_resource."
    assert metrics[prefix + "incoming_crash"] == [("c", "1", None)]
    assert metrics[prefix + "save_crash.count"] == [("c", "1", None)]
    assert [value for kind, value, _ in metrics[prefix + "save_queue_size"]
            if kind == "g"] == ["1", "0"]  # queued, then stored
    for timing in ("on_post.time", "crash_save.time", "crash_handling.time"):
        (kind, value, tags), = metrics[prefix + timing]
        assert kind == "ms" and float(value) >= 0 and tags is None, (timing, value)
    assert metrics[prefix + "throttle"] == [("c", "1", "result:accept")]
    assert metrics[prefix + "throttle_rule"] == [("c", "1", "rule:accept_everything")]
    assert all(name.startswith(NAMESPACE + ".") for name in metrics)


@pytest_twisted.ensureDeferred
async def test_a_malformed_crash_is_counted_with_its_reason(collector_with):
    listener = StatsdListener()
    port = reactor.listenUDP(0, listener, interface="127.0.0.1")
    try:
        running = await collector_with(METRICS_CLASS="statsd", STATSD_HOST="127.0.0.1",
                                       STATSD_PORT=port.getHost().port,
                                       STATSD_NAMESPACE=NAMESPACE)
        status, _, _ = await raw_request(
            running.port_number, http_request(BODY, [("Content-Type", "text/plain")]))
        assert status == 400
        for _ in range(100):
            if listener.lines:
                break
            await task.deferLater(reactor, 0.02, lambda: None)
    finally:
        await port.stopListening()
    metrics = listener.metrics()
    assert metrics[NAMESPACE + ".breakpad_resource.malformed"] == [
        ("c", "1", "reason:wrong_content_type")]
    assert NAMESPACE + ".breakpad_resource.incoming_crash" not in metrics


class FailOnceStorage(FSCrashStorage):
    """Filesystem storage whose first save fails (then the mover retries)."""

    def save_spooled_blocking(self, spooled):
        if not getattr(self, "failed_once", False):
            self.failed_once = True
            raise OSError("the first save fails")
        return super().save_spooled_blocking(spooled)


@implementer(ICrashPublisher)
class FailOncePublisher:
    """A publisher that publishes nothing anywhere, and fails its first call."""

    name = "fail-once"
    batch_size = 10
    health_ttl = 0.0

    def __init__(self):
        self.calls = 0

    @classmethod
    def from_settings(cls, publish_settings, storage_settings, reactor, threadpool):
        return cls()

    def verify(self):
        pass

    def check_health(self):
        return defer.succeed([])

    def close(self):
        return defer.succeed(None)

    def publish(self, crash_ids):
        self.calls += 1
        if self.calls == 1:
            return defer.fail(PublishFailed(crash_ids, "the first publish fails"))
        return defer.succeed(None)


class CheckingBackend:
    """A markus-style backend that keeps every record and what the registry says of it."""

    def __init__(self):
        self.records = []
        self.problems = []

    def emit_to_backend(self, record):
        self.records.append(record)
        try:
            metricnames.check(record.stat_type, record.key, record.tags)
        except metricnames.UnregisteredMetric as error:
            self.problems.append(str(error))


async def checked_collector(collector_with, tmp_path, name, **overrides):
    """A collector with its own files under ``tmp_path/name``, recording its metrics."""
    running = await collector_with(SPOOL_DIR=tmp_path / name / "spool",
                                   CRASHSTORAGE_FS_ROOT=tmp_path / name / "crashes",
                                   **overrides)
    backend = CheckingBackend()
    running.collector.metrics.backends.append(backend)
    return running, backend


async def send(running, body, headers, **kwargs):
    return await raw_request(running.port_number, http_request(body, headers, **kwargs))


@pytest_twisted.ensureDeferred
async def test_every_metric_the_collector_emits_is_registered(collector_with, tmp_path):
    crash = [("Content-Type", CONTENT_TYPE)]
    running, backend = await checked_collector(
        collector_with, tmp_path, "main",
        CRASHSTORAGE_CLASS="tests.integration.test_metrics_statsd.FailOnceStorage",
        CRASHMOVER_RETRY_BASE_DELAY="0.05", MAX_PAYLOAD_SIZE=str(len(BODY) + 1000))
    status, _, answer = await send(running, BODY, crash)  # accepted; first save fails
    assert status == 200, answer
    await running.wait_stored(answer.decode().strip()[len("CrashID=bp-"):])
    await running.wait_idle()
    assert (await send(running, BODY, [("Content-Type", "text/plain")]))[0] == 400
    assert (await send(running, b"x" * (len(BODY) + 2000), crash))[0] == 413
    with_uuid, with_uuid_type = build_multipart(
        {"ProductName": "Test", "Version": "1.0",
         "uuid": "de1bb258-cbbf-4589-a673-34f800160918"}, {"upload_file_minidump": minidump()})
    assert (await send(running, with_uuid, [("Content-Type", with_uuid_type)]))[0] == 401
    for page, code in (("lbheartbeat", 200), ("heartbeat", 200), ("version", 200),
                       ("broken", 500)):
        got = await send(running, b"", [], path=f"/__{page}__", method="GET")
        assert got[0] == code, (page, got)

    throttled, throttled_backend = await checked_collector(
        collector_with, tmp_path, "reject", THROTTLE_RULES="tests.rulesets.REJECT_ALL")
    assert (await send(throttled, BODY, crash))[2] == b"Discarded=rule_reject_everything"

    full, full_backend = await checked_collector(
        collector_with, tmp_path, "full", SPOOL_MIN_FREE_BYTES=str(1 << 60))
    assert (await send(full, BODY, crash))[2] == b"Discarded=busy"

    publishing, publishing_backend = await checked_collector(
        collector_with, tmp_path, "publishing",
        CRASHPUBLISH_CLASS="tests.integration.test_metrics_statsd.FailOncePublisher",
        CRASHMOVER_RETRY_BASE_DELAY="0.05", CRASHMOVER_RETRY_MAX_DELAY="0.1")
    assert (await send(publishing, BODY, crash))[0] == 200
    for _ in range(200):  # published after one failure, then out of the spool
        if publishing.collector.publisher.calls == 2 and \
                not publishing.collector.publish_queue.backlog():
            break
        await task.deferLater(reactor, 0.02, lambda: None)
    assert publishing.collector.publisher.calls == 2
    assert (await send(publishing, b"", [], path="/__heartbeat__", method="GET"))[0] == 200

    backends = (backend, throttled_backend, full_backend, publishing_backend)
    assert [problem for each in backends for problem in each.problems] == []
    emitted = {record.key for each in backends for record in each.records}
    assert sorted(set(metricnames.REGISTRY) - emitted) == []
    tags = {tag for record in backend.records for tag in record.tags}
    assert {"reason:wrong_content_type", "reason:too_large", "reason:unauthorized_uuid",
            "result:accept", "rule:accept_everything"} <= tags
    assert "result:reject" in {tag for record in throttled_backend.records
                               for tag in record.tags}


@pytest_twisted.ensureDeferred
async def test_the_recording_backend_reports_an_unregistered_metric(collector_with, tmp_path):
    running, backend = await checked_collector(collector_with, tmp_path, "main")
    running.collector.metrics.incr("breakpad_resource.not_registered")
    running.collector.metrics.incr(metricnames.THROTTLE)  # without its result tag
    assert backend.problems == [
        "metric 'breakpad_resource.not_registered' is not in antenna_tw.metricnames",
        "metric 'breakpad_resource.throttle' has tags ['result'], emitted with []",
    ]
