"""
Connections passed between workers (antenna_tw.workers.balance), over real sockets:
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

from antenna_tw.send_crash import build_multipart
from antenna_tw.workers.balance import (
    HAND_OFF_MARGIN,
    BalancingEndpoint,
    HandOffChannel,
    LoadBoard,
    channel_address,
)
from tests.helpers import _read_response, http_request, minidump, raw_request

GET = b"GET / HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n"


class Numbered(resource.Resource):
    isLeaf = True

    def __init__(self, number):
        super().__init__()
        self.number = number

    def render_GET(self, request):
        return b"worker %d" % self.number


class WorkerSite(server.Site):
    """A site answering which worker it is."""

    def __init__(self, number):
        super().__init__(Numbered(number))


def two_workers(tmp_path):
    name = f"test-{uuid.uuid4().hex}"
    sites = [WorkerSite(0), WorkerSite(1)]
    boards = [LoadBoard(tmp_path / "connections", 2, index).open() for index in range(2)]
    channels = [HandOffChannel(reactor, name, index) for index in range(2)]
    return sites, boards, channels


async def answer_from(sites, boards, channels, holding=0):
    """
    Listen as worker 0, holding ``holding`` connections already, and send
    one request to it; the body of the answer.
    """
    endpoint = BalancingEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                 boards[0], channels[0])
    endpoint.connections.open = holding
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
    # worker 1 shows 0 on the board
    assert await answer_from(sites, boards, channels, holding=HAND_OFF_MARGIN) == b"worker 1"
    assert (channels[0].sent, channels[1].taken) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_a_worker_close_to_its_sibling_keeps_the_connection(tmp_path):
    sites, boards, channels = two_workers(tmp_path)
    assert channels[1].start(sites[1])
    assert await answer_from(sites, boards, channels,
                             holding=HAND_OFF_MARGIN - 1) == b"worker 0"
    assert (channels[0].sent, channels[1].taken) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_a_connection_its_sibling_cannot_take_is_served_where_it_came(tmp_path):
    sites, boards, channels = two_workers(tmp_path)  # worker 1's channel never starts
    assert await answer_from(sites, boards, channels, holding=10) == b"worker 0"
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
async def test_the_connections_a_worker_serves_are_counted_on_the_board(site, tmp_path):
    board = LoadBoard(tmp_path / "connections", 2, 0).open()
    endpoint = BalancingEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                 board, HandOffChannel(reactor, f"test-{uuid.uuid4().hex}", 0))
    seen = []

    def publish(count):
        seen.append(count)
        board.publish(count)

    endpoint.connections.publish = publish
    port = await endpoint.listen(site)

    async def until(count):
        for _ in range(200):
            if board.count(0) == count:
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        raise AssertionError((board.count(0), count))

    try:
        clients = [socket.create_connection(("127.0.0.1", port.getHost().port))
                   for _ in range(2)]
        await until(2)
        for client in clients:
            client.close()
        await until(0)
    finally:
        await port.stopListening()
    assert seen == [1, 2, 1, 0]
    assert endpoint.connections.open == 0
    sibling = LoadBoard(tmp_path / "connections", 2, 1).open()
    assert sibling.count(0) > 10**9  # stopped: never the lightest


@pytest_twisted.ensureDeferred
async def test_a_counted_connection_still_hears_its_client_half_close(site, tmp_path):
    # The crash channel answers a body cut short by a half-close (it is an
    # IHalfCloseableProtocol); counting its connection must not hide it.
    board = LoadBoard(tmp_path / "connections", 2, 0).open()
    endpoint = BalancingEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                 board, HandOffChannel(reactor, f"test-{uuid.uuid4().hex}", 0))
    body, content_type = build_multipart({"ProductName": "Test"},
                                         {"upload_file_minidump": minidump()})
    request = http_request(body, [("Content-Type", content_type),
                                  ("Content-Length", str(len(body) + 100))])
    port = await endpoint.listen(site)
    try:
        status, _, answer = await raw_request(port.getHost().port, request,
                                              half_close=True, timeout=5)
    finally:
        await port.stopListening()
    assert (status, answer) == (400, b"Discarded=malformed_invalid_payload_structure")
    assert endpoint.connections.open == 0


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
    channels[0].stop()
    assert await answer_from(sites, boards, channels, holding=HAND_OFF_MARGIN) == b"worker 1"
