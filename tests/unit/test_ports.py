"""The --port descriptions: parsing, one-line refusals, the files of ssl:, socket activation."""

import socket

import pytest
from cryptography.hazmat.primitives import serialization

from antenna_tw.workers.ports import (
    InetPort,
    PortError,
    SystemdPort,
    TLSFiles,
    UnixPort,
    UnknownPortKind,
    check_shareable,
    open_listeners,
    parse_port,
    split_description,
    without_socket_activation,
)
from tests.tls import make_certificates

IPV4, IPV6 = socket.AF_INET, socket.AF_INET6


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


def test_fields_split_as_twisted_splits_them():
    assert split_description(r"tcp:8000:interface=\:\:1") == (
        ["tcp", "8000"], {"interface": "::1"})
    assert split_description(r"ssl:443:privateKey=a\=b.pem:certKey=c\\d") == (
        ["ssl", "443"], {"privateKey": "a=b.pem", "certKey": "c\\d"})


@pytest.mark.parametrize("description,parsed", [
    ("tcp:8000", (IPV4, "", 8000, 50)),
    ("tcp:8000:interface=127.0.0.1", (IPV4, "127.0.0.1", 8000, 50)),
    ("tcp:8000:127.0.0.1:7", (IPV4, "127.0.0.1", 8000, 7)),
    ("tcp:port=9000:backlog=1024:interface=0.0.0.0", (IPV4, "0.0.0.0", 9000, 1024)),
    # as Twisted's tcp: ports, an IPv6 interface (colons escaped) makes it IPv6
    (r"tcp:18006:interface=\:\:1", (IPV6, "::1", 18006, 50)),
    ("tcp6:8000", (IPV6, "::", 8000, 50)),
    ("tcp6:8000:7", (IPV6, "::", 8000, 7)),  # tcp6: takes backlog before interface
    (r"tcp6:port=8001:interface=\:\:1:backlog=7", (IPV6, "::1", 8001, 7)),
])
def test_tcp_ports(description, parsed):
    assert parse_port(description) == InetPort(description, *parsed)


def test_ssl_ports_name_their_files_which_are_checked(certificates):
    description = (f"ssl:8443:privateKey={certificates.key}:certKey={certificates.cert}"
                   r":interface=\:\:1")
    assert parse_port(description) == InetPort(
        description, IPV6, "::1", 8443, 50, TLSFiles(certificates.key, certificates.cert))
    # certKey defaults to privateKey, as in Twisted: one file with both
    both = certificates.key + ".both"
    with open(both, "w") as file:
        file.write(open(certificates.cert).read() + open(certificates.key).read())
    assert parse_port(f"ssl:8443:{both}").tls == TLSFiles(both, both)
    chained = parse_port(f"ssl:8443:privateKey={certificates.key}:certKey={certificates.cert}"
                         f":extraCertChain={certificates.ca}:sslmethod=TLS_METHOD").tls
    assert (chained.extra_cert_chain, chained.method) == (certificates.ca, "TLS_METHOD")


def test_an_ssl_port_s_tls_options_are_built_as_twisted_builds_them(certificates):
    tls = parse_port(f"ssl:0:privateKey={certificates.key}:certKey={certificates.cert}"
                     f":extraCertChain={certificates.ca}").tls
    options = tls.context_factory()
    assert options.certificate.to_cryptography().subject.rfc4514_string() == "CN=localhost"
    assert [cert.to_cryptography().subject.rfc4514_string()
            for cert in options.extraCertChain] == ["CN=antenna-tw test CA"]
    options.getContext()  # key and certificate match


def test_unix_and_systemd_ports():
    assert parse_port("unix:/run/a.sock:mode=660") == UnixPort(
        "unix:/run/a.sock:mode=660", "/run/a.sock", 0o660)
    assert parse_port("unix:/run/a.sock:lockfile=0").lockfile is False
    assert parse_port("systemd:domain=INET:index=0") == SystemdPort(
        "systemd:domain=INET:index=0", IPV4, 0)
    assert parse_port("systemd:INET6:name=https") == SystemdPort(
        "systemd:INET6:name=https", IPV6, "https")


@pytest.mark.parametrize("description,reason", [
    ("tcp:8000:interface=::1",
     r"interface is given twice (the colons of an IPv6 address are escaped: interface=\:\:1)"),
    ("tcp6:8000:7:::1", "too many fields: tcp6: takes port, backlog, interface (the colons "
                        r"of an IPv6 address are escaped: interface=\:\:1)"),
    ("tcp:x", "port: expected a port number from 0 to 65535, as in tcp:8000, not 'x'"),
    ("tcp:65536", "port: expected a port number from 0 to 65535, as in tcp:8000, not '65536'"),
    ("tcp6:", "port: expected a port number from 0 to 65535, as in tcp6:8000, not ''"),
    ("tcp:interface=127.0.0.1", "port: expected a port number from 0 to 65535, as in "
                                "tcp:8000"),
    ("tcp:8000:backlog=0", "backlog: expected a whole number above 0, not '0'"),
    ("tcp:8000:port=8001", "port is given twice"),
    ("tcp:80:x=1", "unknown option 'x' for tcp:; expected one of port, interface, backlog"),
    ("ssl:8443:privateKey=/nonexistent/key.pem",
     "privateKey: cannot read '/nonexistent/key.pem' (No such file or directory)"),
    ("unix:", "address: expected a socket path, as in unix:/run/antenna.sock"),
    ("unix:/a:mode=rw", "mode: expected octal permissions, as in mode=660"),
    ("unix:/a:lockfile=yes", "lockfile: expected 0 or 1"),
    ("systemd:domain=TCP:index=0", "domain: expected INET, INET6 or UNIX"),
    ("systemd:domain=INET", "expected one of index= or name=, as in "
                            "systemd:domain=INET:index=0"),
    ("systemd:domain=INET:index=-1", "index: expected the position of the socket among "
                                     "those systemd passes, from 0, not '-1'"),
    (":8000", "expected a kind, as in tcp:8000"),
])
def test_a_bad_description_is_refused_with_one_line_naming_the_option(description, reason):
    with pytest.raises(PortError) as refused:
        parse_port(description)
    assert str(refused.value) == f"--port {description!r}: {reason}"
    assert "\n" not in str(refused.value)


def test_an_unknown_kind_is_left_to_twisted_s_plugins():
    with pytest.raises(UnknownPortKind, match=r"unknown kind 'onion:'; expected tcp:, tcp6:, "
                                              r"ssl:, unix: or systemd:$"):
        parse_port("onion:80")


def test_the_files_of_an_ssl_port_must_hold_what_they_name(certificates, tmp_path):
    key, cert, ca = certificates.key, certificates.cert, certificates.ca
    empty = tmp_path / "empty.pem"
    empty.write_text("")

    def refusal(description):
        with pytest.raises(PortError) as refused:
            parse_port(description)
        return refused.value.reason

    # the CA's certificate is not the key's
    assert refusal(f"ssl:8443:privateKey={key}:certKey={ca}").startswith(
        f"certKey {ca!r} and privateKey {key!r}: expected a PEM certificate and its "
        "private key (")
    assert refusal(f"ssl:8443:privateKey={key}:certKey={cert}:extraCertChain={empty}") == (
        f"extraCertChain: expected PEM certificates in '{empty}' (no certificate in it)")
    assert refusal(f"ssl:8443:privateKey={key}:certKey={cert}:dhParameters={cert}").startswith(
        f"dhParameters: expected PEM Diffie-Hellman parameters in {cert!r} (")
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(serialization.load_pem_private_key(open(key, "rb").read(), None)
                          .private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret")))
    # refused, not a passphrase prompt on the terminal
    assert refusal(f"ssl:8443:privateKey={encrypted}:certKey={cert}") == (
        f"privateKey: '{encrypted}' is encrypted; expected a key without a passphrase "
        "(as Twisted's ssl: takes)")
    assert refusal(f"ssl:8443:privateKey={key}:certKey={cert}:sslmethod=SSLv3") == (
        "sslmethod: expected one of SSLv23_METHOD, TLS_METHOD, TLS_SERVER_METHOD, "
        "TLSv1_METHOD, TLSv1_1_METHOD, TLSv1_2_METHOD")


def test_workers_share_every_kind_but_unix_sockets():
    for description in ("tcp:0", "tcp6:0", "systemd:domain=INET6:index=1"):
        port = parse_port(description)
        assert check_shareable(port) is port
    for description in ("unix:/run/a.sock", "systemd:domain=UNIX:index=0"):
        with pytest.raises(PortError, match="--workers cannot share a Unix socket"):
            check_shareable(parse_port(description))


@pytest.mark.parametrize("environ,reason", [
    ({}, "LISTEN_PID is not set (is this process socket-activated?)"),
    ({"LISTEN_PID": "41", "LISTEN_FDS": "1"}, "LISTEN_PID is 41, not this process (42)"),
    ({"LISTEN_PID": "42", "LISTEN_FDS": "x"},
     "LISTEN_FDS: expected the number of sockets passed"),
    ({"LISTEN_PID": "42", "LISTEN_FDS": "1"}, "index=1, but LISTEN_FDS=1"),
])
def test_socket_activation_is_checked_as_systemd_does(environ, reason):
    port = parse_port("systemd:domain=INET:index=1")
    with pytest.raises(PortError) as refused:
        port.descriptor(environ, 42)
    assert refused.value.reason == f"no socket from systemd: {reason}"


def test_socket_activation_finds_a_descriptor_by_position_or_name():
    environ = {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:https"}
    assert parse_port("systemd:domain=INET:index=1").descriptor(environ, 42) == 4
    assert parse_port("systemd:domain=INET:name=https").descriptor(environ, 42) == 4
    assert parse_port("systemd:domain=INET:name=http").descriptor(environ, 42) == 3
    with pytest.raises(PortError, match="name=x is not in LISTEN_FDNAMES=http:https"):
        parse_port("systemd:domain=INET:name=x").descriptor(environ, 42)


def test_workers_never_see_the_parent_s_socket_activation():
    environ = {"LISTEN_PID": "42", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x", "PATH": "/bin"}
    assert without_socket_activation(environ) == {"PATH": "/bin"}


def test_listeners_open_in_order_or_not_at_all():
    first, second = open_listeners([parse_port("tcp:0:interface=127.0.0.1"),
                                    parse_port(r"tcp6:0:interface=\:\:1")
                                    if socket.has_ipv6 else parse_port("tcp:0")])
    with first, second:
        assert first.family == IPV4 and first.getblocking() is False
        taken = first.getsockname()[1]
        with pytest.raises(PortError, match=f"--port 'tcp:{taken}:interface=127.0.0.1': "
                                            "cannot listen .*[Aa]ddress already in use"):
            open_listeners([parse_port("tcp:0:interface=127.0.0.1"),
                            parse_port(f"tcp:{taken}:interface=127.0.0.1")])
