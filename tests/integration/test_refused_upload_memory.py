"""
An upload refused part way (a gzip bomb stopped at MAX_DECOMPRESSED_SIZE)
lets go of what it held as soon as it is answered, while the client may
still be connected, and a large one is followed by a heap trim so that the
process gives the memory back (antenna_tw.intake.heap). The process-level figure
is tests/system/test_gzip_bomb_memory.py.
"""

import pytest
import pytest_twisted

from antenna_tw.intake import heap
from tests.helpers import (_read_response, gzip_bomb, http_request, in_thread, inflight_at_least,
                           open_and_send, start_collector, stop_collector)
from tests.helpers import test_environ as environ_for

MIB = 1024 * 1024


def bomb_request(inflated_mib):
    return http_request(gzip_bomb(inflated_mib), [
        ("Content-Type", "multipart/form-data; boundary=bomb"), ("Content-Encoding", "gzip")])


def send_and_read(sock, data):
    """Send the rest of the request and read the answer; the socket stays open."""
    sock.sendall(data)
    return _read_response(sock)


@pytest.mark.parametrize("limit_mib, trims", [
    (heap.TRIM_AFTER_BYTES // MIB + 8, 1),  # it held more than TRIM_AFTER_BYTES
    (12, 0),  # it held less: no trim
])
@pytest_twisted.ensureDeferred
async def test_a_refused_bomb_lets_go_at_once_and_a_large_one_trims_the_heap(
        tmp_path, limit_mib, trims):
    running = await start_collector(
        tmp_path, environ_for(tmp_path, MAX_DECOMPRESSED_SIZE=f"{limit_mib}MiB"))
    site = running.collector.site
    trim_calls = []
    site.free_memory = lambda: trim_calls.append(site.admission.inflight_bytes)
    bomb = bomb_request(3 * limit_mib)
    first = bomb.index(b"\r\n\r\n") + 4 + len(bomb) // 4  # about 3/4 of the cap
    sock = await in_thread(open_and_send, running.port_number, bomb[:first])
    try:
        await inflight_at_least(site, running.collector.reactor, MIB)
        # All but the last bytes: the answer comes before the body is complete.
        status, _, body = await in_thread(send_and_read, sock, bomb[first:-16])
        assert (status, body) == (413, b"Discarded=too_large")
        # The client is still sending (the collector lingers to drop the
        # rest), yet nothing is counted against MAX_INFLIGHT_BYTES any more.
        assert site.admission.inflight_bytes == 0
        assert trim_calls == [0] * trims  # after the upload was let go
    finally:
        sock.close()
        await stop_collector(running)
