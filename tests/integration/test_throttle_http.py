"""Throttling over real HTTP: Mozilla's rules and an operator's own rule module."""

import datetime
import os
import re
import sys

import pytest_twisted

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import in_thread, minidump, start_collector, stop_collector, test_environ

CONF = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "conf"))
ANSWER = re.compile(r"^CrashID=bp-([0-9a-f-]{36})\n$")

MOZILLA = {
    "THROTTLE_RULES": "antenna_tw.throttler.MOZILLA_RULES",
    "PRODUCTS": "antenna_tw.throttler.MOZILLA_PRODUCTS",
    "METRICS_CLASS": "logging",
}


class Draws:
    """A random source that draws the given values in turn (sampled rules only draw)."""

    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


async def send(running, **annotations):
    """POST a crash with a minidump; ``(status, answer text)``."""
    body, content_type = build_multipart(annotations, {"upload_file_minidump": minidump()})
    status, answer = await in_thread(post, running.submit_url, body, content_type)
    return status, answer.decode("utf-8")


def crash_id(answer):
    match = ANSWER.match(answer)
    assert match, answer
    return match.group(1)


def files_under(directory):
    # Not the background heartbeat's write probe (.probe-*), which comes and goes.
    return [os.path.join(folder, name)
            for folder, _, names in os.walk(directory) for name in names
            if not name.startswith(".probe-")]


def todays_buildid():
    # has_old_buildid runs on the real clock here: a build from today is never old.
    return datetime.datetime.now().strftime("%Y%m%d%H%M%S")


@pytest_twisted.ensureDeferred
async def test_unsupported_product_is_discarded_by_rule(collector_with, log_messages):
    running = await collector_with(**MOZILLA)
    status, answer = await send(running, ProductName="NotAMozillaProduct", Version="1.0")

    assert (status, answer) == (200, "Discarded=rule_unsupported_product")
    assert any(re.fullmatch(r"[0-9a-f-]{36}: matched by unsupported_product; returned REJECT",
                            message) for message in log_messages), log_messages
    assert "METRICS|incr|breakpad_resource.throttle|1|result:reject" in log_messages
    await running.wait_idle()
    assert files_under(running.fs_root) == []


@pytest_twisted.ensureDeferred
async def test_firefox_nightly_is_accepted_with_digit_0(collector_with, log_messages):
    running = await collector_with(**MOZILLA)
    status, answer = await send(running, ProductName="Firefox", Version="140.0a1",
                                ReleaseChannel="nightly", BuildID=todays_buildid())
    assert status == 200
    nightly = crash_id(answer)
    assert nightly[-7] == "0"

    raw_crash, _, dumps = await running.wait_stored(nightly)
    assert raw_crash["metadata"]["throttle_rule"] == "is_nightly"
    assert dumps == {"upload_file_minidump": minidump()}
    assert f"{nightly}: matched by is_nightly; returned ACCEPT" in log_messages
    assert "METRICS|incr|breakpad_resource.throttle_rule|1|rule:is_nightly" in log_messages
    assert "METRICS|incr|breakpad_resource.throttle|1|result:accept" in log_messages


@pytest_twisted.ensureDeferred
async def test_b2g_gets_a_fakeaccept_id_and_nothing_is_stored(collector_with, log_messages):
    running = await collector_with(**MOZILLA)
    status, answer = await send(running, ProductName="B2G", Version="2.6")
    assert status == 200
    b2g = crash_id(answer)
    assert b2g[-7] == "3"

    # A crash that is stored, sent after the B2G one: once it is in storage and
    # the movers are idle, anything the B2G crash had queued would be there too.
    status, answer = await send(running, ProductName="Firefox", ReleaseChannel="beta",
                                BuildID=todays_buildid())
    beta = crash_id(answer)
    await running.wait_stored(beta)
    await running.wait_idle()

    assert running.stored_ids() == [beta]
    everything = files_under(running.fs_root) + files_under(running.collector.spool.directory)
    assert not [path for path in everything if b2g in path]
    assert f"{b2g}: matched by b2g; returned FAKEACCEPT" in log_messages
    assert "METRICS|incr|breakpad_resource.throttle|1|result:fakeaccept" in log_messages


@pytest_twisted.ensureDeferred
async def test_only_a_b2g_crash_leaves_storage_empty(collector_with):
    running = await collector_with(**MOZILLA)
    status, answer = await send(running, ProductName="B2G")
    assert crash_id(answer)[-7] == "3"
    await running.wait_idle()
    assert files_under(running.fs_root) == []


@pytest_twisted.ensureDeferred
async def test_antenna_paths_load_the_same_rules(collector_with):
    running = await collector_with(THROTTLE_RULES="antenna.throttler.MOZILLA_RULES",
                                   PRODUCTS="antenna.throttler.MOZILLA_PRODUCTS")
    status, answer = await send(running, ProductName="SeaMonkey")
    assert (status, answer) == (200, "Discarded=rule_unsupported_product")


@pytest_twisted.ensureDeferred
async def test_example_rules_decide_as_documented(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(CONF)
    monkeypatch.delitem(sys.modules, "example_rules", raising=False)
    environ = test_environ(tmp_path, THROTTLE_RULES="example_rules.RULES",
                           PRODUCTS="example_rules.PRODUCTS")
    # Only the 5% Voyager release rule draws: first a keeper, then not.
    running = await start_collector(tmp_path, environ, rng=Draws(0.05, 0.051))
    try:
        beacon = crash_id((await send(running, ProductName="Beacon", ReleaseChannel="release"))[1])
        kept = crash_id((await send(running, ProductName="Voyager", ReleaseChannel="release"))[1])
        dropped = await send(running, ProductName="Voyager", ReleaseChannel="release")
        beta = crash_id((await send(running, ProductName="Voyager", ReleaseChannel="beta"))[1])
        other = await send(running, ProductName="Firefox", ReleaseChannel="nightly")

        assert dropped == (200, "Discarded=rule_voyager_release_5pct")
        assert other == (200, "Discarded=rule_reject_everything_else")
        rules = {}
        for each in (beacon, kept, beta):
            raw_crash, _, _ = await running.wait_stored(each)
            rules[each] = raw_crash["metadata"]["throttle_rule"]
        assert rules == {beacon: "beacon_everything", kept: "voyager_release_5pct",
                         beta: "voyager_prerelease"}
        await running.wait_idle()
        assert running.stored_ids() == sorted([beacon, kept, beta])
    finally:
        await stop_collector(running)
