"""
A worker's status file (``--workers``): written at once, then at most once
per interval and only when the count changed; read as 0 when its worker is
gone or the file is unusable.
"""

import json
import os
import subprocess

import attr

from antenna_tw.workers.shardstatus import STATUS_FILE, StatusPublisher, read_retrying, write_status
from tests.helpers import ImmediatePool, ImmediateReactor


@attr.s
class Count:
    value = attr.ib(default=0)

    def __call__(self):
        return self.value


def published(directory):
    with open(os.path.join(directory, STATUS_FILE)) as status_file:
        return json.load(status_file)


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_published_at_start_then_at_most_once_a_second_and_only_when_changed(tmp_path):
    clock, pool, retrying = ImmediateReactor(), ImmediatePool(), Count()
    publisher = StatusPublisher(str(tmp_path), retrying, clock, pool, interval=1.0, pid=4242)
    publisher.start()
    assert published(tmp_path) == {"pid": 4242, "retrying": 0}
    assert pool.jobs == 1

    clock.advance(5.0)  # nothing changed: nothing written
    assert pool.jobs == 1

    retrying.value = 3
    clock.advance(0.5)
    assert published(tmp_path)["retrying"] == 0  # not before the next check
    retrying.value = 4
    retrying.value = 7
    clock.advance(0.5)
    assert published(tmp_path) == {"pid": 4242, "retrying": 7}
    assert pool.jobs == 2  # one write for the changes of a second

    retrying.value = 0
    clock.advance(1.0)
    assert published(tmp_path)["retrying"] == 0
    assert pool.jobs == 3
    assert sorted(os.listdir(tmp_path)) == [STATUS_FILE]  # no temp file left

    stopped = []
    publisher.stop().addCallback(stopped.append)
    assert stopped
    retrying.value = 9
    clock.advance(5.0)
    assert pool.jobs == 3


def test_a_failed_write_is_tried_again_and_said_once(tmp_path, log_messages):
    clock, pool, retrying = ImmediateReactor(), ImmediatePool(), Count(2)
    gone = tmp_path / "gone"
    publisher = StatusPublisher(str(gone), retrying, clock, pool, interval=1.0)
    publisher.start()
    clock.advance(1.0)
    clock.advance(1.0)
    assert pool.jobs == 3
    warnings = [message for message in log_messages if message.startswith("could not write")]
    assert len(warnings) == 1, warnings

    gone.mkdir()  # the disk is back
    clock.advance(1.0)
    assert published(gone)["retrying"] == 2
    clock.advance(1.0)
    assert pool.jobs == 4


def test_read_retrying(tmp_path):
    assert read_retrying(str(tmp_path)) == 0  # nothing published yet
    write_status(str(tmp_path), {"pid": os.getpid(), "retrying": 5})
    assert read_retrying(str(tmp_path)) == 5
    write_status(str(tmp_path), {"pid": dead_pid(), "retrying": 5})
    assert read_retrying(str(tmp_path)) == 0  # its worker is gone: nothing retries there
    for unusable in (b"", b"{not json", b"[]", b'{"pid": "1", "retrying": 5}',
                     b'{"retrying": 5}', b'{"pid": 0, "retrying": 5}'):
        (tmp_path / STATUS_FILE).write_bytes(unusable)
        assert read_retrying(str(tmp_path)) == 0, unusable
    assert read_retrying(str(tmp_path / "no-such-shard")) == 0
