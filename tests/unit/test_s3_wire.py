"""
The S3 client's HTTP/1.1 (``antenna_tw.ext.s3.wire``) against a real
loopback server that answers each request with the bytes a test scripts:
Content-Length and chunked answers, keep-alive and ``Connection: close``, a
HEAD, an answer cut short, a server that never answers, one that had closed
an idle connection, bytes that are not HTTP.
"""

from __future__ import annotations

import hashlib

import attr
import pytest
import pytest_twisted
from twisted.internet import defer, error, reactor, task
from twisted.internet.protocol import Factory, Protocol

from antenna_tw.backoff import Backoff
from antenna_tw.config import load_config
from antenna_tw.ext.s3.client import (
    BucketLocation, CredentialSource, S3Connection, S3Unreachable, Timeouts, build_connection,
)
from antenna_tw.ext.s3.wire import BadAnswer, ConnectionPool, request_head
from tests.s3server import free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-amz-request-id: 1\r\n\r\n"
CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
SLOWDOWN = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message></Error>"
CHUNKED = (b"HTTP/1.1 503 Slow Down\r\nTransfer-Encoding: chunked\r\n"
           b"x-amz-bucket-region: eu-west-1\r\n\r\n"
           + b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                      for part in (SLOWDOWN[:20], SLOWDOWN[20:])) + b"0\r\n\r\n")


@attr.s
class Seen:
    connection: int = attr.ib()
    head: bytes = attr.ib()
    body: bytes = attr.ib()


class Scripted(Protocol):
    """Reads whole requests (Content-Length bodies); answers each with the next script step."""

    def connectionMade(self):  # noqa: N802 - Twisted's name
        self.factory.connections += 1
        self.number = self.factory.connections
        self.buffer = b""

    def dataReceived(self, data):  # noqa: N802 - Twisted's name
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.factory.seen.append(Seen(self.number, head, rest[:length]))
            step = self.factory.script.pop(0)
            if callable(step):
                step(self)
            else:
                self.transport.write(step)

    def connectionLost(self, reason):  # noqa: N802 - Twisted's name
        self.factory.closed.append(self.number)


class Server(Factory):
    protocol = Scripted
    noisy = False

    def __init__(self, script):
        self.script = list(script)
        self.seen = []
        self.closed = []
        self.connections = 0


@pytest_twisted.async_yield_fixture
async def serve():
    ports = []

    def start(*script):
        server = Server(script)
        port = reactor.listenTCP(0, server, interface="127.0.0.1")
        ports.append(port)
        server.url = f"http://127.0.0.1:{port.getHost().port}"
        return server

    yield start
    for port in ports:
        await port.stopListening()


@pytest_twisted.async_yield_fixture
async def pool():
    made = ConnectionPool(reactor, max_idle=2)
    yield made
    await made.close()


async def turn(times=3):
    """Let the reactor run a few turns (a close reaches the other side)."""
    for _ in range(times):
        await task.deferLater(reactor, 0.01, lambda: None)


def hang(protocol):
    """Never answer."""


def close_now(protocol):
    """Close without answering: as a server whose idle timeout just fired."""
    protocol.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_requests_reuse_one_kept_alive_connection(serve, pool):
    server = serve(OK, OK, CHUNKED)
    body = bytes(range(256)) * 1600  # 400 KB
    first = await pool.request("PUT", f"{server.url}/crashes/v1/dump/a%20b", body,
                               {"X-Amz-Date": "20261204T000000Z"})
    second = await pool.request("PUT", f"{server.url}/crashes/v1/dump_names/x", b"[]", {})
    third = await pool.request("GET", f"{server.url}/crashes/?list-type=2&prefix=v2", b"", {})
    assert (first.status, first.phrase, first.body) == (200, "OK", b"")
    assert first.headers[b"x-amz-request-id"] == b"1"
    assert (third.status, third.phrase, third.body) == (503, "Slow Down", SLOWDOWN)
    assert third.headers[b"x-amz-bucket-region"] == b"eu-west-1"
    assert [seen.connection for seen in server.seen] == [1, 1, 1]
    port = server.url.rsplit(":", 1)[1]
    assert server.seen[0].head.split(b"\r\n") == [
        b"PUT /crashes/v1/dump/a%20b HTTP/1.1", f"Host: 127.0.0.1:{port}".encode(),
        b"Content-Length: 409600", b"X-Amz-Date: 20261204T000000Z"]
    assert server.seen[0].body == body
    assert server.seen[1].body == b"[]"
    assert server.seen[2].head.split(b"\r\n")[0] == (
        b"GET /crashes/?list-type=2&prefix=v2 HTTP/1.1")
    assert b"Content-Length" not in server.seen[2].head  # a GET without a body


@pytest_twisted.ensureDeferred
async def test_connection_close_is_honoured(serve, pool):
    server = serve(CLOSE, OK)
    for _ in range(2):
        answer = await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})
        assert answer.status == 200
    await turn()
    assert [seen.connection for seen in server.seen] == [1, 2]
    assert server.closed == [1]


@pytest_twisted.ensureDeferred
async def test_a_head_answer_ends_at_its_headers(serve, pool):
    # A HEAD's Content-Length is the size a GET would have had: no body follows.
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                   b"x-amz-bucket-region: us-west-2\r\n\r\n", OK)
    answer = await pool.request("HEAD", f"{server.url}/crashes", b"", {})
    assert (answer.status, answer.body) == (200, b"")
    assert answer.headers[b"x-amz-bucket-region"] == b"us-west-2"
    assert (await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})).status == 200
    assert [seen.connection for seen in server.seen] == [1, 2]  # not reused after a HEAD


@pytest_twisted.ensureDeferred
async def test_an_interim_answer_is_skipped(serve, pool):
    server = serve(b"HTTP/1.1 100 Continue\r\nx-interim: 1\r\n\r\n" + CHUNKED, OK)
    answer = await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})
    assert (answer.status, answer.body) == (503, SLOWDOWN)
    assert b"x-interim" not in answer.headers
    assert (await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})).status == 200
    assert [seen.connection for seen in server.seen] == [1, 1]


@pytest_twisted.ensureDeferred
async def test_an_answer_that_runs_to_the_close(serve, pool):
    server = serve(lambda protocol: (protocol.transport.write(b"HTTP/1.0 200 OK\r\n\r\nall"),
                                     protocol.transport.loseConnection()))
    answer = await pool.request("GET", f"{server.url}/crashes/k", b"", {})
    assert (answer.status, answer.body) == (200, b"all")


@pytest_twisted.ensureDeferred
async def test_a_server_that_closes_mid_answer(serve, pool):
    server = serve(lambda protocol: (
        protocol.transport.write(b"HTTP/1.1 500 Internal Server Error\r\n"
                                 b"Content-Length: 100\r\n\r\n<Error>"),
        protocol.transport.loseConnection()), OK)
    with pytest.raises(error.ConnectionLost):
        await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})
    assert (await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})).status == 200
    assert [seen.connection for seen in server.seen] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_bytes_that_are_not_http_fail_the_request_and_the_connection(serve, pool):
    server = serve(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", OK)
    with pytest.raises(BadAnswer):
        await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})
    assert (await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})).status == 200
    assert [seen.connection for seen in server.seen] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_a_stale_kept_alive_connection_is_replaced_at_once(serve, pool):
    # The server closes a kept-alive connection as the next request arrives:
    # sent again on a new connection, without waiting, not counted as a failure.
    server = serve(OK, close_now, OK)
    await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})
    answer = await pool.request("PUT", f"{server.url}/crashes/k", b"y", {})
    assert answer.status == 200
    assert [(seen.connection, seen.body) for seen in server.seen] == [
        (1, b"x"), (1, b"y"), (2, b"y")]


@pytest_twisted.ensureDeferred
async def test_cancel_aborts_the_connection(serve, pool):
    server = serve(hang, OK)
    answer = pool.request("PUT", f"{server.url}/crashes/k", b"x", {})
    await turn()
    answer.cancel()
    with pytest.raises(defer.CancelledError):
        await answer
    await turn()
    assert server.closed == [1]
    assert (await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})).status == 200


@pytest_twisted.ensureDeferred
async def test_idle_connections_are_capped_and_expire(serve):
    server = serve(OK, OK, OK, OK)
    capped = ConnectionPool(reactor, max_idle=1)
    url = f"{server.url}/crashes/k"
    await defer.gatherResults([capped.request("PUT", url, b"x", {}) for _ in range(2)])
    await turn()
    assert server.closed == [2] or server.closed == [1]  # one of the two kept
    await capped.close()
    expiring = ConnectionPool(reactor, idle_seconds=-1)  # every idle connection too old
    for _ in range(2):
        await expiring.request("PUT", url, b"x", {})
    await turn()
    assert [seen.connection for seen in server.seen[2:]] == [3, 4]
    assert 3 in server.closed
    await expiring.close()


@pytest_twisted.ensureDeferred
async def test_close_closes_the_idle_connections(serve, pool):
    server = serve(OK)
    await pool.request("PUT", f"{server.url}/crashes/k", b"x", {})
    await pool.close()
    await turn()
    assert server.closed == [1]


def test_a_header_with_a_line_break_is_refused():
    assert request_head("PUT", "/b/k", "h", {"X-A": "1"}, 2) == (
        b"PUT /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n")
    for headers in ({"X-A": "1\r\nX-B: 2"}, {"X-A": "1\n"}, {"X-A\r": "1"}):
        with pytest.raises(ValueError):
            request_head("PUT", "/b/k", "h", headers, 2)


# -- through S3Connection: timeouts and the connection's own behaviour ----------


def s3_connection(url, **kwargs):
    location = BucketLocation("crashes", "us-west-2", url)
    credentials = CredentialSource(None, "AKIAEXAMPLE", "secret")
    return S3Connection(location, credentials, ConnectionPool(reactor), reactor, None,
                        **kwargs)


@pytest_twisted.ensureDeferred
async def test_a_request_without_answer_times_out_and_its_connection_is_dropped(serve):
    server = serve(hang, OK)
    connection = s3_connection(server.url, attempts=2, timeouts=Timeouts(base=0.3),
                               backoff=_no_wait())
    try:
        await connection.put_object("v1/dump/x", b"dump")
    finally:
        await connection.close()
    assert [seen.connection for seen in server.seen] == [1, 2]
    assert 1 in server.closed


@pytest_twisted.ensureDeferred
async def test_an_s3_error_answer_is_read_and_the_connection_reused(serve):
    server = serve(CHUNKED, OK)
    connection = s3_connection(server.url, attempts=2, backoff=_no_wait())
    try:
        await connection.put_object("v1/dump/x", b"dump")
    finally:
        await connection.close()
    assert [seen.connection for seen in server.seen] == [1, 1]
    assert hashlib.sha256(b"dump").hexdigest().encode() in server.seen[1].head


@pytest_twisted.ensureDeferred
async def test_nothing_listening_is_unreachable():
    connection = s3_connection(f"http://127.0.0.1:{free_port()}", attempts=1)
    with pytest.raises(S3Unreachable, match="ConnectionRefusedError"):
        await connection.put_object("v1/dump/x", b"dump")


def _no_wait():
    return Backoff(base=0.0, cap=0.0)


def test_build_connection_sends_whole_bodies_per_turn():
    settings = load_config({
        "CRASHSTORAGE_CLASS": "s3", "CRASHSTORAGE_BUCKET_NAME": "crashes",
        "CRASHSTORAGE_ENDPOINT_URL": "http://127.0.0.1:9",
        "CRASHSTORAGE_ACCESS_KEY": "AKIAEXAMPLE",
        "CRASHSTORAGE_SECRET_ACCESS_KEY": "secret"}).storage
    connection = build_connection(settings, reactor, None, concurrency=3)
    assert isinstance(connection.http, ConnectionPool)
    assert connection.http.max_idle == 7
    assert connection.http.send_limit >= 3 * 1024 * 1024


@pytest_twisted.ensureDeferred
async def test_https_endpoints_speak_tls_checked_against_the_trust_roots(
        serve, tmp_path, monkeypatch):
    from twisted.internet import ssl

    from tests.tls import make_certificates

    certificates = make_certificates(tmp_path)
    with open(certificates.cert, "rb") as cert, open(certificates.key, "rb") as key:
        server_options = ssl.PrivateCertificate.loadPEM(cert.read() + key.read()).options()
    server = Server([OK, OK])
    port = reactor.listenSSL(0, server, server_options, interface="127.0.0.1")
    url = f"https://localhost:{port.getHost().port}/crashes/k"
    body = b"\x01" * 400_000
    trusting = ConnectionPool(reactor, send_limit=4 * 1024 * 1024)
    try:
        with pytest.raises(error.ConnectionLost, match="certificate verify failed"):
            await ConnectionPool(reactor).request("PUT", url, b"x", {})  # not a trusted CA
        # The system's trust roots, as OpenSSL finds them: now with the test CA.
        monkeypatch.setenv("SSL_CERT_FILE", certificates.ca)
        for _ in range(2):
            assert (await trusting.request("PUT", url, body, {})).status == 200
    finally:
        await trusting.close()
        await port.stopListening()
    assert [(seen.connection, seen.body) for seen in server.seen] == [(2, body), (2, body)]
