import pytest
from twisted.internet import defer, reactor

from antenna_tw.app import build_collector
from antenna_tw.config import load_config
from antenna_tw.spool import SpoolEntry
from tests.helpers import test_environ


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """
    A real collector's Site whose spool write is an in-memory one and whose
    crash movers do nothing: for feeding requests to its protocol over a
    StringTransport, many in a moment.
    """
    collector = build_collector(load_config(test_environ(tmp_path_factory.mktemp("c")), None),
                                reactor)
    collector.prepare()
    collector.spool.put = lambda crash: defer.succeed(
        SpoolEntry(f"0-{crash.crash_id}.crash", crash.crash_id, 0, 0))
    collector.mover.enqueue = lambda entry, crash=None: None
    return collector.site
