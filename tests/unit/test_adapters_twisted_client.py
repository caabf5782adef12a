"""
Pins what ``antenna_tw.adapters.twisted`` (HTTP client section) sets on a
Twisted TCP transport beyond its public API: ``send_in_one_turn`` raises
``FileDescriptor.SEND_LIMIT`` on one transport, and ``writeSomeData`` then
hands the socket the whole body in one ``send``. If an upgrade renames the
attribute or stops reading it per instance, these fail.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.abstract import FileDescriptor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from antenna_tw.adapters.twisted import send_in_one_turn

BODY = b"\x00" * 400_000


class Sink(Protocol):
    def dataReceived(self, data):  # noqa: N802 - Twisted's name
        self.factory.received += len(data)


class SinkFactory(Factory):
    protocol = Sink
    noisy = False
    received = 0


class RecordingSocket:
    """The transport's socket, recording how much each ``send`` was offered."""

    def __init__(self, sock):
        self.sock = sock
        self.offered = []

    def send(self, data):
        self.offered.append(len(data))
        return self.sock.send(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


async def offered_sizes(limit):
    sink = SinkFactory()
    port = reactor.listenTCP(0, sink, interface="127.0.0.1")
    try:
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(Protocol))
        transport = client.transport
        if limit:
            send_in_one_turn(transport, limit)
        recording = transport.socket = RecordingSocket(transport.socket)
        transport.write(BODY)
        while sink.received < len(BODY):
            await task.deferLater(reactor, 0.01, lambda: None)
        transport.socket = recording.sock
        transport.loseConnection()
        return recording.offered
    finally:
        await port.stopListening()


def test_the_default_send_limit_is_128_kib():
    assert FileDescriptor.SEND_LIMIT == 128 * 1024


@pytest_twisted.ensureDeferred
async def test_twisted_offers_128_kib_per_send_by_default():
    offered = await offered_sizes(0)
    assert offered[0] == 128 * 1024 and len(offered) >= 4


@pytest_twisted.ensureDeferred
async def test_a_raised_limit_offers_the_whole_body_at_once():
    offered = await offered_sizes(4 * 1024 * 1024)
    assert offered[0] == len(BODY)
    assert FileDescriptor.SEND_LIMIT == 128 * 1024  # the class's own is untouched


def test_a_transport_without_a_file_descriptor_is_left_alone():
    class Wrapper:
        transport = None

    send_in_one_turn(Wrapper(), 1 << 20)  # no error, nothing to set
