"""
What real clients send, over real HTTP to a listening collector, and what
gets stored: chunked framing, gzip, Crashpad's and Firefox's shapes, and the
multipart variations docs/intake.rst promises to accept.
"""

import gzip
import json
import os
import subprocess
import sys

import pytest
import pytest_twisted

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import (
    MINIDUMPS,
    crash_id_from,
    dump_part,
    http_request,
    in_thread,
    minidump,
    multipart_body,
    raw_request,
    text_part,
)
from tests.s3server import free_port

DUMP = minidump() + os.urandom(70_000)  # bigger than one 64 KiB read


async def send_raw(running, body, headers, **framing):
    status, response_headers, answer = await raw_request(
        running.port_number, http_request(body, headers, **framing))
    assert status == 200, answer
    assert "transfer-encoding" not in response_headers
    assert int(response_headers["content-length"]) == len(answer)
    return await running.wait_stored(crash_id_from(answer))


@pytest.mark.parametrize("framing", [
    dict(chunked=True),
    dict(chunked=True, chunk_size=7),
    dict(chunked=True, chunk_size=13, chunk_extension=b';name="value"'),
    dict(chunked=True, chunk_size=1, chunk_extension=b";x"),
], ids=["chunked", "chunks_of_7", "chunks_of_13_with_extension", "one_byte_chunks"])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest_twisted.ensureDeferred
async def test_chunked_bodies_are_stored_byte_identical(collector, framing, compressed):
    dump = DUMP if framing.get("chunk_size", 65536) > 1 else DUMP[:20_000]
    body, content_type = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                         {"upload_file_minidump": dump})
    headers = [("Content-Type", content_type)]
    if compressed:
        body = gzip.compress(body)
        headers.append(("Content-Encoding", "gzip"))
    raw_crash, dump_names, dumps = await send_raw(collector, body, headers, **framing)
    assert dumps == {"upload_file_minidump": dump}
    assert dump_names == ["upload_file_minidump"]
    metadata = raw_crash["metadata"]
    assert metadata["payload_size"] == len(body)
    assert metadata["payload_compressed"] == ("1" if compressed else "0")


def send_crash(*args):
    """Run the send-crash command as its own process; (exit status, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "antenna_tw.send_crash", *args],
        capture_output=True, timeout=60, text=True)
    return result.returncode, result.stdout, result.stderr


@pytest_twisted.ensureDeferred
async def test_send_crash_command_sends_crashpads_shape(collector):
    dump_path = os.path.join(MINIDUMPS, "simple-crashpad.dmp")
    code, out, err = await in_thread(
        send_crash, "--url", collector.submit_url + "?guid=6fd2b3b9",
        "--dump", f"upload_file_minidump={dump_path}",
        "--annotation", "hello=world", "--annotation", "list_annotations=abort() called\ndyld2",
        "--gzip", "--chunked", "--crashpad")
    assert code == 0, err
    status, _, answer = out.partition(" ")
    assert status == "200"
    raw_crash, dump_names, dumps = await collector.wait_stored(crash_id_from(answer))
    with open(dump_path, "rb") as dump_file:
        assert dumps == {"upload_file_minidump": dump_file.read()}
    assert raw_crash["hello"] == "world"
    assert raw_crash["list_annotations"] == "abort() called\ndyld2"
    assert raw_crash["guid"] == "6fd2b3b9"  # from the query string
    assert raw_crash["metadata"]["payload_compressed"] == "1"
    # a dump without a Content-Type is a dump because of its filename; no note
    assert raw_crash["metadata"]["collector_notes"] == []


def test_send_crash_command_builds_crashpads_parts():
    body, _ = build_multipart({"guid": "x"}, {"upload_file_minidump": b"MDMP"},
                              dump_content_type=None, text_content_type=None)
    assert b"Content-Type" not in body


@pytest_twisted.ensureDeferred
async def test_send_crash_command_exits_non_zero_unless_crash_id(collector):
    code, out, _ = await in_thread(send_crash, "--url", collector.submit_url,
                                   "--dump", os.path.join(MINIDUMPS, "linux-mini.dmp"))
    assert code == 1
    assert out == "400 Discarded=malformed_no_annotations\n"
    nobody_listens = free_port()
    code, _, err = await in_thread(send_crash, "--url",
                                   f"http://127.0.0.1:{nobody_listens}/submit",
                                   "--annotation", "ProductName=Test")
    assert code == 2
    assert err.startswith("error:")


@pytest.mark.parametrize("chunked", [False, True])
@pytest_twisted.ensureDeferred
async def test_http_client_upload(collector, chunked):
    body, content_type = build_multipart({"ProductName": "Test"},
                                         {"upload_file_minidump": DUMP})
    status, answer = await in_thread(post, collector.submit_url, body, content_type,
                                     chunked=chunked)
    assert status == 200
    _, _, dumps = await collector.wait_stored(crash_id_from(answer))
    assert dumps == {"upload_file_minidump": DUMP}


FIREFOX_ANNOTATIONS = {
    "ProductName": "Firefox", "Version": "120.0", "ReleaseChannel": "release",
    "BuildID": "20231120000000", "StartupCrash": "0", "UptimeTS": 12.5,
    "ContentSandboxLevel": 4, "Hang": False, "Nested": {"list": [1, None, "x"]},
}
FIREFOX_DUMPS = {
    "upload_file_minidump": minidump(),
    "upload_file_minidump_browser": os.urandom(30_000),
    "memory_report": gzip.compress(b"{}" * 1000),
}


@pytest_twisted.ensureDeferred
async def test_firefox_shape_json_extra_gzip_three_dumps(collector):
    body, content_type = build_multipart(FIREFOX_ANNOTATIONS, FIREFOX_DUMPS, use_json=True)
    wire = gzip.compress(body)
    raw_crash, dump_names, dumps = await send_raw(
        collector, wire, [("Content-Type", content_type), ("Content-Encoding", "gzip"),
                          ("User-Agent", "Mozilla/5.0")])
    assert dumps == FIREFOX_DUMPS
    assert dump_names == sorted(FIREFOX_DUMPS)
    for key, value in FIREFOX_ANNOTATIONS.items():
        assert raw_crash[key] == value  # JSON types kept
    metadata = raw_crash["metadata"]
    assert (metadata["payload"], metadata["payload_compressed"]) == ("json", "1")
    assert set(metadata["dump_checksums"]) == set(FIREFOX_DUMPS)
    assert metadata["user_agent"] == "Mozilla/5.0"


PARTS = [text_part("ProductName", "Test"),
         dump_part("upload_file_minidump", minidump())]


@pytest.mark.parametrize("content_type,boundary", [
    ("multipart/mixed; boundary=b0und", "b0und"),
    ('multipart/form-data; boundary="quoted b:o?und"', "quoted b:o?und"),
    ("Multipart/Form-Data; charset=utf-8; boundary=last", "last"),
])
@pytest_twisted.ensureDeferred
async def test_media_types_and_boundaries(collector, content_type, boundary):
    body = multipart_body(PARTS, boundary=boundary)
    raw_crash, _, dumps = await send_raw(collector, body, [("Content-Type", content_type)])
    assert raw_crash["ProductName"] == "Test"
    assert dumps == {"upload_file_minidump": minidump()}


@pytest_twisted.ensureDeferred
async def test_preamble_and_epilogue_are_ignored(collector):
    body = multipart_body(PARTS, preamble=b"This is a preamble.\r\nIgnore it.\r\n",
                          epilogue=b"and an epilogue\r\n--b0und--\r\nthat looks like more")
    raw_crash, _, dumps = await send_raw(
        collector, body, [("Content-Type", "multipart/form-data; boundary=b0und")])
    assert raw_crash["ProductName"] == "Test"
    assert set(raw_crash) - {"metadata", "submitted_timestamp", "version", "uuid"} == {
        "ProductName"}
    assert dumps == {"upload_file_minidump": minidump()}


@pytest_twisted.ensureDeferred
async def test_five_dumps(collector):
    names = ["upload_file_minidump", "upload_file_minidump_browser",
             "upload_file_minidump_content", "upload_file_minidump_flash1", "memory_report"]
    dumps = {name: os.urandom(1000 + index) for index, name in enumerate(names)}
    body, content_type = build_multipart({"ProductName": "Test"}, dumps)
    raw_crash, dump_names, stored = await send_raw(
        collector, body, [("Content-Type", content_type)], chunked=True, chunk_size=999)
    assert stored == dumps
    assert dump_names == sorted(names)
    assert len(raw_crash["metadata"]["dump_checksums"]) == 5


@pytest_twisted.ensureDeferred
async def test_latin1_and_other_charsets_are_decoded(collector):
    body = multipart_body([
        text_part("ProductName", "Test"),
        text_part("Latin", "Café crème".encode("latin-1"), "text/plain; charset=ISO-8859-1"),
        text_part("Cyrillic", "ошибка".encode("koi8-r"), "text/plain; charset=koi8-r"),
        text_part("Utf8", "naïve ☃".encode("utf-8"), None),
        text_part("Broken", b"\xff\xfe", "text/plain; charset=utf-8"),
    ])
    raw_crash, _, _ = await send_raw(
        collector, body, [("Content-Type", "multipart/form-data; boundary=b0und")])
    assert raw_crash["Latin"] == "Café crème"
    assert raw_crash["Cyrillic"] == "ошибка"
    assert raw_crash["Utf8"] == "naïve ☃"
    assert "Broken" not in raw_crash
    assert raw_crash["metadata"]["collector_notes"] == [
        "extract payload text part exception: invalid text or charset: utf-8"]


@pytest_twisted.ensureDeferred
async def test_nul_removed_from_annotation_names_and_values_not_dumps(collector):
    dump = b"MDMP\x00\x00\x00\x01" + minidump()
    body = multipart_body([
        text_part("Product\x00Name", "Te\x00st"),
        text_part("extra", b'{"Json\\u0000Key": "va\\u0000lue", "List": ["a\\u0000"]}',
                  "application/json"),
        text_part("After\x00", b"\x00x\x00"),
        dump_part("upload_file\x00_minidump", dump),
    ])
    raw_crash, dump_names, dumps = await send_raw(
        collector, body, [("Content-Type", "multipart/form-data; boundary=b0und")])
    # the JSON part replaces what came before it; later fields are added
    assert raw_crash["JsonKey"] == "value"
    assert raw_crash["List"] == ["a"]
    assert raw_crash["After"] == "x"
    assert "ProductName" not in raw_crash
    assert dumps == {"upload_file_minidump": dump}
    assert "\\u0000" not in json.dumps(raw_crash)
