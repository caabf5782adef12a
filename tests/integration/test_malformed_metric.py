"""
Every refusal of a malformed upload counts ``breakpad_resource.malformed``
with a reason tag (Antenna's statsd name and tag values, without
``malformed_``), whether the route answers it or the early 413 does:
checked on the statsd packets themselves.
"""

import pytest_twisted
from twisted.internet import reactor, task

from tests.helpers import StatsdListener, http_request, raw_request


@pytest_twisted.ensureDeferred
async def test_malformed_uploads_are_counted_by_reason(collector_with):
    listener = StatsdListener()
    udp = reactor.listenUDP(0, listener, interface="127.0.0.1")
    try:
        running = await collector_with(METRICS_CLASS="statsd", STATSD_HOST="127.0.0.1",
                                       STATSD_PORT=udp.getHost().port,
                                       STATSD_NAMESPACE="antenna", MAX_PAYLOAD_SIZE="1000")
        port = running.port_number
        sent = [
            (http_request(b"x", []), 400),
            (http_request(b"x", [("Content-Type", "multipart/form-data; boundary=b")]), 400),
            (http_request(b"x" * 1001, [("Content-Type", "multipart/form-data; boundary=b")]),
             413),
        ]
        for request, status in sent:
            assert (await raw_request(port, request))[0] == status
        expected = {
            "antenna.breakpad_resource.malformed:1|c|#reason:no_content_type",
            "antenna.breakpad_resource.malformed:1|c|#reason:invalid_payload_structure",
            "antenna.breakpad_resource.malformed:1|c|#reason:too_large",  # the early 413
        }
        for _ in range(100):
            if expected <= set(listener.lines):
                break
            await task.deferLater(reactor, 0.02, lambda: None)
        malformed = [p for p in listener.lines if "breakpad_resource.malformed" in p]
        assert sorted(malformed) == sorted(expected)
    finally:
        await udp.stopListening()
