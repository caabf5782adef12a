"""markus's Datadog backend made safe for the reactor (see DogStatsdMetrics)."""

from datadog.dogstatsd import DogStatsd
from markus.backends.datadog import DatadogMetrics


class DogStatsdMetrics(DatadogMetrics):
    """
    markus's Datadog backend with a client that never blocks the reactor
    (a non-blocking UDP socket to an address resolved at start-up, no
    background thread, no buffering) and sends only our metrics: no client
    telemetry, no container tags, no fork hooks. A packet that cannot be
    sent is dropped without a word, as statsd over UDP should be.
    """

    def __init__(self, options=None, filters=None):
        options = dict(options or {})
        self.address = options.get("statsd_address") or options.get("statsd_host", "localhost")
        super().__init__(options, filters)

    def _get_client(self, host, port, namespace, origin_detection_enabled):
        return DogStatsd(
            host=self.address, port=port, namespace=namespace or None,
            origin_detection_enabled=False, disable_telemetry=True,
            disable_buffering=True, disable_background_sender=True,
            socket_timeout=0, track_instance=False,
        )
