"""
The console of a single process over real HTTP: the credential on every
route, the login cookie, the headers, finding crashes in the spool, in
filesystem storage and in S3 (moto_server), and byte-identical dumps.
"""

import json
import re

import pytest_twisted
import treq
from twisted.internet import reactor, task

from antenna_tw.console.service import process_console
from antenna_tw.send_crash import build_multipart
from antenna_tw.tap import console_port
from antenna_tw.workers import parse_port
from tests.helpers import http_request, minidump, raw_request, start_collector, stop_collector
from tests.helpers import test_environ
from tests.integration.s3_helpers import s3_environ, wait_for_key
from tests.s3server import free_port

TOKEN = "integration-console-token"
DUMP = minidump("test.dmp")


async def started(tmp_path, **environ):
    port = free_port()
    environ = test_environ(tmp_path, CONSOLE_PORT=f"tcp:{port}", SECRET_CONSOLE_TOKEN=TOKEN,
                           **environ)
    running = await start_collector(tmp_path, environ)
    config = running.collector.config
    backend = "s3" if "S3" in config.storage.crashstorage_class else "fs"
    service = process_console(config, console_port(config.console, [parse_port("tcp:1")], {}),
                              running.collector, reactor, backend)
    service.startService()
    return running, service, f"http://127.0.0.1:{port}"


async def stopped(running, service):
    await service.stopService()
    await stop_collector(running)


async def submit(running, annotations):
    body, content_type = build_multipart(annotations, {"upload_file_minidump": DUMP})
    status, _, answer = await raw_request(
        running.port_number, http_request(body, [("Content-Type", content_type)]))
    assert status == 200, answer
    return answer.decode().strip()[len("CrashID=bp-"):]


async def get(url, token=TOKEN, **kwargs):
    headers = {"Authorization": [f"Bearer {token}"]} if token else {}
    response = await treq.get(url, headers=headers, **kwargs)
    return response, await response.content()


@pytest_twisted.ensureDeferred
async def test_fs_console(tmp_path):
    running, service, console = await started(tmp_path)
    try:
        crash_id = await submit(running, {"ProductName": "Firefox", "Version": "140.0",
                                          "Email": "someone@example.com"})
        await running.wait_stored(crash_id)
        response, body = await get(f"{console}/api/crashes/{crash_id}")
        crash = json.loads(body)
        assert response.code == 200
        assert crash["state"] == "stored"
        assert "Email" not in crash["raw_crash"]
        assert crash["dumps"] == [{"name": "upload_file_minidump", "size": len(DUMP),
                                   "url": f"/api/crashes/{crash_id}/dumps/upload_file_minidump"}]
        assert crash["minidumps"]["upload_file_minidump"]["crash_reason"]
        response, body = await get(console + crash["dumps"][0]["url"])
        assert body == DUMP
        assert response.headers.getRawHeaders("content-disposition") == [
            f'attachment; filename="{crash_id}.upload_file_minidump.dmp"']
        _, body = await get(f"{console}/api/crashes")
        rows = json.loads(body)["crashes"]
        assert [row["crash_id"] for row in rows] == [crash_id]
        assert rows[0]["dumps"] == {"upload_file_minidump": len(DUMP)}
        assert (rows[0]["product"], rows[0]["throttle_result"]) == ("Firefox", "ACCEPT")
        _, body = await get(f"{console}/api/status")
        status = json.loads(body)
        assert status["hour"]["accepted"] == 1 and status["hour"]["stored"] == 1
        assert status["processes"][0]["name"] == "collector"
        response, _ = await get(f"{console}/api/crashes/{crash_id[:-1]}0")
        assert response.code == 404
        response, _ = await get(f"{console}/api/crashes/..%2F..%2Fetc")
        assert response.code == 404
    finally:
        await stopped(running, service)


@pytest_twisted.ensureDeferred
async def test_every_route_asks_for_the_credential(tmp_path):
    running, service, console = await started(tmp_path)
    try:
        crash_id = await submit(running, {"ProductName": "SecretProduct"})
        for path in ("/", "/crashes", f"/crashes/{crash_id}", f"/api/crashes/{crash_id}",
                     f"/crashes/{crash_id}/raw_crash.json", "/api/status", "/api/crashes",
                     f"/api/crashes/{crash_id}/dumps/upload_file_minidump",
                     f"/crashes/{crash_id}/dumps/upload_file_minidump"):
            for token in (None, "nope", TOKEN + "x"):
                response, body = await get(console + path, token)
                assert response.code == 401, path
                assert b"SecretProduct" not in body
                csp = response.headers.getRawHeaders("content-security-policy")[0]
                assert "default-src 'self'" in csp and "script-src 'none'" in csp
        # The login: a wrong token is refused, the right one gives a signed cookie.
        response = await treq.post(console + "/login", data={"token": "nope", "next": "/"})
        assert response.code == 401
        response = await treq.post(console + "/login",
                                   data={"token": TOKEN, "next": "//evil.example/"},
                                   allow_redirects=False)
        assert response.code == 303
        assert response.headers.getRawHeaders("location") == ["/"]
        cookie = response.headers.getRawHeaders("set-cookie")[0]
        assert TOKEN not in cookie
        assert re.match(r"antenna_console=\d+\.[0-9a-f]{64}; ", cookie)
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        value = cookie.split(";")[0].split("=", 1)[1]
        response, body = await get(console + "/", None,
                                   cookies={"antenna_console": value})
        assert response.code == 200 and b'id="tiles"' in body
        response, _ = await get(console + "/", None,
                                cookies={"antenna_console": value[:-2] + "00"})
        assert response.code == 401
    finally:
        await stopped(running, service)


@pytest_twisted.ensureDeferred
async def test_s3_console(tmp_path, moto, s3_bucket):
    running, service, console = await started(tmp_path, **s3_environ(moto, s3_bucket))
    try:
        crash_id = await submit(running, {"ProductName": "Fenix", "Version": "1.2"})
        await wait_for_key(moto, s3_bucket, f"v2/raw_crash/{crash_id[:3]}/20{crash_id[-6:]}/"
                                            f"{crash_id}")
        while running.collector.mover.queue_length():  # the spool entry is removed
            await task.deferLater(reactor, 0.05, lambda: None)
        _, body = await get(f"{console}/api/crashes")
        rows = json.loads(body)["crashes"]
        assert [(row["crash_id"], row["product"], row["state"]) for row in rows] == [
            (crash_id, "Fenix", "stored")]
        _, body = await get(f"{console}/api/crashes/{crash_id}")
        crash = json.loads(body)
        assert crash["dumps"][0]["size"] == len(DUMP)
        _, body = await get(console + crash["dumps"][0]["url"])
        assert body == DUMP
    finally:
        await stopped(running, service)
