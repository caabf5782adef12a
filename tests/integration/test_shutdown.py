"""
Shutdown in order: the port closes, new crashes are answered busy, a crash
being written to the spool still gets its crash id, the movers drain for
what is left of SHUTDOWN_TIMEOUT, and what they could not store stays spooled.
"""

import os
import threading

import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import globalLogPublisher

from antenna_tw.app import STOP_GRACE, build_collector
from antenna_tw.config import load_config
from antenna_tw.send_crash import build_multipart
from antenna_tw.service import CollectorService
from antenna_tw.workers.supervisor import WorkerSupervisor
from tests.helpers import http_request, minidump, raw_request, start_collector, stop_collector
from tests.helpers import test_environ as environ_for

BODY, CONTENT_TYPE = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                     {"upload_file_minidump": minidump()})
REQUEST = http_request(BODY, [("Content-Type", CONTENT_TYPE)])


async def until(condition, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not met in time")


@pytest_twisted.ensureDeferred
async def test_a_crash_being_spooled_at_shutdown_gets_its_id_and_is_stored(tmp_path):
    running = await start_collector(tmp_path, environ_for(tmp_path, SHUTDOWN_TIMEOUT=5))
    spool = running.collector.spool
    real_put, gate = spool._put, threading.Event()

    def slow_put(crash, filename):  # runs in the thread pool
        gate.wait(5)
        return real_put(crash, filename)

    spool._put = slow_put
    answer = raw_request(running.port_number, REQUEST)
    await until(lambda: spool.writing_bytes > 0)

    stopping = defer.ensureDeferred(stop_collector(running))
    await task.deferLater(reactor, 0.2, lambda: None)
    assert not stopping.called  # waiting for the write in flight
    # The grace (GRACEFUL_TIMEOUT): the request in progress may finish.
    assert running.collector.site.draining and running.collector.admission.busy() is None
    gate.set()
    status, _, body = await answer
    assert status == 200, body
    await stopping
    crash_id = body.decode().strip()[len("CrashID=bp-"):]
    assert running.stored_ids() == [crash_id]  # the movers drained it before stopping
    assert sorted(os.listdir(spool.directory)) == ["corrupt"]


@pytest_twisted.ensureDeferred
async def test_shutdown_answers_new_crashes_busy_on_open_connections(tmp_path):
    running = await start_collector(tmp_path, environ_for(tmp_path))
    running.collector.admission.close()  # what stop() does first
    status, headers, body = await raw_request(running.port_number, REQUEST)
    assert (status, body) == (503, b"Discarded=busy")
    assert int(headers["retry-after"]) > 0
    await stop_collector(running)


@pytest_twisted.ensureDeferred
async def test_shutdown_gives_up_at_the_deadline_and_keeps_the_backlog(tmp_path):
    environ = environ_for(tmp_path, SHUTDOWN_TIMEOUT=1,
                          CRASHSTORAGE_CLASS="tests.helpers.NeverStorage")
    running = await start_collector(tmp_path, environ)
    for _ in range(3):
        status, _, _ = await raw_request(running.port_number, REQUEST)
        assert status == 200
    started = reactor.seconds()
    await stop_collector(running)
    assert 1.0 <= reactor.seconds() - started < 2.0
    entries = [name for name in os.listdir(running.collector.spool.directory)
               if name.endswith(".crash")]
    assert len(entries) == 3


@pytest_twisted.ensureDeferred
async def test_a_backend_that_ignores_its_cancellation_does_not_hold_the_stop(tmp_path):
    environ = environ_for(tmp_path, SHUTDOWN_TIMEOUT=1,
                          CRASHSTORAGE_CLASS="tests.helpers.StubbornStorage")
    running = await start_collector(tmp_path, environ)
    for _ in range(2):
        status, _, _ = await raw_request(running.port_number, REQUEST)
        assert status == 200
    warnings = []

    def observe(event):
        if event.get("log_namespace") == "antenna.app":
            warnings.append(event["log_format"])

    globalLogPublisher.addObserver(observe)
    try:
        started = reactor.seconds()
        await stop_collector(running)
        took = reactor.seconds() - started
    finally:
        globalLogPublisher.removeObserver(observe)
    # The deadline, then STOP_GRACE for the movers that did not stop and the
    # close that never fires: both are left behind.
    assert 1.0 + STOP_GRACE <= took < 1.0 + STOP_GRACE + 0.5, took
    assert sum("had not finished" in line for line in warnings) == 2, warnings
    entries = [name for name in os.listdir(running.collector.spool.directory)
               if name.endswith(".crash")]
    assert len(entries) == 2


@pytest_twisted.ensureDeferred
async def test_stopping_the_service_flushes_the_error_reporter_after_the_collector(tmp_path):
    calls = []

    class Reporter:
        def __call__(self, event):
            pass

        def close(self):
            calls.append(("close", collector.admission.closing))

    collector = build_collector(load_config(environ_for(tmp_path), None), reactor)
    service = CollectorService(collector, TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                               "tcp:0", collector.prepare(), log_observer=Reporter())
    service.startService()
    await service.stopService()
    assert calls == [("close", True)]  # once, after the collector stopped taking crashes


@pytest_twisted.ensureDeferred
async def test_the_workers_parent_flushes_its_error_reporter_in_a_thread_when_it_stops():
    # The system test (test_sentry) sees the events arrive; this one, how:
    # once, at the stop, off the reactor thread.
    reactor_thread = threading.current_thread()
    calls = []

    class Reporter:
        def __call__(self, event):
            pass

        def close(self):
            calls.append(threading.current_thread() is not reactor_thread)

    supervisor = WorkerSupervisor(reactor, 0, lambda index: [], log_observer=Reporter())
    supervisor.startService()
    assert calls == []
    await supervisor.stopService()
    assert calls == [True]


@pytest_twisted.ensureDeferred
async def test_stopping_the_collector_closes_the_storages_connections(tmp_path):
    running = await start_collector(tmp_path, environ_for(tmp_path))
    closed = []
    storage = running.collector.storage
    storage.close = lambda: closed.append(True) or defer.succeed(None)
    await running.port.stopListening()
    await running.collector.stop()
    assert closed == [True]


@pytest_twisted.ensureDeferred
async def test_the_stop_writes_the_counts_of_repeated_lines_held_back(tmp_path):
    # A disk "nearly full": every crash answered busy, one line per interval.
    environ = environ_for(tmp_path, SPOOL_MIN_FREE_BYTES=str(2**60))
    running = await start_collector(tmp_path, environ)
    lines = []

    def observe(event):
        if event.get("log_namespace") == "antenna.breakpad_resource" and "repeats" in event:
            lines.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        for _ in range(3):
            status, _, _ = await raw_request(running.port_number, REQUEST)
            assert status == 503
        assert [event.get("repeats") for event in lines] == [1]
        await stop_collector(running)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert [event.get("repeats") for event in lines] == [1, 2]  # the two held back
