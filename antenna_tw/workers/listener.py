"""
The one listening socket of ``--workers N``.

The parent opens it from the ``--port`` description, before the reactor and
with the plain ``socket`` module (it loads neither Twisted's endpoints nor
pyOpenSSL: ``footprint.py``), keeps it open across worker restarts, and
passes it to every worker as descriptor ``WORKER_FD`` (``spawnProcess``'s
``childFDs``). Each worker adopts it with ``reactor.adoptStreamPort``: one
accept queue for all of them, from which whichever worker is free first
takes the next connection. Why this design:
docs/architecture.rst, *Several processes*.
"""

from __future__ import annotations

import socket
from typing import Any

import attr
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

# The descriptor a worker finds the shared listening socket on.
WORKER_FD = 3
# Twisted's own default for tcp: and tcp6: ports.
DEFAULT_BACKLOG = 50


@attr.s(frozen=True)
class ListenAddress:
    """Where the parent listens: what a ``tcp:``/``tcp6:`` description says."""

    family: int = attr.ib()
    port: int = attr.ib()
    interface: str = attr.ib()
    backlog: int = attr.ib(default=DEFAULT_BACKLOG)


def _fields(description: str) -> list[str]:
    # strports syntax: fields split on ':', and '\:' is a colon inside a field
    # (an IPv6 interface).
    fields, current, chars = [], [], iter(description)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def parse_port(description: str) -> ListenAddress:
    """
    The address of a strports ``tcp:`` or ``tcp6:`` ``description`` such as
    ``tcp:8000:interface=127.0.0.1`` or ``tcp6:8000:interface=\\:\\:1``;
    ValueError for any other kind or option.
    """
    kind, *fields = _fields(description)
    if kind not in ("tcp", "tcp6") or not fields:
        raise ValueError(f"--workers needs a tcp: or tcp6: port, not {description!r}")
    port, interface, backlog = None, "", DEFAULT_BACKLOG
    for field in fields:
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
            raise ValueError(f"unknown {kind} option {name!r} in {description!r}")
    if port is None:
        raise ValueError(f"no port number in {description!r}")
    # As Twisted's own ports: tcp: is IPv4 unless its interface is an IPv6 address.
    if kind == "tcp6" or ":" in interface:
        return ListenAddress(socket.AF_INET6, port, interface or "::", backlog)
    return ListenAddress(socket.AF_INET, port, interface, backlog)


def open_listener(description: str) -> socket.socket:
    """
    The listening socket of ``description`` (``parse_port``), bound, listening
    and non-blocking (as ``adoptStreamPort`` wants it); OSError if it cannot
    be bound.
    """
    address = parse_port(description)
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        # As Twisted's ports: a restarted collector binds past TIME_WAIT leftovers.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.interface, address.port))
        sock.listen(address.backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@implementer(IStreamServerEndpoint)
@attr.s
class AdoptedPortEndpoint:
    """
    Serves the listening socket this process inherited as descriptor ``fd``
    (``WORKER_FD``), with the public ``reactor.adoptStreamPort``.
    """

    reactor: Any = attr.ib()  # IReactorSocket
    fd: int = attr.ib(default=WORKER_FD)

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        """Adopt the inherited socket; fails if ``fd`` is not a listening TCP socket."""
        try:
            sock = socket.socket(fileno=self.fd)
        except OSError as error:
            return defer.fail(OSError(
                f"no listening socket on descriptor {self.fd} ({error}): a worker is "
                "started by its --workers parent"))
        try:
            if (sock.type != socket.SOCK_STREAM
                    or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
                raise OSError(f"descriptor {self.fd} is not a listening TCP socket")
            # adoptStreamPort dup()s the descriptor; the inherited one is closed below.
            port: IListeningPort = self.reactor.adoptStreamPort(
                sock.fileno(), sock.family, protocolFactory)
        except OSError as error:
            return defer.fail(error)
        finally:
            sock.close()
        return defer.succeed(port)
