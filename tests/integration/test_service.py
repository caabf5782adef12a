"""
CollectorService opens its port with the endpoint's listen: a port that
cannot be opened fails the start with the endpoint's error, and on stop the
port closes before the collector stops taking crashes.
"""

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError

from antenna_tw.app import build_collector
from antenna_tw.config import load_config
from antenna_tw.service import CollectorService
from tests.helpers import test_environ as environ_for


def service_on(tmp_path, port):
    collector = build_collector(load_config(environ_for(tmp_path), None), reactor)
    endpoint = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
    return CollectorService(collector, endpoint, f"tcp:{port}", collector.prepare())


def watch_stop(service, port):
    """For each collector.stop call: whether the port still took connections."""
    seen = []
    real_stop = service.collector.stop

    async def stop():
        seen.append(connects(port))
        await real_stop()

    service.collector.stop = stop
    return seen


def connects(port):
    with socket.socket() as client:
        return client.connect_ex(("127.0.0.1", port)) == 0


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_fails_the_start_with_the_endpoint_s_error(tmp_path):
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        service = service_on(tmp_path, taken.getsockname()[1])
        stops = watch_stop(service, 0)
        with pytest.raises(CannotListenError):
            service.startService()
        await service.stopService()  # and it still stops cleanly
        assert stops == [False]
    finally:
        taken.close()


@pytest_twisted.ensureDeferred
async def test_the_port_closes_before_the_collector_stops(tmp_path):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    service = service_on(tmp_path, port)
    service.startService()
    assert connects(port)
    stops = watch_stop(service, port)
    await service.stopService()
    assert stops == [False]
    assert service.listening is None and not service.running


@pytest_twisted.ensureDeferred
async def test_stopping_a_service_never_started_stops_the_collector(tmp_path):
    service = service_on(tmp_path, 0)
    stops = watch_stop(service, 0)
    await service.stopService()
    assert stops == [False]


def test_storage_that_does_not_answer_is_a_warning_and_a_worker_does_not_check(tmp_path,
                                                                              log_messages):
    from tests.helpers import UnreachableStorage

    environ = dict(environ_for(tmp_path), CRASHSTORAGE_CLASS="tests.helpers.UnreachableStorage")
    UnreachableStorage.checks = 0
    collector = build_collector(load_config(environ, None), reactor)
    assert collector.prepare() == []  # no StartupError: the spool takes crashes meanwhile
    assert UnreachableStorage.checks == 1
    assert any("no answer (Connection refused); starting all the same" in message
               for message in log_messages), log_messages
    assert collector.prepare(check=False) == []  # a worker: its parent checked
    assert UnreachableStorage.checks == 1
