"""``twistd antenna --workers N``: processes, restarts, shutdown, parent death."""

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from antenna_tw.send_crash import build_multipart, post
from tests.system.collector_process import both_listening, children_of, listening, running, wait_for
from tests.system.crash_clients import log_records


def port_free(port):
    with socket.socket() as sock:
        # SO_REUSEADDR ignores TIME_WAIT leftovers but not a listening socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def send(collector, timeout=10):
    body, content_type = build_multipart({"ProductName": "Test"}, {"upload_file_minidump": b"MDMP"})
    status, answer = post(collector.submit_url, body, content_type, timeout=timeout)
    assert status == 200, answer
    return answer.decode().strip()[len("CrashID=bp-"):]


def test_workers_share_the_port_and_are_restarted(tmp_path, collectors):
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes")}, args=["--workers", "2"])
    try:
        workers = both_listening(collector)
        ids = [send(collector) for _ in range(20)]
        shards = sorted(os.listdir(tmp_path / "spool"))
        assert shards == ["worker-0", "worker-1"]

        os.kill(workers[0], signal.SIGKILL)
        replaced = wait_for(lambda: (lambda now: len(now) == 2 and now != workers and now)(
            children_of(collector.process.pid)))
        assert workers[1] in replaced
        new_worker = (set(replaced) - set(workers)).pop()
        wait_for(lambda: listening(collector, new_worker))
        ids += [send(collector) for _ in range(5)]
    finally:
        collector.process.send_signal(signal.SIGTERM)
        status = collector.wait_exit(20)
    assert status in (143, -signal.SIGTERM)
    assert children_of(collector.process.pid) == []
    stored = {path.stem for path in (tmp_path / "crashes").glob("*/raw_crash/*.json")}
    assert set(ids) <= stored


def answered_by(collector):
    """``{crash id: pid of the worker that accepted it}``, from the per-crash log lines."""
    return {record["Fields"]["msg"].split(":")[0]: record["Pid"]
            for record in log_records(collector.output())
            if ": matched by " in record["Fields"]["msg"]}


def test_both_workers_take_connections_from_the_one_listening_socket(tmp_path, collectors):
    # 100 connections, 10 at a time, each with one crash: whichever worker
    # is free takes the next from the shared accept queue. Each is answered
    # and stored, and both workers answered some.
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes")}, args=["--workers", "2"])
    try:
        workers = both_listening(collector)
        with ThreadPoolExecutor(10) as pool:
            ids = list(pool.map(lambda _: send(collector, timeout=30), range(100)))
    finally:
        collector.stop()
    stored = {path.stem for path in (tmp_path / "crashes").glob("*/raw_crash/*.json")}
    assert len(set(ids)) == 100
    assert set(ids) <= stored
    by = answered_by(collector)
    counts = {pid: sum(1 for crash_id in ids if by[crash_id] == pid) for pid in workers}
    assert sum(counts.values()) == 100
    assert min(counts.values()) > 0, counts


def test_connections_wait_in_the_listening_socket_while_a_worker_restarts(tmp_path, collectors):
    # One worker: while it is dead and being restarted (0.5 s, then its
    # start-up), nobody accepts, but the parent keeps the listening socket
    # open: a client that connects then waits in its queue and is answered
    # by the new worker, instead of being refused.
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes")}, args=["--workers", "1"])
    try:
        [old] = wait_for(lambda: children_of(collector.process.pid))
        wait_for(lambda: listening(collector, old))
        ids = [send(collector) for _ in range(3)]
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: not running(old))
        sent_at = time.time()
        during = send(collector, timeout=60)  # refused under a per-worker socket
        [new] = children_of(collector.process.pid)
        ids += [during] + [send(collector) for _ in range(3)]
    finally:
        collector.stop()
    assert new != old
    records = log_records(collector.output())
    [new_listening] = [record["Timestamp"] / 1e9 for record in records
                       if record["Pid"] == new and record["Fields"]["msg"].startswith("listening")]
    assert sent_at < new_listening  # it was sent while no worker served
    by = answered_by(collector)
    assert by[during] == new
    stored = {path.stem for path in (tmp_path / "crashes").glob("*/raw_crash/*.json")}
    assert set(ids) <= stored


def test_workers_stop_when_the_parent_is_killed(tmp_path, collectors):
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes")}, args=["--workers", "2"])
    workers = both_listening(collector)
    send(collector)
    collector.process.send_signal(signal.SIGKILL)
    collector.wait_exit(10)
    wait_for(lambda: not any(running(pid) for pid in workers), timeout=30)
    assert port_free(collector.port)


def mapped_files(pid):
    with open(f"/proc/{pid}/maps") as maps:
        return {line.split()[-1] for line in maps if "/" in line}


def environment_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as environ:
        pairs = [item.partition(b"=") for item in environ.read().split(b"\0") if item]
    return {key.decode(): value.decode() for key, _, value in pairs}


def test_processes_without_tls_leave_pyopenssl_out_and_workers_get_malloc_arena_max(
        tmp_path, collectors):
    # A klein.py in the current directory must not shadow the real klein in
    # the workers (their sys.path has no current directory, as the twistd
    # script's has none): a worker that imported it would not start.
    (tmp_path / "klein.py").write_text("raise ImportError('a stray klein.py was imported')\n")
    collector = collectors.spawn(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes")}, args=["--workers", "2"])
    try:
        collector.wait_listening(20)
        workers = both_listening(collector)
        send(collector)
        for pid in [collector.process.pid] + workers:
            # pyOpenSSL needs cryptography's compiled module (its own OpenSSL)
            assert not [path for path in mapped_files(pid)
                        if "/cryptography/" in path or "/OpenSSL/" in path], pid
        for pid in workers:  # the operator's own setting wins
            assert environment_of(pid)["MALLOC_ARENA_MAX"] == \
                os.environ.get("MALLOC_ARENA_MAX", "2")
    finally:
        collector.stop()
    assert "stray klein.py" not in collector.output()


def heartbeats_answered_by(collector, workers):
    """How many heartbeats each worker answered (from its metrics' debug log lines)."""
    answered = dict.fromkeys(workers, 0)
    for line in collector.output().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record["Fields"]["msg"].startswith("METRICS|incr|health.heartbeat.count|"):
                answered[record["Pid"]] += 1
    return answered


def heartbeats_from_every_worker(collector, workers, each=3, most=500):
    """
    Heartbeats until every worker has answered ``each`` of them (new
    connections land on either worker); their ``(status, body)``. Needs
    METRICS_CLASS=logging and LOGGING_LEVEL=DEBUG. The workers share one
    listening socket and the one that wakes first takes the connection, so
    on a busy machine one worker may take a long run of them: ``most`` is
    generous.
    """
    answers = []
    while min(heartbeats_answered_by(collector, workers).values()) < each:
        assert len(answers) < most, heartbeats_answered_by(collector, workers)
        answers.append(collector.heartbeat())
    return answers


def spool_files(spool, suffixes=(".crash", ".dump")):
    """``{shard: [paths of its files with one of these suffixes]}``, status file left out."""
    found = {}
    for shard in ("worker-0", "worker-1"):
        found[shard] = [spool / shard / name for name in os.listdir(spool / shard)
                        if name.endswith(suffixes) and not name.startswith(".")]
    return found


def test_every_workers_heartbeat_covers_the_crashes_and_bytes_of_all_workers(tmp_path,
                                                                              collectors):
    # Storage that never finishes a save: every crash stays in its worker's shard.
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_CLASS": "tests.helpers.NeverStorage", "SHUTDOWN_TIMEOUT": "0.5",
        "SPOOL_MAX_BYTES": "1000001",  # each worker's share: 500000 bytes
        "METRICS_CLASS": "logging", "LOGGING_LEVEL": "DEBUG"}, args=["--workers", "2"])
    try:
        workers = both_listening(collector)
        for _ in range(12):
            send(collector)
        files = spool_files(tmp_path / "spool")
        shards = {shard: len([path for path in paths if path.suffix == ".crash"])
                  for shard, paths in files.items()}
        assert sum(shards.values()) == 12
        on_disk = sum(path.stat().st_size for paths in files.values() for path in paths)
        for status, heartbeat in heartbeats_from_every_worker(collector, workers):
            assert (status, heartbeat["errors"]) == (200, [])
            info = heartbeat["info"]
            assert info["queue_length"] == 12, (shards, heartbeat)
            assert info["spool_bytes"] == on_disk, (shards, on_disk, heartbeat)
            assert info["spool_max_bytes"] == 1000000, heartbeat  # the sum of the shares
            assert info["retrying"] == 0
    finally:
        collector.process.send_signal(signal.SIGTERM)
        collector.wait_exit(20)


def published_retrying(shard):
    try:
        with open(shard / ".status") as status:
            return json.load(status)["retrying"]
    except (OSError, ValueError):
        return None


def test_every_workers_heartbeat_counts_the_retrying_crashes_of_all_workers(tmp_path,
                                                                            collectors):
    root = tmp_path / "crashes"
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(root), "SHUTDOWN_TIMEOUT": "0.5",
        # one try each in this test: the next is 30-60 s after the first failure
        "CRASHMOVER_RETRY_BASE_DELAY": "60", "CRASHMOVER_RETRY_MAX_DELAY": "60",
        "METRICS_CLASS": "logging", "LOGGING_LEVEL": "DEBUG"}, args=["--workers", "2"])
    try:
        workers = both_listening(collector)
        os.rename(root, str(root) + ".away")
        root.write_bytes(b"a file where the storage root was: every save fails")
        # Fewer crashes than it takes a worker to think storage is down (5
        # failures in a row): each one is tried once, fails, and waits.
        for _ in range(4):
            send(collector)
        spool = tmp_path / "spool"
        shards = {shard: len(paths) for shard, paths in
                  spool_files(spool, suffixes=(".crash",)).items()}
        assert sum(shards.values()) == 4
        # Each worker publishes its count within a second of a change.
        wait_for(lambda: all(published_retrying(spool / shard) == count
                             for shard, count in shards.items()), timeout=10)
        for status, heartbeat in heartbeats_from_every_worker(collector, workers):
            assert status == 503  # storage is broken
            assert heartbeat["info"]["retrying"] == 4, (shards, heartbeat)
            assert heartbeat["info"]["queue_length"] == 4, (shards, heartbeat)
    finally:
        collector.process.send_signal(signal.SIGTERM)
        collector.wait_exit(20)
