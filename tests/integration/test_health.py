"""Health and operations endpoints over real HTTP (SPEC.md section 6)."""

import json

import pytest_twisted

from tests.helpers import http_request, raw_request


async def get(running, path):
    status, headers, body = await raw_request(
        running.port_number, http_request(b"", [], method="GET", path=path))
    return status, headers, body


@pytest_twisted.ensureDeferred
async def test_lbheartbeat(collector):
    status, headers, body = await get(collector, "/__lbheartbeat__")
    assert (status, body) == (200, b"")
    assert headers["content-type"] == "application/json"


@pytest_twisted.ensureDeferred
async def test_heartbeat_healthy_with_info(collector):
    status, headers, body = await get(collector, "/__heartbeat__")
    assert status == 200
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["errors"] == []
    assert answer["info"]["queue_length"] == 0
    assert answer["info"]["storage"] == "fs"


@pytest_twisted.ensureDeferred
async def test_heartbeat_unhealthy_when_spool_disk_is_short(collector_with):
    running = await collector_with(SPOOL_MIN_FREE_BYTES=str(1 << 60))
    status, _, body = await get(running, "/__heartbeat__")
    assert status == 503
    assert [error["name"] for error in json.loads(body)["errors"]] == ["spool"]


@pytest_twisted.ensureDeferred
async def test_version(collector, tmp_path):
    status, _, body = await get(collector, "/__version__")
    assert (status, json.loads(body)) == (200, {})
    version = {"build": "b", "commit": "c", "source": "s", "version": "1.2.3"}
    (tmp_path / "version.json").write_text(json.dumps(version))
    status, _, body = await get(collector, "/__version__")
    assert (status, json.loads(body)) == (200, version)


@pytest_twisted.ensureDeferred
async def test_broken_is_500_without_details(collector):
    status, headers, body = await get(collector, "/__broken__")
    assert (status, body) == (500, b"Internal Server Error")
    assert headers["content-type"].startswith("text/plain")
    # the process keeps serving afterwards
    assert (await get(collector, "/__lbheartbeat__"))[0] == 200
