"""
Every row of the table in docs/intake.rst, *The order of checks*, over real
HTTP to a listening collector: the status and the exact body.
"""

import gzip
import os
import shutil

import pytest
import pytest_twisted

from antenna_tw.send_crash import build_multipart
from tests.helpers import http_request, minidump, raw_request

GOOD_BODY, GOOD_TYPE = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                       {"upload_file_minidump": minidump()})
TOKEN = "stage-token-123"


def part(name, data, ctype="text/plain", filename=None):
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename:
        disposition += f'; filename="{filename}"'
    return (disposition + "\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "")
            + "\r\n").encode() + data


def body_of(*parts):
    return b"".join(b"--b0und\r\n" + p + b"\r\n" for p in parts) + b"--b0und--\r\n"


MP = "multipart/form-data; boundary=b0und"
ANNOTATION = part("ProductName", b"Test")

# (test id, headers, body, status, answer)
ROWS = [
    ("2_no_content_type", [], GOOD_BODY, 400, b"Discarded=malformed_no_content_type"),
    ("3_wrong_content_type", [("Content-Type", "application/json")], GOOD_BODY, 400,
     b"Discarded=malformed_wrong_content_type"),
    ("4_no_boundary", [("Content-Type", "multipart/form-data")], GOOD_BODY, 400,
     b"Discarded=malformed_no_boundary"),
    ("4_empty_boundary", [("Content-Type", 'multipart/form-data; boundary=""')], GOOD_BODY,
     400, b"Discarded=malformed_no_boundary"),
    ("4_boundary_over_70", [("Content-Type", "multipart/form-data; boundary=" + "b" * 71)],
     GOOD_BODY, 400, b"Discarded=malformed_no_boundary"),
    ("6_two_encodings", [("Content-Type", GOOD_TYPE), ("Content-Encoding", "gzip, identity")],
     GOOD_BODY, 400, b"Discarded=malformed_unsupported_content_encoding"),
    ("9_part_headers_over_8k", [("Content-Type", MP)],
     body_of(ANNOTATION, b"X-Big: " + b"h" * 8200 + b"\r\n" + part("a", b"v")), 400,
     b"Discarded=malformed_invalid_payload_structure"),
    ("5_empty_body", [("Content-Type", MP)], b"", 400,
     b"Discarded=malformed_no_content_length"),
    ("6_unsupported_encoding", [("Content-Type", GOOD_TYPE), ("Content-Encoding", "br")],
     GOOD_BODY, 400, b"Discarded=malformed_unsupported_content_encoding"),
    ("7_bad_gzip", [("Content-Type", GOOD_TYPE), ("Content-Encoding", "gzip")], GOOD_BODY,
     400, b"Discarded=malformed_bad_gzip"),
    ("9_broken_structure", [("Content-Type", MP)], b"junk, not multipart", 400,
     b"Discarded=malformed_invalid_payload_structure"),
    ("9_truncated", [("Content-Type", MP)], body_of(ANNOTATION)[:-10], 400,
     b"Discarded=malformed_invalid_payload_structure"),
    ("9_more_than_max_parts", [("Content-Type", MP)],
     body_of(*[part(f"k{i}", b"v") for i in range(257)]), 400,
     b"Discarded=malformed_invalid_payload_structure"),
    ("10_invalid_json", [("Content-Type", MP)],
     body_of(part("extra", b"{bad", "application/json")), 400,
     b"Discarded=malformed_invalid_json"),
    ("11_json_not_object", [("Content-Type", MP)],
     body_of(part("extra", b"[1, 2]", "application/json")), 400,
     b"Discarded=malformed_invalid_json_value"),
    ("12_reserved_dump_name", [("Content-Type", MP)],
     body_of(ANNOTATION, part("raw_crash", b"d", "application/octet-stream", "f")), 400,
     b"Discarded=malformed_invalid_dump_name"),
    ("13_no_annotations", [("Content-Type", MP)],
     body_of(part("upload_file_minidump", b"d", "application/octet-stream", "f")), 400,
     b"Discarded=malformed_no_annotations"),
    ("14_uuid_without_token", [("Content-Type", MP)],
     body_of(ANNOTATION, part("uuid", b"de1bb258-cbbf-4589-a673-34f800160918")), 401,
     b"Discarded=unauthorized_uuid"),
    ("14_uuid_wrong_token", [("Content-Type", MP), ("Authorization", "Bearer nope")],
     body_of(ANNOTATION, part("uuid", b"de1bb258-cbbf-4589-a673-34f800160918")), 401,
     b"Discarded=unauthorized_uuid"),
    ("15_authorized_bad_uuid", [("Content-Type", MP), ("Authorization", f"Bearer {TOKEN}")],
     body_of(ANNOTATION, part("uuid", b"not-a-crash-id")), 400,
     b"Discarded=malformed_invalid_uuid"),
]


@pytest.mark.parametrize("headers,body,status,answer",
                         [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
@pytest_twisted.ensureDeferred
async def test_refusals(collector_with, headers, body, status, answer):
    running = await collector_with(STAGE_SUBMITTER_BEARER_TOKEN=TOKEN)
    got_status, got_headers, got_body = await raw_request(
        running.port_number, http_request(body, headers))
    assert (got_status, got_body) == (status, answer)
    assert got_headers["content-type"].startswith("text/plain")
    await running.wait_idle()
    assert running.stored_ids() == []


@pytest_twisted.ensureDeferred
async def test_1_content_length_over_limit(collector_with):
    running = await collector_with(MAX_PAYLOAD_SIZE=len(GOOD_BODY) - 1)
    status, _, answer = await raw_request(
        running.port_number, http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)]))
    assert (status, answer) == (413, b"Discarded=too_large")
    assert running.stored_ids() == []


@pytest_twisted.ensureDeferred
async def test_1_chunked_over_limit(collector_with):
    running = await collector_with(MAX_PAYLOAD_SIZE=len(GOOD_BODY) - 1)
    status, _, answer = await raw_request(
        running.port_number,
        http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)], chunked=True, chunk_size=4096))
    assert (status, answer) == (413, b"Discarded=too_large")


@pytest_twisted.ensureDeferred
async def test_1_size_limit_comes_before_content_type(collector_with):
    running = await collector_with(MAX_PAYLOAD_SIZE=100)
    status, _, answer = await raw_request(running.port_number, http_request(b"x" * 101, []))
    assert (status, answer) == (413, b"Discarded=too_large")


@pytest_twisted.ensureDeferred
async def test_5_empty_chunked_body(collector):
    status, _, answer = await raw_request(
        collector.port_number, http_request(b"", [("Content-Type", MP)], chunked=True))
    assert (status, answer) == (400, b"Discarded=malformed_no_content_length")


@pytest_twisted.ensureDeferred
async def test_8_decompressed_over_limit(collector_with):
    running = await collector_with(MAX_DECOMPRESSED_SIZE=len(GOOD_BODY) - 1)
    status, _, answer = await raw_request(
        running.port_number,
        http_request(gzip.compress(GOOD_BODY),
                     [("Content-Type", GOOD_TYPE), ("Content-Encoding", "gzip")]))
    assert (status, answer) == (413, b"Discarded=too_large")


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
@pytest_twisted.ensureDeferred
async def test_9_body_shorter_than_declared(collector, chunked):
    # the client sends part of the body, then shuts down its sending side
    if chunked:
        request = http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)], chunked=True,
                               chunk_size=1000)[:-len(b"0\r\n\r\n")]
    else:
        request = http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE),
                                           ("Content-Length", str(len(GOOD_BODY) + 100))])
    status, headers, answer = await raw_request(collector.port_number, request,
                                                half_close=True, timeout=5)
    assert (status, answer) == (400, b"Discarded=malformed_invalid_payload_structure")
    assert headers["content-type"].startswith("text/plain")
    await collector.wait_idle()
    assert collector.stored_ids() == []


@pytest.mark.parametrize("sent", [b"", GOOD_BODY[:10]], ids=["no_body_bytes", "ten_bytes"])
@pytest_twisted.ensureDeferred
async def test_9_short_body_comes_after_the_earlier_checks(collector, sent):
    declared = ("Content-Length", str(len(GOOD_BODY)))  # positive: not check 5
    request = http_request(sent, [("Content-Type", GOOD_TYPE), declared])
    got = await raw_request(collector.port_number, request, half_close=True, timeout=5)
    assert (got[0], got[2]) == (400, b"Discarded=malformed_invalid_payload_structure")
    request = http_request(sent, [declared])
    got = await raw_request(collector.port_number, request, half_close=True, timeout=5)
    assert (got[0], got[2]) == (400, b"Discarded=malformed_no_content_type")


@pytest_twisted.ensureDeferred
async def test_a_complete_request_then_a_half_close_still_gets_its_answer(collector):
    status, _, answer = await raw_request(
        collector.port_number, http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)]),
        half_close=True, timeout=5)
    assert status == 200 and answer.startswith(b"CrashID=bp-")
    await collector.wait_idle()
    assert len(collector.stored_ids()) == 1


@pytest_twisted.ensureDeferred
async def test_14_uuid_checked_before_a_reject_is_answered(collector_with):
    running = await collector_with(THROTTLE_RULES="tests.rulesets.REJECT_ALL")
    body = body_of(ANNOTATION, part("uuid", b"de1bb258-cbbf-4589-a673-34f800160918"))
    status, _, answer = await raw_request(
        running.port_number, http_request(body, [("Content-Type", MP)]))
    assert (status, answer) == (401, b"Discarded=unauthorized_uuid")


@pytest_twisted.ensureDeferred
async def test_authorized_uuid_keeps_its_id_and_date(collector_with):
    running = await collector_with(STAGE_SUBMITTER_BEARER_TOKEN=TOKEN)
    crash_id = "de1bb258-cbbf-4589-a673-34f800160918"
    body = body_of(ANNOTATION, part("uuid", crash_id.encode()))
    status, _, answer = await raw_request(
        running.port_number,
        http_request(body, [("Content-Type", MP), ("Authorization", f"Bearer {TOKEN}")]))
    assert (status, answer) == (200, f"CrashID=bp-{crash_id}\n".encode())
    raw_crash, _, _ = await running.wait_stored(crash_id)
    assert raw_crash["uuid"] == crash_id
    assert os.path.isdir(os.path.join(running.fs_root, "20160918"))


@pytest_twisted.ensureDeferred
async def test_16_reject(collector_with):
    running = await collector_with(THROTTLE_RULES="tests.rulesets.REJECT_ALL")
    status, _, answer = await raw_request(
        running.port_number, http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)]))
    assert (status, answer) == (200, b"Discarded=rule_reject_everything")
    await running.wait_idle()
    assert running.stored_ids() == []


@pytest_twisted.ensureDeferred
async def test_17_spool_full_answers_busy(collector_with):
    running = await collector_with(SPOOL_MIN_FREE_BYTES=str(1 << 60))
    status, headers, answer = await raw_request(
        running.port_number, http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)]))
    assert (status, answer) == (503, b"Discarded=busy")
    assert int(headers["retry-after"]) > 0
    assert running.stored_ids() == []


@pytest_twisted.ensureDeferred
async def test_17_spool_over_max_bytes_answers_busy(collector_with):
    running = await collector_with(SPOOL_MAX_BYTES=len(GOOD_BODY) // 2,
                                   CRASHSTORAGE_CLASS="tests.helpers.NeverStorage")
    request = http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)])
    first = await raw_request(running.port_number, request)
    assert first[0] == 200  # the spool was empty
    second = await raw_request(running.port_number, request)
    assert (second[0], second[2]) == (503, b"Discarded=busy")


@pytest_twisted.ensureDeferred
async def test_18_fakeaccept_answers_an_id_and_stores_nothing(collector_with):
    running = await collector_with(THROTTLE_RULES="tests.rulesets.FAKEACCEPT_ALL")
    status, _, answer = await raw_request(
        running.port_number, http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)]))
    assert status == 200
    assert answer.startswith(b"CrashID=bp-") and answer.endswith(b"\n")
    assert answer[-8:-7] == b"3"  # FAKEACCEPT throttle digit
    await running.wait_idle()
    assert running.stored_ids() == []
    assert os.listdir(running.collector.spool.directory) == ["corrupt"]


@pytest.mark.parametrize("rules,digit", [(None, b"0"), ("tests.rulesets.DEFER_ALL", b"1")])
@pytest_twisted.ensureDeferred
async def test_19_accept_and_defer_are_stored(collector_with, rules, digit):
    overrides = {"THROTTLE_RULES": rules} if rules else {}
    running = await collector_with(**overrides)
    status, _, answer = await raw_request(
        running.port_number, http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)]))
    assert status == 200
    crash_id = answer.decode().strip()[len("CrashID=bp-"):]
    assert answer[-8:-7] == digit
    _, _, dumps = await running.wait_stored(crash_id)
    assert dumps == {"upload_file_minidump": minidump()}


@pytest_twisted.ensureDeferred
async def test_20_spool_write_failure_answers_busy(collector):
    spool_dir = collector.collector.spool.directory
    # Renamed, not removed: the background heartbeat may be writing its probe
    # file in it (rmtree would then find it not empty).
    os.rename(spool_dir, spool_dir + ".gone")
    shutil.rmtree(spool_dir + ".gone", ignore_errors=True)
    with open(spool_dir, "w") as blocker:  # a file where the spool directory was
        blocker.write("x")
    try:
        status, headers, answer = await raw_request(
            collector.port_number, http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)]))
    finally:
        os.unlink(spool_dir)
        os.makedirs(os.path.join(spool_dir, "corrupt"))
    assert (status, answer) == (503, b"Discarded=busy")
    assert "retry-after" in headers
    assert collector.stored_ids() == []


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/submit", 405), ("PUT", "/submit", 405), ("GET", "/nothing-here", 404),
])
@pytest_twisted.ensureDeferred
async def test_other_methods_and_paths(collector, method, path, status):
    got_status, headers, _ = await raw_request(
        collector.port_number, http_request(b"", [], method=method, path=path))
    assert got_status == status
    assert headers["content-type"].startswith("text/plain")


@pytest_twisted.ensureDeferred
async def test_submit_with_trailing_slash(collector):
    status, _, answer = await raw_request(
        collector.port_number,
        http_request(GOOD_BODY, [("Content-Type", GOOD_TYPE)], path="/submit/"))
    assert status == 200 and answer.startswith(b"CrashID=bp-")
