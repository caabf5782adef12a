"""
Deadlines and limits for connections (antenna_tw/intake/connections.py):
REQUEST_HEADER_TIMEOUT, REQUEST_MIN_BODY_RATE after REQUEST_BODY_GRACE, and
MAX_CONNECTIONS, on the real collector's Site driven by a fake clock over
StringTransports. (tests/system/test_connection_limits.py runs them against
``twistd``.)
"""

import resource

import pytest
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from antenna_tw.app import build_collector
from antenna_tw.config import load_config
from antenna_tw.intake.connections import (
    BusyProtocol,
    connection_cap,
    raise_descriptor_limit,
)
from antenna_tw.intake.http import CrashChannel, CrashSite
from antenna_tw.spool import SpoolEntry
from tests.helpers import test_environ

CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)


@pytest.fixture
def make_site(tmp_path):
    """A collector's Site on a fake clock, with these intake options."""
    def make(**options):
        environ = test_environ(tmp_path, REQUEST_TIMEOUT="0", **options)
        collector = build_collector(load_config(environ, None), reactor)
        collector.prepare()
        collector.spool.put = lambda crash: defer.succeed(
            SpoolEntry(f"0-{crash.crash_id}.crash", crash.crash_id, 0, 0))
        collector.mover.enqueue = lambda entry, crash=None: None
        old = collector.site
        clock = Clock()
        site = CrashSite(old.resource, limits=collector.config.intake, metrics=old.metrics,
                         clock=clock, admission=old.admission, takes_body=old.takes_body)
        site.startFactory()
        return site, clock
    return make


class TCPLikeTransport(StringTransport):
    """A StringTransport that can shut its sending side, as TCP can."""

    write_closed = False

    def loseWriteConnection(self):
        self.write_closed = True


def connect(site):
    transport = TCPLikeTransport(peerAddress=CLIENT)
    protocol = site.buildProtocol(CLIENT)
    protocol.makeConnection(transport)
    return protocol, transport


def run(clock, seconds):
    for _ in range(int(seconds * 10)):
        clock.advance(0.1)


def test_headers_trickled_past_the_deadline_are_cut_off(make_site):
    site, clock = make_site(REQUEST_HEADER_TIMEOUT="5")
    channel, transport = connect(site)
    prompt, prompt_transport = connect(site)
    channel.dataReceived(b"GET /__lbheartbeat__ HTTP/1.1\r\n")
    for second in range(4):  # a line a second: never silent
        run(clock, 1)
        channel.dataReceived(b"X-Slow-%d: x\r\n" % second)
        assert not transport.disconnecting
    run(clock, 2.1)  # 6.1 s since it connected, and the tick has run
    assert transport.disconnecting
    assert transport.value() == b""  # nothing answered, nothing kept
    channel.connectionLost(Failure(ConnectionDone()))
    assert channel not in site.channels
    # the other connection, silent all along, is past it too
    assert prompt_transport.disconnecting


def test_headers_in_time_and_idle_keep_alive_are_left_alone(make_site):
    site, clock = make_site(REQUEST_HEADER_TIMEOUT="5")
    channel, transport = connect(site)
    run(clock, 4)
    channel.dataReceived(b"GET /__lbheartbeat__ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    run(clock, 30)  # idle between requests: REQUEST_TIMEOUT's business, not this one's
    assert not transport.disconnecting
    channel.dataReceived(b"GET /__lbheartbeat__ HTTP/1.1\r\n")  # a second request begins
    run(clock, 6.1)
    assert transport.disconnecting


def test_a_body_slower_than_the_minimum_rate_is_cut_off_after_the_grace(make_site):
    site, clock = make_site(REQUEST_HEADER_TIMEOUT="0", REQUEST_MIN_BODY_RATE="1000",
                            REQUEST_BODY_GRACE="10")
    slow, slow_transport = connect(site)
    fast, fast_transport = connect(site)
    head = (b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: 1000000\r\n\r\n")
    slow.dataReceived(head)
    fast.dataReceived(head)
    calls = len(clock.getDelayedCalls())
    for _ in range(30):  # 15 s
        run(clock, 0.5)
        slow.dataReceived(b"x" * 400)  # 800 bytes/s
        fast.dataReceived(b"x" * 1200)  # 2,400 bytes/s
        # no timer per chunk
        assert len(clock.getDelayedCalls()) == calls
    assert slow_transport.disconnecting
    assert not fast_transport.disconnecting


def test_past_the_cap_connections_are_answered_busy_and_closed(make_site):
    site, clock = make_site(MAX_CONNECTIONS="2")
    assert site.max_connections == 2
    first, _ = connect(site)
    second, _ = connect(site)
    assert isinstance(first, CrashChannel) and isinstance(second, CrashChannel)
    busy, busy_transport = connect(site)
    assert isinstance(busy, BusyProtocol)
    answer = busy_transport.value()
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 60\r\n" in answer
    assert answer.endswith(b"\r\n\r\nDiscarded=busy")
    assert busy_transport.write_closed and not busy_transport.disconnecting
    busy.dataReceived(b"POST /submit HTTP/1.1\r\n")  # read and dropped
    run(clock, 2.1)
    assert busy_transport.disconnecting
    busy.connectionLost(Failure(ConnectionDone()))
    first.connectionLost(Failure(ConnectionDone()))
    third, _ = connect(site)  # room again
    assert isinstance(third, CrashChannel)


def test_connections_turned_away_are_counted_once_a_second_and_at_stop(make_site, log_messages):
    site, clock = make_site(MAX_CONNECTIONS="1")
    connect(site)
    for _ in range(3):
        connect(site)
    run(clock, 1.1)
    for _ in range(2):  # within the last second before the stop
        connect(site)
    site.stopFactory()
    counts = [message for message in log_messages if "connections busy: MAX_CONNECTIONS" in message]
    assert counts == ["answered 3 connections busy: MAX_CONNECTIONS (1) reached",
                      "answered 2 connections busy: MAX_CONNECTIONS (1) reached"]


def test_the_default_cap_keeps_room_for_files():
    assert connection_cap(0, 1024) == 896
    assert connection_cap(0, 4096) == 3584
    assert connection_cap(0, 256) == 192
    assert connection_cap(0, 10) == 1
    assert connection_cap(500, 4096) == 500


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 64:
        pytest.skip("needs a finite hard limit")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))
        assert raise_descriptor_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
