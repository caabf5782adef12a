"""
A TCP server endpoint with SO_REUSEPORT, so that several worker processes
each have their own listening socket on one port and the kernel spreads
connections between them (Twisted's endpoints have no such option).
"""

from __future__ import annotations

import socket
from typing import Any

import attr
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer


def parse_tcp_description(description: str) -> tuple[int, str, int]:
    """
    ``(port, interface, backlog)`` from a strports ``tcp:`` description such
    as ``tcp:8000:interface=127.0.0.1``; ValueError for anything else.
    """
    fields = description.split(":")
    if fields[0] != "tcp" or len(fields) < 2:
        raise ValueError(f"--workers needs a tcp: port, not {description!r}")
    port, interface, backlog = None, "", 50
    for field in fields[1:]:
        name, sep, value = field.partition("=")
        if not sep:
            port = int(name)
        elif name == "port":
            port = int(value)
        elif name == "interface":
            interface = value
        elif name == "backlog":
            backlog = int(value)
        else:
            raise ValueError(f"unknown tcp option {name!r} in {description!r}")
    if port is None:
        raise ValueError(f"no port number in {description!r}")
    return port, interface, backlog


@implementer(IStreamServerEndpoint)
@attr.s
class ReusePortEndpoint:
    """Listen on ``interface:port`` with SO_REUSEADDR and SO_REUSEPORT set."""

    reactor: Any = attr.ib()  # IReactorSocket
    port: int = attr.ib()
    interface: str = attr.ib(default="")
    backlog: int = attr.ib(default=50)

    @classmethod
    def from_description(cls, reactor: Any, description: str) -> ReusePortEndpoint:
        """The endpoint of a strports ``tcp:`` ``description``; ValueError for another."""
        return cls(reactor, *parse_tcp_description(description))

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        family = socket.AF_INET6 if ":" in self.interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.interface, self.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
            # adoptStreamPort dup()s the descriptor; ours is closed below.
            port = self.reactor.adoptStreamPort(sock.fileno(), family, protocolFactory)
        except OSError as error:
            return defer.fail(error)
        finally:
            sock.close()
        return defer.succeed(port)
