"""
The ``--port`` descriptions: parsed once, up front, into what opens them.

A description is Twisted's strports syntax (``kind:field:name=value``,
``\\`` escaping the next character, so ``interface=\\:\\:1`` is ``::1``),
with Twisted's positional fields and option names for the kinds below. A bad
one is refused with one line that names the option and what was expected;
an ``ssl:`` port's certificate, key, chain and Diffie-Hellman files are read
and checked at once (with the standard library's ``ssl``: the ``--workers``
parent never loads pyOpenSSL, ``footprint.py``).

Each parsed port can open its listening socket with the plain ``socket``
module (``open``), which is how the ``--workers`` parent opens every port
before its workers start, and gives the twistd endpoint of a single process
(``endpoint``). ``systemd:`` ports are the sockets systemd passed this
process (``LISTEN_PID``, ``LISTEN_FDS``, ``LISTEN_FDNAMES``, checked as
``sd_listen_fds(3)`` does).

This module imports nothing from Twisted at import time.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attr

if TYPE_CHECKING:
    from twisted.internet.interfaces import IStreamServerEndpoint

# The kinds --workers can open in the parent and share with every worker.
KINDS = ("tcp", "tcp6", "ssl", "unix", "systemd")
# Twisted's own default for every stream port.
DEFAULT_BACKLOG = 50
# sd_listen_fds(3): the first descriptor systemd passes.
SD_LISTEN_FDS_START = 3
# The LISTEN_* variables of socket activation: a worker must never see them
# (they name the parent's pid and descriptors).
SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# pyOpenSSL's method names that CertificateOptions(method=) takes.
SSL_METHODS = ("SSLv23_METHOD", "TLS_METHOD", "TLS_SERVER_METHOD", "TLSv1_METHOD",
               "TLSv1_1_METHOD", "TLSv1_2_METHOD")
SYSTEMD_DOMAINS = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}
IPV6_HINT = r"(the colons of an IPv6 address are escaped: interface=\:\:1)"
PEM_CERTIFICATE = re.compile(
    r"(-----BEGIN CERTIFICATE-----\n.+?\n-----END CERTIFICATE-----)", re.DOTALL)

# Each kind's options, in the order Twisted takes them as positional fields.
POSITIONAL = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface", "backlog",
            "extraCertChain", "dhParameters"),
    "unix": ("address", "mode", "backlog", "lockfile"),
    "systemd": ("domain", "index", "name"),
}


class PortError(ValueError):
    """A ``--port`` description that cannot be served; its message is one line."""

    def __init__(self, description: str, reason: str) -> None:
        super().__init__(f"--port {description!r}: {reason}")
        self.description = description
        self.reason = reason


class UnknownPortKind(PortError):
    """A kind not in ``KINDS``: only twistd's own endpoint parser may know it."""


def split_description(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The positional fields (the kind first) and the ``name=value`` options of
    a strports ``description``, as Twisted splits them: ``:`` between
    fields, the first ``=`` of a field after its name, ``\\`` escaping the
    next character. PortError for an option given twice.
    """
    fields: list[tuple[str | None, str]] = []
    name: str | None = None
    current: list[str] = []
    chars = iter(description)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            fields.append((name, "".join(current)))
            name, current = None, []
        elif char == "=" and name is None:
            name, current = "".join(current), []
        else:
            current.append(char)
    fields.append((name, "".join(current)))
    positional = [value for key, value in fields if key is None]
    options: dict[str, str] = {}
    for key, value in fields:
        if key is not None:
            if key in options:
                raise PortError(description, f"{key} is given twice")
            options[key] = value
    return positional, options


def _options(description: str) -> tuple[str, dict[str, str]]:
    """The kind of ``description`` and every option by name, positional ones named."""
    positional, named = split_description(description)
    kind, fields = positional[0], positional[1:]
    if not kind:
        raise PortError(description, "expected a kind, as in tcp:8000")
    if kind not in POSITIONAL:
        raise UnknownPortKind(
            description, f"unknown kind {kind + ':'!r}; expected {_kinds()}")
    names = POSITIONAL[kind]
    if len(fields) > len(names):
        raise PortError(description, f"too many fields: {kind}: takes {', '.join(names)} "
                        f"{IPV6_HINT if ':' in description[len(kind) + 1:] else ''}".rstrip())
    options = dict(zip(names, fields, strict=False))  # fewer fields than names
    for key, value in named.items():
        if key not in names:
            raise PortError(description, f"unknown option {key!r} for {kind}:; expected one "
                            f"of {', '.join(names)}")
        if key in options:
            hint = f" {IPV6_HINT}" if key == "interface" or not options[key] else ""
            raise PortError(description, f"{key} is given twice{hint}")
        options[key] = value
    return kind, options


def _kinds() -> str:
    return ", ".join(f"{kind}:" for kind in KINDS[:-1]) + f" or {KINDS[-1]}:"


def _number(description: str, options: Mapping[str, str], name: str, default: int | None,
            low: int, high: int, expected: str) -> int:
    value = options.get(name)
    if value is None:
        if default is None:
            raise PortError(description, f"{name}: expected {expected}")
        return default
    try:
        number = int(value, 10)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise PortError(description, f"{name}: expected {expected}, not {value!r}")
    return number


def _port_number(description: str, options: Mapping[str, str], kind: str) -> int:
    return _number(description, options, "port", None, 0, 65535,
                   f"a port number from 0 to 65535, as in {kind}:8000")


def _backlog(description: str, options: Mapping[str, str]) -> int:
    return _number(description, options, "backlog", DEFAULT_BACKLOG, 1, 1 << 31,
                   "a whole number above 0")


def _read(description: str, option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise PortError(description, f"{option}: cannot read {path!r} "
                        f"({error.strerror or error})") from None


@attr.s(frozen=True, auto_attribs=True)
class TLSFiles:
    """What an ``ssl:`` port serves: Twisted's ``ssl:`` options, files checked."""

    private_key: str
    cert_key: str
    extra_cert_chain: str | None = None
    dh_parameters: str | None = None
    method: str | None = None

    @classmethod
    def from_options(cls, description: str, options: Mapping[str, str]) -> TLSFiles:
        """The files of an ``ssl:`` description's ``options``, each one read and checked."""
        private_key = options.get("privateKey", "server.pem")  # Twisted's defaults
        cert_key = options.get("certKey", private_key)
        method = options.get("sslmethod")
        if method is not None and method not in SSL_METHODS:
            raise PortError(description, f"sslmethod: expected one of {', '.join(SSL_METHODS)}")
        files = cls(private_key, cert_key, options.get("extraCertChain"),
                    options.get("dhParameters"), method)
        files.check(description)
        return files

    def check(self, description: str) -> None:
        """PortError unless every file is readable and holds what it should."""
        import ssl  # the standard library's: no pyOpenSSL in the parent

        for option, path in (("privateKey", self.private_key), ("certKey", self.cert_key),
                             ("extraCertChain", self.extra_cert_chain),
                             ("dhParameters", self.dh_parameters)):
            if path is not None:
                _read(description, option, path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

        def no_passphrase() -> bytes:
            # else OpenSSL would prompt on the terminal
            raise PortError(description, f"privateKey: {self.private_key!r} is encrypted; "
                            "expected a key without a passphrase (as Twisted's ssl: takes)")

        try:
            context.load_cert_chain(self.cert_key, self.private_key, password=no_passphrase)
        except PortError:
            raise
        except (ssl.SSLError, ValueError) as error:
            raise PortError(description, f"certKey {self.cert_key!r} and privateKey "
                            f"{self.private_key!r}: expected a PEM certificate and its "
                            f"private key ({_reason(error)})") from None
        if self.extra_cert_chain is not None:
            chain = _read(description, "extraCertChain", self.extra_cert_chain)
            try:
                if not PEM_CERTIFICATE.search(chain.decode("ascii")):
                    raise ValueError("no certificate in it")
                context.load_verify_locations(cafile=self.extra_cert_chain)
            except (ssl.SSLError, ValueError) as error:
                raise PortError(description, f"extraCertChain: expected PEM certificates in "
                                f"{self.extra_cert_chain!r} ({_reason(error)})") from None
        if self.dh_parameters is not None:
            try:
                context.load_dh_params(self.dh_parameters)
            except (ssl.SSLError, ValueError) as error:
                raise PortError(description, f"dhParameters: expected PEM Diffie-Hellman "
                                f"parameters in {self.dh_parameters!r} "
                                f"({_reason(error)})") from None

    def context_factory(self) -> Any:
        """
        The server TLS options (``twisted.internet.ssl.CertificateOptions``),
        built as Twisted's own ``ssl:`` parser builds them. Loads pyOpenSSL.
        """
        from OpenSSL import SSL
        from twisted.internet import ssl

        with open(self.cert_key, "rb") as cert, open(self.private_key, "rb") as key:
            certificate = ssl.PrivateCertificate.loadPEM(cert.read() + b"\n" + key.read())
        chain = None
        if self.extra_cert_chain is not None:
            with open(self.extra_cert_chain, "rb") as file:
                chain = [ssl.Certificate.loadPEM(pem).original
                         for pem in PEM_CERTIFICATE.findall(file.read().decode("ascii"))]
        dh = None
        if self.dh_parameters is not None:
            from twisted.python.filepath import FilePath

            dh = ssl.DiffieHellmanParameters.fromFile(FilePath(self.dh_parameters))
        method = {} if self.method is None else {"method": getattr(SSL, self.method)}
        return ssl.CertificateOptions(
            privateKey=certificate.privateKey.original, certificate=certificate.original,
            extraCertChain=chain, dhParameters=dh, **method)


def _reason(error: Exception) -> str:
    return str(getattr(error, "reason", None) or error)


@attr.s(frozen=True, auto_attribs=True)
class InetPort:
    """A ``tcp:``, ``tcp6:`` or ``ssl:`` port: an address, and TLS files for ``ssl:``."""

    description: str
    family: int
    interface: str
    port: int
    backlog: int = DEFAULT_BACKLOG
    tls: TLSFiles | None = None

    def open(self, environ: Mapping[str, str] | None = None) -> socket.socket:
        """The listening socket, bound and non-blocking (as ``adoptStreamPort`` wants it)."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            # As Twisted's ports: a restarted collector binds past TIME_WAIT leftovers.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.interface, self.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            raise PortError(self.description, f"cannot listen ({error})") from None
        return sock

    def endpoint(self, reactor: Any, environ: Mapping[str, str]) -> IStreamServerEndpoint:
        """Twisted's endpoint for this port, for a single process."""
        from twisted.internet import endpoints

        if self.tls is not None:
            return endpoints.SSL4ServerEndpoint(reactor, self.port, self.tls.context_factory(),
                                                self.backlog, self.interface)
        if self.family == socket.AF_INET6:
            return endpoints.TCP6ServerEndpoint(reactor, self.port, self.backlog,
                                                self.interface)
        return endpoints.TCP4ServerEndpoint(reactor, self.port, self.backlog, self.interface)


@attr.s(frozen=True, auto_attribs=True)
class UnixPort:
    """
    A ``unix:`` port: a socket file, its mode, and Twisted's lock file
    beside it. A single process only (``check_shareable``).
    """

    description: str
    address: str
    mode: int = 0o666
    backlog: int = DEFAULT_BACKLOG
    lockfile: bool = True
    tls: ClassVar[None] = None  # never TLS (InetPort.tls)

    def endpoint(self, reactor: Any, environ: Mapping[str, str]) -> IStreamServerEndpoint:
        """Twisted's endpoint for this port, for a single process."""
        from twisted.internet.endpoints import UNIXServerEndpoint

        return UNIXServerEndpoint(reactor, self.address, self.backlog, self.mode,
                                  self.lockfile)


@attr.s(frozen=True, auto_attribs=True)
class SystemdPort:
    """A ``systemd:`` port: one of the listening sockets systemd passed this process."""

    description: str
    family: int
    # Which of the sockets systemd passed: its position (index=) or its name (name=).
    which: int | str
    tls: ClassVar[None] = None  # never TLS (InetPort.tls)

    def descriptor(self, environ: Mapping[str, str], pid: int) -> int:
        """
        The descriptor systemd passed for this port, read from ``environ``
        as ``sd_listen_fds(3)`` reads it; PortError when there is none.
        """
        def refuse(reason: str) -> PortError:
            return PortError(self.description, f"no socket from systemd: {reason}")

        if environ.get("LISTEN_PID") is None:
            raise refuse("LISTEN_PID is not set (is this process socket-activated?)")
        if environ["LISTEN_PID"] != str(pid):
            raise refuse(f"LISTEN_PID is {environ['LISTEN_PID']}, not this process ({pid})")
        try:
            count = int(environ.get("LISTEN_FDS", ""), 10)
        except ValueError:
            raise refuse("LISTEN_FDS: expected the number of sockets passed") from None
        names = environ.get("LISTEN_FDNAMES")
        if isinstance(self.which, int):
            if self.which >= count:
                raise refuse(f"index={self.which}, but LISTEN_FDS={count}")
            return SD_LISTEN_FDS_START + self.which
        listed = names.split(":") if names else []
        if len(listed) != count or self.which not in listed:
            raise refuse(f"name={self.which} is not in LISTEN_FDNAMES={names or ''}")
        return SD_LISTEN_FDS_START + listed.index(self.which)

    def open(self, environ: Mapping[str, str] | None = None) -> socket.socket:
        """
        The inherited listening socket, checked (kind, family, listening),
        non-blocking. ``environ``: the process's environment as it started
        (``socket_activation``), since importing ``twisted.internet.endpoints``
        removes ``LISTEN_PID`` and ``LISTEN_FDS`` from ``os.environ``.
        """
        fd = self.descriptor(os.environ if environ is None else environ, os.getpid())
        try:
            sock = socket.socket(fileno=fd)
        except OSError as error:
            raise PortError(self.description, f"descriptor {fd} ({error})") from None
        if (sock.type != socket.SOCK_STREAM or sock.family != self.family
                or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
            sock.detach()  # not ours to close
            domain = next(key for key, value in SYSTEMD_DOMAINS.items() if value == self.family)
            raise PortError(self.description, f"descriptor {fd}: expected a listening "
                            f"{domain} stream socket (a .socket unit with Accept=no)")
        os.set_inheritable(fd, False)  # sd_listen_fds: FD_CLOEXEC
        sock.setblocking(False)
        return sock

    def endpoint(self, reactor: Any, environ: Mapping[str, str]) -> IStreamServerEndpoint:
        """The inherited socket (``environ`` as ``open``), adopted by this process."""
        from antenna_tw.workers.listener import AdoptedPortEndpoint

        return AdoptedPortEndpoint(reactor, self.open(environ).detach())


Port = InetPort | UnixPort | SystemdPort
# What the --workers parent opens and shares (check_shareable).
SharedPort = InetPort | SystemdPort


def parse_port(description: str, loopback: bool = False) -> Port:
    """
    ``description`` parsed (Twisted's strports syntax, the kinds in
    ``KINDS``), an ``ssl:`` port's files checked; PortError, one line, if
    it is bad; UnknownPortKind for another kind. ``loopback``: a ``tcp:``,
    ``tcp6:`` or ``ssl:`` port that names no interface listens on loopback
    (``127.0.0.1``, ``::1`` for ``tcp6:``), which its description then
    says, instead of every interface.
    """
    kind, options = _options(description)
    if loopback and kind in ("tcp", "tcp6", "ssl") and "interface" not in options:
        interface = "::1" if kind == "tcp6" else "127.0.0.1"
        options["interface"] = interface
        description += ":interface=" + interface.replace(":", "\\:")
    if kind == "unix":
        if not options.get("address"):
            raise PortError(description, "address: expected a socket path, as in "
                            "unix:/run/antenna.sock")
        try:
            mode = int(options.get("mode", "666"), 8)
        except ValueError:
            raise PortError(description, "mode: expected octal permissions, as in "
                            "mode=660") from None
        lockfile = options.get("lockfile", "1")
        if lockfile not in ("0", "1"):
            raise PortError(description, "lockfile: expected 0 or 1")
        return UnixPort(description, options["address"], mode,
                        _backlog(description, options), lockfile == "1")
    if kind == "systemd":
        domain = options.get("domain")
        if domain not in SYSTEMD_DOMAINS:
            raise PortError(description, "domain: expected INET, INET6 or UNIX")
        if ("index" in options) == ("name" in options):
            raise PortError(description, "expected one of index= or name=, as in "
                            "systemd:domain=INET:index=0")
        which = options["name"] if "name" in options else _number(
            description, options, "index", None, 0, 1 << 16,
            "the position of the socket among those systemd passes, from 0")
        return SystemdPort(description, SYSTEMD_DOMAINS[domain], which)
    port = _port_number(description, options, kind)
    backlog = _backlog(description, options)
    interface = options.get("interface", "::" if kind == "tcp6" else "")
    # As Twisted's ports: tcp: and ssl: are IPv4 unless the interface is an IPv6 address.
    family = socket.AF_INET6 if kind == "tcp6" or ":" in interface else socket.AF_INET
    tls = TLSFiles.from_options(description, options) if kind == "ssl" else None
    return InetPort(description, family, interface, port, backlog, tls)


def parse_ports(descriptions: Sequence[str]) -> list[Port]:
    """Every ``--port`` description parsed (``parse_port``), in order."""
    return [parse_port(description) for description in descriptions]


def check_shareable(port: Port) -> SharedPort:
    """
    ``port``, if the ``--workers`` parent can open it and share it with its
    workers; PortError for a Unix socket: a worker adopts it with
    ``adoptStreamPort``, and Twisted's adopted Unix port sets the file's mode
    to 666 and removes the file when it stops listening, so the first worker
    to stop or restart would take the path away from all the others.
    """
    if isinstance(port, UnixPort) or port.family == socket.AF_UNIX:
        raise PortError(port.description, "--workers cannot share a Unix socket (Twisted "
                        "removes its file when any one worker stops); use --workers 0")
    return port


def open_listeners(ports: Sequence[SharedPort],
                   environ: Mapping[str, str] | None = None) -> list[socket.socket]:
    """
    Every port's listening socket (``open``), in order; if one cannot be
    opened, those already open are closed again and its PortError raised.
    """
    opened: list[socket.socket] = []
    try:
        for port in ports:
            opened.append(port.open(environ))
    except BaseException:
        for listener in opened:
            listener.close()
        raise
    return opened


def socket_activation(environ: Mapping[str, str]) -> dict[str, str]:
    """Socket activation's variables in ``environ`` (read them before Twisted's endpoints)."""
    return {key: value for key, value in environ.items() if key in SYSTEMD_VARIABLES}


def without_socket_activation(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` less socket activation's variables (a worker must not read the parent's)."""
    return {key: value for key, value in environ.items() if key not in SYSTEMD_VARIABLES}

