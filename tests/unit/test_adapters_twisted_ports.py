"""
Pins what ``antenna_tw.adapters.twisted.bound_accepts`` relies on in
twisted.internet's listening ``tcp.Port``: each ``doRead`` accepts up to its
``numberAccepts`` queued connections and raises it by 20 after a full batch.
If an upgrade changes that, these fail instead of the workers' balance.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor

from antenna_tw.adapters.twisted import bound_accepts
from antenna_tw.workers.listener import ACCEPTS_PER_WAKEUP, AdoptedPortEndpoint
from antenna_tw.workers.ports import parse_port


class Counting(protocol.Factory):
    """Builds protocols that hang up at once, and counts them."""

    protocol = protocol.Protocol

    def __init__(self) -> None:
        self.built: list[protocol.Protocol] = []

    def buildProtocol(self, addr: object) -> protocol.Protocol:
        built = super().buildProtocol(addr)
        assert built is not None
        self.built.append(built)
        return built

    def close_all(self) -> None:
        for built in self.built:
            built.transport.abortConnection()


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for client in made:
        client.close()


def queue(port: int, count: int, clients: list[socket.socket]) -> None:
    """``count`` connections waiting in the port's accept queue (loopback completes them)."""
    for _ in range(count):
        clients.append(socket.create_connection(("127.0.0.1", port)))


@pytest_twisted.inlineCallbacks
def test_a_read_accepts_up_to_number_accepts_then_raises_it_by_20(clients):
    factory = Counting()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        queue(port.getHost().port, 5, clients)
        port.numberAccepts = 2
        port.doRead()
        assert len(factory.built) == 2
        assert port.numberAccepts == 22  # a full batch: more next time
        port.doRead()
        assert len(factory.built) == 5
        assert port.numberAccepts == 3  # fewer than allowed: that many
    finally:
        factory.close_all()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_bound_accepts_takes_at_most_that_many_per_read(clients):
    factory = Counting()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        bound_accepts(port, 1)
        queue(port.getHost().port, 3, clients)
        for accepted in (1, 2, 3):
            port.doRead()
            assert len(factory.built) == accepted
    finally:
        factory.close_all()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_worker_takes_a_bounded_number_of_queued_connections_per_wakeup(clients):
    listener = parse_port("tcp:0:interface=127.0.0.1").open()
    factory = Counting()
    try:
        port = yield AdoptedPortEndpoint(reactor, os.dup(listener.fileno())).listen(factory)
    finally:
        listener.close()  # the port has its own descriptor
    try:
        queue(port.getHost().port, ACCEPTS_PER_WAKEUP + 2, clients)
        port.doRead()
        assert len(factory.built) == ACCEPTS_PER_WAKEUP
        port.doRead()
        assert len(factory.built) == ACCEPTS_PER_WAKEUP + 2
    finally:
        factory.close_all()
        yield port.stopListening()
