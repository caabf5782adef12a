"""The seed's statsd metrics, caught by a UDP listener on loopback from a listening collector."""

import pytest_twisted
from twisted.internet import reactor, task

from antenna_tw.send_crash import build_multipart
from tests.helpers import StatsdListener, http_request, minidump, raw_request

NAMESPACE = "antenna_test"
BODY, CONTENT_TYPE = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                     {"upload_file_minidump": minidump()})
@pytest_twisted.ensureDeferred
async def test_an_accepted_crash_sends_the_seed_metrics(collector_with):
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
