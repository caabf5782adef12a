import os
import socket

import pytest
from twisted.internet import task
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from antenna_tw.config import load_config
from antenna_tw.health import IOtherShards, ShardState
from antenna_tw.workers import Worker
from antenna_tw.workers.listener import WORKER_FD, AdoptedPortEndpoint, EveryPortEndpoint
from antenna_tw.workers.ports import parse_port
from antenna_tw.workers.shardstatus import write_status
from antenna_tw.workers.supervisor import WorkerSupervisor
from antenna_tw.workers.worker import adopt_orphan_shards, shard_directory
from tests.helpers import test_environ


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("x")


def test_orphans_go_to_live_workers(tmp_path):
    spool = str(tmp_path)
    touch(os.path.join(spool, "1-top.crash"))
    touch(os.path.join(spool, "worker-0", "2-own.crash"))
    touch(os.path.join(spool, "worker-2", "3-two.crash"))
    touch(os.path.join(spool, "worker-3", "4-three.crash"))
    touch(os.path.join(spool, "worker-3", ".tmp-5-half.crash"))

    assert adopt_orphan_shards(spool, 0, 2) == 2  # top level and worker-2
    assert adopt_orphan_shards(spool, 1, 2) == 1  # worker-3
    assert sorted(os.listdir(shard_directory(spool, 0))) == ["1-top.crash", "2-own.crash",
                                                              "3-two.crash"]
    assert os.listdir(shard_directory(spool, 1)) == ["4-three.crash"]
    # half-written files stay where they are, for that shard's own start-up check
    assert os.listdir(shard_directory(spool, 3)) == [".tmp-5-half.crash"]


def test_live_shards_are_left_alone(tmp_path):
    spool = str(tmp_path)
    touch(os.path.join(spool, "worker-1", "1-a.crash"))
    assert adopt_orphan_shards(spool, 0, 2) == 0
    assert os.listdir(shard_directory(spool, 1)) == ["1-a.crash"]


IPV4, IPV6 = socket.AF_INET, socket.AF_INET6


def open_listener(description):
    return parse_port(description).open()


class Process:
    """A spawned worker: the signals it was sent; ``end`` makes it exit."""

    def __init__(self, protocol, pid):
        self.protocol = protocol
        self.pid = pid
        self.signals = []
        self.exited = False

    def signalProcess(self, name):
        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(name)

    def end(self, status=None, signal=9):
        self.exited = True
        self.protocol.processEnded(Failure(ProcessTerminated(status, signal)))


class ProcessReactor(task.Clock):
    """A clock that spawns Process objects."""

    def __init__(self):
        super().__init__()
        self.processes = []

    def spawnProcess(self, protocol, executable, args, env, childFDs):
        process = Process(protocol, 1000 + len(self.processes))
        process.child_fds = childFDs
        self.processes.append(process)
        return process


def test_a_worker_that_keeps_dying_is_restarted_later_each_time():
    reactor = ProcessReactor()
    supervisor = WorkerSupervisor(reactor, 1, lambda index: ["antenna"])
    supervisor.startService()
    delays = []
    with capturedLogs() as log_events:
        for _ in range(9):
            reactor.processes[-1].end()
            [call] = reactor.getDelayedCalls()
            delays.append(call.getTime() - reactor.seconds())
            reactor.advance(delays[-1])
        reactor.advance(31.0)  # a worker that ran long enough starts from the shortest delay
        reactor.processes[-1].end()
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert reactor.getDelayedCalls()[0].getTime() - reactor.seconds() == 0.5
    assert supervisor.pids() == {}
    reactor.advance(0.5)
    assert supervisor.pids() == {0: reactor.processes[-1].pid}
    # Each death is an error with its failure, so that Sentry hears of it.
    deaths = [event for event in log_events if "ended" in formatEvent(event)]
    assert len(deaths) == 10
    assert deaths[0]["log_level"] == LogLevel.error
    assert deaths[0]["log_failure"].check(ProcessTerminated)
    assert formatEvent(deaths[0]).startswith("worker 0 ended (A process has ended with a "
                                             "probable error condition: process ended by "
                                             "signal 9.); restarting in 0.5 s")


def test_stopping_passes_sigterm_on_and_kills_what_is_left_at_the_timeout():
    reactor = ProcessReactor()
    supervisor = WorkerSupervisor(reactor, 3, lambda index: ["antenna"], stop_timeout=60.0)
    supervisor.startService()
    first, second, third = reactor.processes
    first.end()  # dies just before the stop: its restart must not happen
    stopped = []
    supervisor.stopService().addCallback(stopped.append)
    assert (second.signals, third.signals) == (["TERM"], ["TERM"])
    second.end(status=0, signal=None)
    reactor.advance(59.0)
    assert not stopped and third.signals == ["TERM"]
    with capturedLogs() as log_events:
        reactor.advance(1.0)
    assert third.signals == ["TERM", "KILL"]
    assert stopped == [None]
    # Said, so that an overrun shows in the log (tests/system/test_storage_outage.py).
    [killed] = [formatEvent(event) for event in log_events]
    assert killed == "worker 2 (pid 1002) still running 60 s after SIGTERM; SIGKILL"
    assert len(reactor.processes) == 3  # nothing was restarted


def test_a_worker_that_exited_unheard_does_not_stop_the_stop():
    reactor = ProcessReactor()
    supervisor = WorkerSupervisor(reactor, 2, lambda index: ["antenna"])
    supervisor.startService()
    reactor.processes[0].exited = True  # exited, its end not yet heard
    stopped = []
    supervisor.stopService().addCallback(stopped.append)
    assert reactor.processes[1].signals == ["TERM"]
    reactor.processes[0].end()
    assert not stopped
    reactor.processes[1].end(status=0, signal=None)
    assert stopped == [None]


def test_a_worker_gets_its_shard_and_its_share_of_the_limits(tmp_path):
    config = load_config(test_environ(tmp_path, SPOOL_MAX_BYTES=1000,
                                      MAX_INFLIGHT_BYTES=3000), None)
    worker = Worker(2, 3, os.getpid(), config.spool.spool_dir)
    own = worker.configure(config)
    assert own.spool.spool_dir == shard_directory(config.spool.spool_dir, 2)
    assert (own.spool.spool_max_bytes, own.intake.max_inflight_bytes) == (333, 1000)
    assert own.throttle == config.throttle and own.storage == config.storage


def test_only_several_workers_know_of_other_shards(tmp_path):
    alone = Worker(0, 1, os.getpid(), str(tmp_path))
    assert alone.other_shards() is None
    assert alone.status_publisher(alone.shard, lambda: 0, None, None) is None
    others = Worker(1, 3, os.getpid(), str(tmp_path)).other_shards()
    assert verifyObject(IOtherShards, others)
    assert others.directories == (str(tmp_path / "worker-0"), str(tmp_path / "worker-2"))


def test_other_shards_are_read_from_their_files(tmp_path):
    now_ns = 1_800_000_000 * 10**9
    shard = tmp_path / "worker-1"
    shard.mkdir()
    (shard / f"{now_ns - 7 * 10**9:020d}-x.crash").write_bytes(b"{}")
    (shard / f"{now_ns - 7 * 10**9:020d}-x.upload_file_minidump.dump").write_bytes(b"MDMP")
    write_status(str(shard), {"pid": os.getpid(), "retrying": 1})
    states = Worker(0, 3, os.getpid(), str(tmp_path)).other_shards().read(now_ns / 1e9)
    assert states == [ShardState("worker-1", 1, 7.0, 6, 1), ShardState("worker-2", 0, 0.0, 0, 0)]


def test_workers_get_the_parent_s_listeners_across_restarts_and_the_stop_closes_them():
    listeners = [open_listener("tcp:0:interface=127.0.0.1"),
                 open_listener("tcp:0:interface=127.0.0.1")]
    reactor = ProcessReactor()
    supervisor = WorkerSupervisor(reactor, 2, lambda index: ["antenna"], listeners=listeners)
    supervisor.startService()
    reactor.processes[0].end()
    reactor.advance(0.5)
    assert len(reactor.processes) == 3
    # fds 1 and 2: its logs go out as it wrote them; 3, 4: the listening sockets, in order
    for process in reactor.processes:
        assert process.child_fds == {0: "w", 1: 1, 2: 2, WORKER_FD: listeners[0].fileno(),
                                     WORKER_FD + 1: listeners[1].fileno()}
    assert -1 not in [listener.fileno() for listener in listeners]  # a restart leaves them open
    supervisor.stopService()
    assert [listener.fileno() for listener in listeners] == [-1, -1]


def test_workers_without_a_listener_get_only_their_output():
    reactor = ProcessReactor()
    WorkerSupervisor(reactor, 1, lambda index: ["antenna"]).startService()
    assert reactor.processes[0].child_fds == {0: "w", 1: 1, 2: 2}


class AdoptingReactor:
    """Records what ``adoptStreamPort`` was given, and dup()s as the real one does."""

    def __init__(self):
        self.adopted = []

    def adoptStreamPort(self, fd, family, factory):
        self.adopted.append((os.dup(fd), family, factory))
        return "port"


def test_a_worker_adopts_the_inherited_listener(tmp_path):
    ports = [parse_port("tcp:0"), parse_port("tcp6:0")]
    endpoint = Worker(1, 2, os.getpid(), str(tmp_path)).endpoint(None, ports)
    assert endpoint == EveryPortEndpoint([AdoptedPortEndpoint(None, WORKER_FD),
                                          AdoptedPortEndpoint(None, WORKER_FD + 1)])
    reactor = AdoptingReactor()
    with open_listener("tcp:0:interface=127.0.0.1") as listener:
        inherited = os.dup(listener.fileno())
        ports = []
        AdoptedPortEndpoint(reactor, inherited).listen("factory").addCallback(ports.append)
        assert ports == ["port"]
        [(adopted, family, factory)] = reactor.adopted
        with socket.socket(fileno=adopted) as sock:
            assert (family, factory) == (IPV4, "factory")
            assert sock.getsockname() == listener.getsockname()
        with pytest.raises(OSError):  # the inherited descriptor is closed: the port has its own
            os.fstat(inherited)


def test_a_worker_without_a_listening_socket_does_not_start(tmp_path):
    failures = []
    with open(tmp_path / "file", "w") as file, socket.socket() as unbound:
        for fd in (file.fileno(), unbound.fileno()):
            AdoptedPortEndpoint(AdoptingReactor(), os.dup(fd)).listen("factory").addErrback(
                failures.append)
    closed = os.open(tmp_path / "file", os.O_RDONLY)
    os.close(closed)
    AdoptedPortEndpoint(AdoptingReactor(), closed).listen("factory").addErrback(failures.append)
    assert [failure.check(OSError) for failure in failures] == [OSError] * 3
    assert "not a listening stream socket" in str(failures[1].value)
    assert "a worker is started by its --workers parent" in str(failures[2].value)


class StubPort:
    def __init__(self, stopped):
        self.stopped = stopped

    def stopListening(self):
        self.stopped.append(self)


class StubEndpoint:
    def __init__(self, stopped, error=None):
        self.stopped, self.error = stopped, error

    def listen(self, factory):
        from twisted.internet import defer

        return defer.fail(self.error) if self.error else defer.succeed(StubPort(self.stopped))


def test_every_port_listens_or_none_does():
    stopped, ports, failures = [], [], []
    EveryPortEndpoint([StubEndpoint(stopped), StubEndpoint(stopped)]).listen(
        "factory").addCallback(ports.append)
    [port] = ports
    assert len(port.ports) == 2 and stopped == []
    port.stopListening()
    assert stopped == port.ports
    stopped = []
    EveryPortEndpoint([StubEndpoint(stopped), StubEndpoint(stopped, OSError("in use"))]).listen(
        "factory").addErrback(failures.append)
    assert [str(failure.value) for failure in failures] == ["in use"]
    assert len(stopped) == 1  # the one that listened stopped again
