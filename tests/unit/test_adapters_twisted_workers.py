"""
Pins what ``antenna_tw.adapters.twisted.close_without_shutdown`` relies on:
a TCP transport whose ``_shouldShutdown`` is false closes its descriptor
without ``shutdown()``, so the connection lives on in another descriptor of
the same socket (a sibling worker's, in ``antenna_tw.workers.balance``).
"""

import socket

import pytest_twisted
from twisted.internet import defer, protocol, reactor, task, tcp, threads

from antenna_tw.adapters.twisted import close_without_shutdown


class HandsOver(protocol.Protocol):
    """Keeps a duplicate of its socket, then lets its own descriptor go."""

    def __init__(self, close):
        self.close = close
        self.lost = defer.Deferred()

    def connectionMade(self):
        self.factory.kept.append(self.transport.getHandle().dup())
        self.close(self.transport)

    def connectionLost(self, reason):
        self.lost.callback(None)


def serve_once(close):
    factory = protocol.Factory()
    factory.kept = []
    factory.protocols = []

    def build(addr):
        handler = HandsOver(close)
        handler.factory = factory
        factory.protocols.append(handler)
        return handler

    factory.buildProtocol = build
    return factory


async def through_the_duplicate(close):
    factory = serve_once(close)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    try:
        while not factory.protocols:
            await task.deferLater(reactor, 0.01, lambda: None)
        await factory.protocols[0].lost  # this process's transport is gone
        [kept] = factory.kept

        def talk():
            """What the duplicate heard, and what the client heard back (or the error)."""
            kept.settimeout(5)
            try:
                client.sendall(b"ping")
                heard = kept.recv(4)
                kept.sendall(b"pong")
                return heard, client.recv(4)
            except OSError as error:
                return "failed", type(error).__name__

        return await threads.deferToThread(talk)
    finally:
        client.close()
        for sock in factory.kept:
            sock.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_connection_lives_on_in_another_descriptor():
    assert await through_the_duplicate(close_without_shutdown) == (b"ping", b"pong")


@pytest_twisted.ensureDeferred
async def test_a_plain_lose_connection_would_end_it_there_too():
    # What the adapter avoids: shutdown() ends the connection for every descriptor.
    heard, answer = await through_the_duplicate(lambda transport: transport.loseConnection())
    # shut down: end of stream at once, or an error on the way
    assert heard in (b"", "failed")
    assert answer != b"pong"


def test_the_flag_is_where_the_adapter_sets_it():
    assert tcp.Server._shouldShutdown is True  # inherited from tcp._SocketCloser
