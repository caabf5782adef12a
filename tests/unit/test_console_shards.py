"""A worker's status file with the console's figures, and the parent's reading of every shard."""

import os

from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from antenna_tw import metricnames
from antenna_tw.console.figures import Figures
from antenna_tw.metrics import Metrics
from antenna_tw.workers import console_shards
from antenna_tw.workers.shardstatus import StatusPublisher, read_retrying


class InlineReactor(Clock):
    """A clock whose thread-pool calls run at once (deferToThreadPool's reactor)."""

    def callFromThread(self, function, *args, **kwargs):  # noqa: N802
        function(*args, **kwargs)


class InlinePool(ThreadPool):
    def callInThreadWithCallback(self, on_result, function, *args, **kwargs):  # noqa: N802
        try:
            result = function(*args, **kwargs)
        except Exception as error:  # pragma: no cover
            on_result(False, error)
        else:
            on_result(True, result)


def test_figures_go_through_the_status_file(tmp_path):
    reactor = InlineReactor()
    reactor.advance(7200)
    shard = tmp_path / "worker-0"
    (tmp_path / "worker-1").mkdir()
    shard.mkdir()
    figures = Figures(reactor)
    metrics = Metrics([figures])
    publisher = StatusPublisher(str(shard), lambda: 0, reactor, InlinePool(), figures=figures,
                                extra=lambda: {"publish": None})
    publisher.start()
    written = os.stat(shard / ".status").st_mtime_ns
    figures.crash("Firefox", "140.0", "ACCEPT")
    metrics.timing(metricnames.ON_POST_TIME, 2.0)
    (shard / "1000-abc.crash").write_bytes(b"{}")  # a crash waiting in the spool
    os.utime(shard / ".status", ns=(0, 0))
    reactor.advance(1)
    assert os.stat(shard / ".status").st_mtime_ns != 0  # rewritten: the figures moved
    os.utime(shard / ".status", ns=(0, 0))
    reactor.advance(1)
    assert os.stat(shard / ".status").st_mtime_ns == 0  # not rewritten: nothing moved
    assert written
    assert read_retrying(str(shard)) == 0

    node = console_shards(str(tmp_path), 2, reactor, InlinePool())
    one, two = node.read_blocking(7202)
    assert (one.name, one.pid, one.running, one.queued) == ("worker-0", os.getpid(), True, 1)
    assert one.minutes == figures.ring()
    assert (two.name, two.pid, two.running, two.minutes) == ("worker-1", None, False, [])
    publisher.stop()
