"""
The S3 connection pool opens its connections quietly through public API:
``QuietEndpoint`` turns ``Factory.noisy`` off on the factory the pool hands
to the endpoint, so no "Starting factory"/"Stopping factory" lines per
connection. The plain pool's lines are checked too, so the test would fail
if Twisted stopped logging them (the wrapper would then be useless) or if the
pool stopped connecting through the endpoint it is given. And the S3
client's PUTs, one after another, reuse one kept-alive connection, each body
arriving whole with its length and SHA-256.
"""

import hashlib

import pytest_twisted
from twisted.internet import reactor
from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from antenna_tw.config import load_config
from antenna_tw.ext.s3.client import QuietConnectionPool, build_connection


class Empty(Resource):
    isLeaf = True

    def render_GET(self, request):  # noqa: N802 - twisted.web's name
        request.setHeader(b"connection", b"close")  # as moto: one request per connection
        return b"ok"


async def get_twice(pool, port):
    http = HTTPClient(Agent(reactor, pool=pool))
    for _ in range(2):
        response = await http.get(f"http://127.0.0.1:{port.getHost().port}/")
        assert await response.content() == b"ok"
    await pool.closeCachedConnections()


@pytest_twisted.async_yield_fixture
async def server():
    site = Site(Empty())
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield port
    await port.stopListening()


def factory_lines(messages):
    return [m for m in messages if "Starting factory" in m or "Stopping factory" in m]


@pytest_twisted.ensureDeferred
async def test_the_plain_pool_logs_each_connections_factory(server, log_messages):
    await get_twice(HTTPConnectionPool(reactor, persistent=True), server)
    assert len([m for m in factory_lines(log_messages) if "Starting" in m]) == 2


@pytest_twisted.ensureDeferred
async def test_the_s3_pool_connects_quietly(server, log_messages):
    await get_twice(QuietConnectionPool(reactor, persistent=True), server)
    assert factory_lines(log_messages) == []


class Bucket(Resource):
    """Takes PUTs over keep-alive connections; records each one's client port and body."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render_PUT(self, request):  # noqa: N802 - twisted.web's name
        body = request.content.read()
        self.seen.append((request.getClientAddress().port, request.path,
                          request.getHeader(b"content-length"), body,
                          request.getHeader(b"x-amz-content-sha256")))
        return b""


@pytest_twisted.ensureDeferred
async def test_puts_reuse_one_kept_alive_connection_and_send_each_body_whole():
    bucket = Bucket()
    site = Site(bucket)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    settings = load_config({
        "CRASHSTORAGE_CLASS": "s3", "CRASHSTORAGE_BUCKET_NAME": "crashes",
        "CRASHSTORAGE_ENDPOINT_URL": f"http://127.0.0.1:{port.getHost().port}",
        "CRASHSTORAGE_ACCESS_KEY": "AKIAEXAMPLE",
        "CRASHSTORAGE_SECRET_ACCESS_KEY": "secret"}).storage
    connection = build_connection(settings, reactor, None, concurrency=2)
    try:
        bodies = [b"[]", bytes(range(256)) * 1000, b"{}"]
        for number, body in enumerate(bodies):
            await connection.put_object(f"v1/key/{number}", body,
                                        hashlib.sha256(body).hexdigest())
    finally:
        await connection.close()
        await port.stopListening()
    assert len({client_port for client_port, *_ in bucket.seen}) == 1
    assert [seen[1:] for seen in bucket.seen] == [
        (f"/crashes/v1/key/{number}".encode(), str(len(body)).encode(), body,
         hashlib.sha256(body).hexdigest().encode()) for number, body in enumerate(bodies)]
