"""
The RabbitMQ publisher in the real ``twistd -n antenna`` process, against a
real rabbitmq-server (tests/rabbitmq.py), crashes stored on the filesystem:
every stored crash's id reaches the queue, under load, through a SIGKILL of
the collector, a broker away for 60 s and a broker restart. Delivery is at
least once: the duplicates are counted and printed (``pytest -s``), never
the missing, which must be none.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid

import pytest

from tests.system.collector_process import CollectorProcess, sigkill_tree, wait_for
from tests.system.crash_clients import FSStore, post_many, spool_entries


def publishing_environ(tmp_path, rabbitmq, queue, **overrides):
    environ = {
        "CRASHSTORAGE_CLASS": "fs",
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"),
        "CRASHPUBLISH_CLASS": "rabbitmq",
        "CRASHPUBLISH_AMQP_URL": rabbitmq.url,
        "CRASHPUBLISH_AMQP_QUEUE": queue,
        "CRASHPUBLISH_AMQP_TIMEOUT": "3",
        "CRASHMOVER_RETRY_BASE_DELAY": "0.2",
        "CRASHMOVER_RETRY_MAX_DELAY": "2",
        "SHUTDOWN_TIMEOUT": "5",
    }
    environ.update({key: str(value) for key, value in overrides.items()})
    return environ


class Received:
    """Every message taken from one queue so far, counted by body."""

    def __init__(self, rabbitmq, queue):
        self.rabbitmq = rabbitmq
        self.queue = queue
        self.counts = collections.Counter()

    def take(self):
        self.counts.update(self.rabbitmq.bodies(self.queue))
        return self.counts

    def wait_for(self, crash_ids, timeout):
        """Take messages until every id has come; AssertionError after ``timeout`` s."""
        wanted = set(crash_ids)
        deadline = time.monotonic() + timeout
        while True:
            missing = wanted - set(self.take())
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(missing)} of {len(wanted)} ids not on the queue "
                                     f"after {timeout} s")
            time.sleep(0.2)

    def duplicates(self):
        return sum(count - 1 for count in self.counts.values())


def start(collectors, tmp_path, environ, workers=None):
    """A collector in ``tmp_path/collector`` (the same spool when started again)."""
    directory = tmp_path / "collector"
    directory.mkdir(exist_ok=True)
    return collectors.start(directory, environ, args=("--workers", workers) if workers else ())


def accepted_ids(answers):
    return [answer.crash_id for answer in answers if answer.crash_id]


def check_published(store, received, accepted, label, sent):
    """Every accepted crash stored, every stored id received, nothing else; print the figures."""
    store.wait_stored(accepted, timeout=60)
    stored = store.raw_crash_ids()
    received.wait_for(stored, timeout=90)
    counts = received.take()
    assert set(accepted) <= stored
    assert set(counts) == stored  # no id of a crash that is not stored
    print(f"\n{label}: sent {sent}, acknowledged {len(accepted)}, stored {len(stored)}, "
          f"ids received {len(counts)}, duplicates {received.duplicates()}")


def load_in_background(port, sequences, interval, threads=8):
    """Post crashes from a thread; ``(thread, answers, stop)``."""
    answers = []
    stop = threading.Event()
    thread = threading.Thread(
        target=lambda: post_many(port, sequences, threads=threads, interval=interval,
                                 stop=stop, on_answer=answers.append),
        daemon=True)
    thread.start()
    return thread, answers, stop


def test_every_stored_crash_id_is_on_the_queue(rabbitmq, tmp_path, collectors):
    queue = f"socorro.normal.{tmp_path.name}"  # declared by the collector
    collector = start(collectors, tmp_path, publishing_environ(tmp_path, rabbitmq, queue),
                      workers="2")  # a connection each
    answers = post_many(collector.port, range(200), threads=8)
    accepted = accepted_ids(answers)
    assert len(set(accepted)) == 200
    received = Received(rabbitmq, queue)
    check_published(FSStore(str(tmp_path / "crashes")), received, accepted, "200 crashes", 200)
    assert received.duplicates() == 0
    status, heartbeat = collector.heartbeat()
    assert status == 200, heartbeat


def test_sigkill_mid_load_then_restart(rabbitmq, tmp_path, collectors):
    """Every acknowledged crash stored and its id received; ids in flight may come twice."""
    queue = rabbitmq.declare_queue()
    environ = publishing_environ(tmp_path, rabbitmq, queue)
    collector = start(collectors, tmp_path, environ, workers="2")
    thread, answers, stop = load_in_background(collector.port, range(400), interval=0.01)
    wait_for(lambda: len(answers) >= 100, timeout=60)
    # The broker hangs for the last crashes before the kill, so that stored
    # crashes wait with their ids unpublished or unconfirmed when it comes.
    rabbitmq.pause()
    try:
        wait_for(lambda: len(answers) >= 200, timeout=60)
        sigkill_tree(collector.process)
        stop.set()
        thread.join(60)
        collector.process.wait(10)
    finally:
        rabbitmq.resume()
    accepted = accepted_ids(answers)
    received = Received(rabbitmq, queue)
    left = set(accepted) - set(received.take())
    assert left, "every id was published before the kill: the restart had nothing to do"

    start(collectors, tmp_path, environ, workers="2")  # the same spool: the rest is done
    check_published(FSStore(str(tmp_path / "crashes")), received, accepted,
                    f"SIGKILL mid-load ({len(left)} ids unpublished at the kill)", len(answers))


def test_broker_away_for_a_minute_under_load(rabbitmq, tmp_path, collectors):
    queue = rabbitmq.declare_queue()
    collector = start(collectors, tmp_path, publishing_environ(tmp_path, rabbitmq, queue))
    received = Received(rabbitmq, queue)
    before = accepted_ids(post_many(collector.port, range(20), threads=4))
    received.wait_for(before, timeout=30)

    rabbitmq.stop()
    try:
        away_since = time.monotonic()
        # Two crashes a second for the minute the broker is away.
        answers = post_many(collector.port, range(20, 140), threads=4, interval=0.5)
        assert all(answer.status == 200 for answer in answers)
        status, heartbeat = collector.heartbeat()
        assert status == 503 and "rabbitmq" in str(heartbeat), heartbeat
        FSStore(str(tmp_path / "crashes")).wait_stored(accepted_ids(answers), timeout=30)
        time.sleep(max(0.0, 60.0 - (time.monotonic() - away_since)))
    finally:
        rabbitmq.start()
    accepted = before + accepted_ids(answers)
    check_published(FSStore(str(tmp_path / "crashes")), received, accepted,
                    "broker away 60 s", 140)
    wait_for(lambda: collector.heartbeat()[0] == 200, timeout=30)
    assert "cannot connect to RabbitMQ at amqp://guest:*****@" in collector.output()


def test_broker_restart_mid_load(rabbitmq, tmp_path, collectors):
    queue = rabbitmq.declare_queue()
    collector = start(collectors, tmp_path, publishing_environ(tmp_path, rabbitmq, queue))
    thread, answers, _stop = load_in_background(collector.port, range(300), interval=0.04,
                                                threads=4)
    wait_for(lambda: len(answers) >= 60, timeout=60)
    rabbitmq.restart()
    thread.join(120)
    accepted = accepted_ids(answers)
    assert len(accepted) == 300
    check_published(FSStore(str(tmp_path / "crashes")), Received(rabbitmq, queue), accepted,
                    "broker restart mid-load", 300)
    output = collector.output()
    assert "lost the connection to RabbitMQ at amqp://guest:*****@" in output
    assert "connected to RabbitMQ at amqp://guest:*****@" in output  # and again


@pytest.mark.parametrize("workers", [None, "2"])
def test_a_refused_password_stops_start_up(rabbitmq, tmp_path, workers):
    environ = publishing_environ(
        tmp_path, rabbitmq, "socorro.normal",
        CRASHPUBLISH_AMQP_URL=rabbitmq.url_with(password="wrong-s3cret"))
    args = ("--workers", workers) if workers else ()
    collector = CollectorProcess.spawn(tmp_path, environ, args)
    try:
        status = collector.wait_exit(30)
    finally:
        collector.kill()
    lines = [line for line in collector.output().splitlines() if line.strip()]
    assert status != 0
    assert lines == [f"antenna: cannot start: RabbitMQ at "
                     f"amqp://guest:*****@127.0.0.1:{rabbitmq.port}/%2F refused the user name "
                     f"or password of CRASHPUBLISH_AMQP_URL"]


def test_amqps_untrusted_certificate_keeps_crashes_until_the_right_ca(rabbitmq, tmp_path,
                                                                      collectors):
    """
    amqps with a CA that did not sign the broker's certificate: crashes are
    answered and stored and wait in the spool, the heartbeat and the log say
    why, the password never appears; restarted with the broker's CA, every
    id reaches the queue.
    """
    from tests.tls import make_certificates

    queue = rabbitmq.declare_queue()
    user, password = f"tls-{tmp_path.name}"[:40], "s3cret-" + uuid.uuid4().hex
    rabbitmq.add_user(user, password, ".*", ".*", ".*")
    url = rabbitmq.amqps_url().replace("guest:guest", f"{user}:{password}")
    (tmp_path / "other").mkdir()
    environ = publishing_environ(tmp_path, rabbitmq, queue, CRASHPUBLISH_AMQP_URL=url,
                                 CRASHPUBLISH_AMQP_CA_FILE=make_certificates(
                                     tmp_path / "other").ca)
    collector = start(collectors, tmp_path, environ)
    accepted = accepted_ids(post_many(collector.port, range(5), threads=2))
    assert len(set(accepted)) == 5
    FSStore(str(tmp_path / "crashes")).wait_stored(accepted, timeout=60)
    status, heartbeat = collector.heartbeat()
    assert status == 503 and "certificate is not trusted" in str(heartbeat), heartbeat
    assert len(spool_entries(tmp_path / "collector" / "spool")) == 5  # stored, unpublished
    collector.stop()
    output = collector.output()
    assert (f"cannot connect to RabbitMQ at amqps://{user}:*****@localhost:{rabbitmq.tls_port}"
            f"/%2F: TLS: the broker's certificate is not trusted") in output
    assert password not in output
    assert rabbitmq.message_count(queue) == 0

    environ["CRASHPUBLISH_AMQP_CA_FILE"] = rabbitmq.tls.ca
    collector = start(collectors, tmp_path, environ)
    received = Received(rabbitmq, queue)
    received.wait_for(accepted, timeout=60)
    assert set(received.take()) == set(accepted) and received.duplicates() == 0
    wait_for(lambda: not spool_entries(tmp_path / "collector" / "spool"), timeout=30)
    assert password not in collector.output()
