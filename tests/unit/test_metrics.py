"""Metrics backends chosen by METRICS_CLASS, and what each one sends."""

import socket

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from antenna_tw.config import AppSettings
from antenna_tw.metrics import DogStatsdMetrics, Metrics, TwistedLoggingMetrics, build_metrics


@pytest.fixture
def udp():
    """A statsd server stand-in on loopback: a bound UDP socket."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2.0)
    yield receiver
    receiver.close()


def received(receiver, count):
    return [receiver.recv(65536).decode() for _ in range(count)]


def statsd_settings(receiver, metrics_class="statsd", namespace="ns"):
    return AppSettings(metrics_class=metrics_class, statsd_host="localhost",
                       statsd_port=receiver.getsockname()[1], statsd_namespace=namespace)


@pytest.mark.parametrize("name,kinds", [
    ("statsd", [DogStatsdMetrics]),
    ("logging", [TwistedLoggingMetrics]),
    ("none", []),
    ("", []),
    ("antenna.metrics.DogStatsdMetrics", [DogStatsdMetrics]),
    ("antenna.metrics.LoggingMetrics", [TwistedLoggingMetrics]),
    ("markus.backends.datadog.DatadogMetrics", [DogStatsdMetrics]),
    ("antenna.metrics.LoggingMetrics,antenna.metrics.DogStatsdMetrics",
     [TwistedLoggingMetrics, DogStatsdMetrics]),
    (" Logging , STATSD ", [TwistedLoggingMetrics, DogStatsdMetrics]),
])
def test_metrics_class_names(name, kinds):
    metrics = build_metrics(AppSettings(metrics_class=name))
    assert [type(backend) for backend in metrics.backends] == kinds


def test_an_unknown_backend_is_one_line():
    with pytest.raises(ValueError) as error:
        build_metrics(AppSettings(metrics_class="logging,antenna.metrics.Nope"))
    assert str(error.value) == ("METRICS_CLASS='logging,antenna.metrics.Nope': "
                                "'antenna.metrics.Nope' is not statsd, prometheus, logging or none")


def test_a_statsd_host_that_does_not_resolve_is_one_line():
    with pytest.raises(ValueError, match="^STATSD_HOST='no-such-host.invalid' does not resolve"):
        build_metrics(AppSettings(metrics_class="statsd", statsd_host="no-such-host.invalid"))


def test_statsd_sends_dogstatsd_packets_under_the_namespace(udp):
    metrics = build_metrics(statsd_settings(udp))
    metrics.incr("breakpad_resource.incoming_crash")
    metrics.incr("breakpad_resource.malformed", tags=["reason:bad_gzip"])
    metrics.gauge("breakpad_resource.save_queue_size", 7)
    metrics.timing("breakpad_resource.on_post.time", 12.5)
    metrics.histogram("breakpad_resource.crash_size", 4096, tags=["payload:compressed"])
    assert received(udp, 5) == [
        "ns.breakpad_resource.incoming_crash:1|c\n",
        "ns.breakpad_resource.malformed:1|c|#reason:bad_gzip\n",
        "ns.breakpad_resource.save_queue_size:7|g\n",
        "ns.breakpad_resource.on_post.time:12.5|ms\n",
        "ns.breakpad_resource.crash_size:4096|h|#payload:compressed\n",
    ]


def test_statsd_without_a_namespace(udp):
    metrics = build_metrics(statsd_settings(udp, namespace=""))
    metrics.incr("health.heartbeat.count")
    assert received(udp, 1) == ["health.heartbeat.count:1|c\n"]


def test_statsd_client_never_blocks_and_starts_no_thread(udp):
    import threading

    before = set(threading.enumerate())
    metrics = build_metrics(statsd_settings(udp))
    metrics.incr("x")
    client = metrics.backends[0].client
    assert client.socket.gettimeout() == 0.0  # non-blocking
    assert set(threading.enumerate()) == before


def test_a_missing_statsd_server_is_not_an_error():
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nobody listens: the kernel answers "connection refused"
    metrics = build_metrics(AppSettings(metrics_class="statsd", statsd_host="127.0.0.1",
                                        statsd_port=port))
    for _ in range(20):
        metrics.incr("x")
        metrics.timing("y", 1.0)


def test_two_collectors_never_share_backends(udp):
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.settimeout(0.2)
    try:
        first = build_metrics(statsd_settings(udp, namespace="first"))
        build_metrics(AppSettings(metrics_class="statsd", statsd_host="127.0.0.1",
                                  statsd_port=other.getsockname()[1], statsd_namespace="second"))
        first.incr("only.here")
        assert received(udp, 1) == ["first.only.here:1|c\n"]
        with pytest.raises(socket.timeout):
            other.recv(100)
    finally:
        other.close()


def test_logging_writes_one_debug_line_per_metric():
    lines = []

    def observe(event):
        lines.append((event["log_level"].name, formatEvent(event)))

    globalLogPublisher.addObserver(observe)
    try:
        metrics = Metrics([TwistedLoggingMetrics({"statsd_namespace": "ns"})])
        metrics.incr("breakpad_resource.throttle", tags=["result:accept"])
        metrics.timing("breakpad_resource.on_post.time", 3.25)
        Metrics([TwistedLoggingMetrics()]).gauge("breakpad_resource.save_queue_size", 2)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert lines == [
        ("debug", "METRICS|incr|ns.breakpad_resource.throttle|1|result:accept"),
        ("debug", "METRICS|timing|ns.breakpad_resource.on_post.time|3.25|"),
        ("debug", "METRICS|gauge|breakpad_resource.save_queue_size|2|"),
    ]


def test_statsd_sends_what_markus_datadog_backend_sends(udp):
    # DogStatsdMetrics is markus's DatadogMetrics with another client: the
    # packets must stay byte for byte what markus's backend sends.
    from markus.backends.datadog import DatadogMetrics
    from markus.main import MetricsRecord

    records = [MetricsRecord("incr", "a.count", 1, []),
               MetricsRecord("gauge", "a.level", 7, ["x:y"]),
               MetricsRecord("timing", "a.time", 12.5, []),
               MetricsRecord("histogram", "a.size", 4096, ["p:q", "r:s"])]
    options = {"statsd_host": "127.0.0.1", "statsd_port": udp.getsockname()[1],
               "statsd_namespace": "ns"}
    markus_backend = DatadogMetrics(options)
    try:
        for record in records:
            markus_backend.emit_to_backend(record)
        markus_backend.client.flush()
        theirs = received(udp, len(records))
    finally:
        markus_backend.client.close_socket()
    ours = DogStatsdMetrics(options)
    for record in records:
        ours.emit_to_backend(record)
    assert received(udp, len(records)) == theirs
    assert theirs[1] == "ns.a.level:7|g|#x:y\n"


def test_orphaned_prometheus_directories_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from antenna_tw.prometheus import PREFIX, remove_orphans

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = tmp_path / f"{PREFIX}{gone.pid}-x1"
    live = tmp_path / f"{PREFIX}{os.getpid()}-x2"
    other = tmp_path / f"{PREFIX}x3"  # not named by this code: left alone
    for path in (orphan, live, other):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"\0" * 16)
    assert remove_orphans(str(tmp_path)) == [str(orphan)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
    assert remove_orphans(str(tmp_path / "missing")) == []
