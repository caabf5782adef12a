"""
The S3 connection pool opens its connections quietly through public API:
``QuietEndpoint`` turns ``Factory.noisy`` off on the factory the pool hands
to the endpoint, so no "Starting factory"/"Stopping factory" lines per
connection. The plain pool's lines are checked too, so the test would fail
if Twisted stopped logging them (the wrapper would then be useless) or if the
pool stopped connecting through the endpoint it is given.
"""

import pytest_twisted
from twisted.internet import reactor
from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from antenna_tw.ext.s3.client import QuietConnectionPool


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
