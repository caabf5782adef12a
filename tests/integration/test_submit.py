"""POST /submit end to end over real HTTP: what gets answered and what gets stored."""

import gzip
import hashlib
import re
import shutil
import subprocess

import pytest
import pytest_twisted

from antenna_tw.crashid import is_valid_crash_id
from antenna_tw.send_crash import build_multipart, post
from tests.helpers import MINIDUMPS, in_thread, minidump

CRASH_ID = re.compile(r"^CrashID=bp-([0-9a-f-]{36})\n$")
RAW_CRASH_FIELDS = {"uuid", "submitted_timestamp", "version", "metadata"}
METADATA_FIELDS = {"payload", "payload_compressed", "payload_size", "collector_notes",
                   "dump_checksums", "user_agent", "throttle_rule"}


def crash_id_of(answer):
    match = CRASH_ID.match(answer.decode("utf-8"))
    assert match, answer
    assert is_valid_crash_id(match.group(1))
    return match.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
@pytest_twisted.ensureDeferred
async def test_curl_upload_is_stored_in_antenna_layout(collector):
    dump_path = f"{MINIDUMPS}/linux-mini.dmp"
    result = await in_thread(
        subprocess.run,
        ["curl", "-s", "-F", "ProductName=Test", "-F", "Version=1.0",
         "-F", f"upload_file_minidump=@{dump_path}", collector.submit_url],
        capture_output=True, timeout=30,
    )
    crash_id = crash_id_of(result.stdout)
    raw_crash, dump_names, dumps = await collector.wait_stored(crash_id)

    assert dump_names == ["upload_file_minidump"]
    assert dumps["upload_file_minidump"] == minidump()
    assert raw_crash["ProductName"] == "Test"
    assert raw_crash["Version"] == "1.0"
    assert RAW_CRASH_FIELDS <= set(raw_crash)
    assert set(raw_crash["metadata"]) == METADATA_FIELDS
    assert raw_crash["uuid"] == crash_id
    assert raw_crash["version"] == 2
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$",
                    raw_crash["submitted_timestamp"])
    metadata = raw_crash["metadata"]
    assert metadata["payload"] == "multipart"
    assert metadata["payload_compressed"] == "0"
    assert metadata["dump_checksums"] == {
        "upload_file_minidump": hashlib.sha256(minidump()).hexdigest()}
    assert metadata["user_agent"].startswith("curl/")
    assert metadata["throttle_rule"] == "accept_everything"
    assert metadata["collector_notes"] == []
    assert metadata["payload_size"] > len(minidump())
    # the id's date is the storage folder
    assert crash_id[-6:] == raw_crash["submitted_timestamp"][2:10].replace("-", "")


@pytest.mark.parametrize("use_json", [False, True])
@pytest.mark.parametrize("compressed", [False, True])
@pytest_twisted.ensureDeferred
async def test_gzip_and_json_extra_are_stored_alike(collector, use_json, compressed):
    annotations = {"ProductName": "Test", "Version": "1.0"}
    body, content_type = build_multipart(
        annotations, {"upload_file_minidump": minidump()}, use_json=use_json)
    status, answer = await in_thread(post, collector.submit_url, body, content_type,
                                     compressed=compressed)
    assert status == 200
    crash_id = crash_id_of(answer)
    raw_crash, dump_names, dumps = await collector.wait_stored(crash_id)

    assert dumps == {"upload_file_minidump": minidump()}
    assert dump_names == ["upload_file_minidump"]
    assert raw_crash["ProductName"] == "Test"
    metadata = raw_crash["metadata"]
    assert metadata["payload"] == ("json" if use_json else "multipart")
    assert metadata["payload_compressed"] == ("1" if compressed else "0")
    wire_size = len(gzip.compress(body)) if compressed else len(body)
    # gzip output length can vary by a few bytes with the mtime field; compare loosely
    assert abs(metadata["payload_size"] - wire_size) < 64
    if not compressed:
        assert metadata["payload_size"] == len(body)


@pytest_twisted.ensureDeferred
async def test_answer_is_plain_text_with_content_length(collector):
    body, content_type = build_multipart({"ProductName": "Test"}, {})
    import http.client

    def exchange():
        connection = http.client.HTTPConnection("127.0.0.1", collector.port_number, timeout=10)
        connection.request("POST", "/submit", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        result = (response.status, response.getheader("Content-Type"),
                  response.getheader("Content-Length"), response.getheader("Transfer-Encoding"),
                  response.read())
        connection.close()
        return result

    status, ctype, length, transfer_encoding, answer = await in_thread(exchange)
    assert status == 200
    assert ctype.startswith("text/plain")
    assert int(length) == len(answer)
    assert transfer_encoding is None
    crash_id_of(answer)
