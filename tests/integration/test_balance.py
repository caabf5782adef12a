"""
Connections passed between workers (antenna_tw.balance), over real sockets:
a listening port whose worker holds more connections than its sibling
passes a new one on, unread, through the sibling's Unix datagram socket,
and the sibling's site answers it. Both "workers" run in this process, each
with its own site that answers with its number.
"""

import array
import os
import socket
import uuid

import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import resource, server

from antenna_tw.balance import (
    HAND_OFF_MARGIN,
    BalancingEndpoint,
    HandOffChannel,
    LoadBoard,
    channel_address,
)
from tests.helpers import _read_response, raw_request

GET = b"GET / HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n"


class Numbered(resource.Resource):
    isLeaf = True

    def __init__(self, number):
        super().__init__()
        self.number = number

    def render_GET(self, request):
        return b"worker %d" % self.number


class WorkerSite(server.Site):
    """A site answering which worker it is; ``open_channels`` is what a CrashSite reports."""

    open_channels = 0

    def __init__(self, number):
        super().__init__(Numbered(number))


def two_workers(tmp_path):
    name = f"test-{uuid.uuid4().hex}"
    sites = [WorkerSite(0), WorkerSite(1)]
    boards = [LoadBoard(tmp_path / "connections", 2, index).open() for index in range(2)]
    channels = [HandOffChannel(reactor, name, index) for index in range(2)]
    return sites, boards, channels


async def answer_from(sites, boards, channels):
    """Listen as worker 0 and send one request to it; the body of the answer."""
    endpoint = BalancingEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                 boards[0], channels[0])
    port = await endpoint.listen(sites[0])
    try:
        status, _, body = await raw_request(port.getHost().port, GET)
    finally:
        await port.stopListening()
        channels[1].stop()
    assert status == 200
    return body


@pytest_twisted.ensureDeferred
async def test_a_busier_worker_passes_a_new_connection_to_its_sibling(tmp_path):
    sites, boards, channels = two_workers(tmp_path)
    assert channels[1].start(sites[1])
    sites[0].open_channels = HAND_OFF_MARGIN  # worker 1 shows 0 on the board
    assert await answer_from(sites, boards, channels) == b"worker 1"
    assert (channels[0].sent, channels[1].taken) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_a_worker_close_to_its_sibling_keeps_the_connection(tmp_path):
    sites, boards, channels = two_workers(tmp_path)
    assert channels[1].start(sites[1])
    sites[0].open_channels = HAND_OFF_MARGIN - 1
    assert await answer_from(sites, boards, channels) == b"worker 0"
    assert (channels[0].sent, channels[1].taken) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_a_connection_its_sibling_cannot_take_is_served_where_it_came(tmp_path):
    sites, boards, channels = two_workers(tmp_path)  # worker 1's channel never starts
    sites[0].open_channels = 10
    assert await answer_from(sites, boards, channels) == b"worker 0"
    assert channels[0].sent == 0


@pytest_twisted.ensureDeferred
async def test_a_stopping_worker_serves_the_connections_already_sent_to_it(tmp_path):
    sites, _, channels = two_workers(tmp_path)
    assert channels[0].start(sites[0])
    assert channels[1].start(sites[1])
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    with accepted:
        accepted.setblocking(False)
        assert channels[0].send(1, accepted)
    channels[1].stop()  # before the reactor has had a turn to read the channel
    channels[0].stop()
    assert channels[1].taken == 1

    def exchange():
        with client:
            client.settimeout(10)
            client.sendall(GET)
            return _read_response(client)

    status, _, body = await threads.deferToThread(exchange)
    assert (status, body) == (200, b"worker 1")


@pytest_twisted.ensureDeferred
async def test_the_crash_site_reports_its_open_connections(site):
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    seen = []
    site.channels_changed = seen.append
    before = site.open_channels

    async def until(count):
        for _ in range(200):
            if site.open_channels == count:
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        raise AssertionError((site.open_channels, count))

    try:
        clients = [socket.create_connection(("127.0.0.1", port.getHost().port))
                   for _ in range(2)]
        await until(before + 2)
        for client in clients:
            client.close()
        await until(before)
    finally:
        site.channels_changed = None
        await port.stopListening()
    assert seen == [before + 1, before + 2, before + 1, before]


@pytest_twisted.ensureDeferred
async def test_a_descriptor_that_is_no_tcp_connection_is_closed_and_the_channel_goes_on(
        tmp_path):
    # Any local process may write to the channel; what it sends costs a
    # descriptor for a moment, never the channel.
    sites, boards, channels = two_workers(tmp_path)
    assert channels[0].start(sites[0])
    assert channels[1].start(sites[1])
    read_end, write_end = os.pipe()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp, open(write_end, "wb"), open(read_end, "rb"):
        for descriptor in (read_end, udp.fileno()):
            rights = array.array("i", [descriptor])
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stranger:
                stranger.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)],
                                 0, channel_address(channels[1].name, 1))
        before = set(os.listdir("/proc/self/fd"))
        channels[1].doRead()
        assert set(os.listdir("/proc/self/fd")) <= before
    assert channels[1].taken == 0
    sites[0].open_channels = HAND_OFF_MARGIN
    channels[0].stop()
    assert await answer_from(sites, boards, channels) == b"worker 1"
