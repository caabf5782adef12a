"""
Every answer, from its outcome to status, headers and body: through a
request, and raw on the transport for the early ones.
"""

import pytest
from twisted.web.test.requesthelper import DummyRequest

from antenna_tw import answers


def written(answer):
    request = DummyRequest([b""])
    body = answers.write(request, answer)
    headers = {name: values for name, values in request.responseHeaders.getAllRawHeaders()}
    return request.responseCode, headers, body


def test_crash_id():
    code, headers, body = written(answers.crash_id("bp-", "de1bb258-cbbf-4589-a673-34f800160918"))
    assert code == 200
    assert body == b"CrashID=bp-de1bb258-cbbf-4589-a673-34f800160918\n"
    assert headers[b"Content-Type"] == [b"text/plain; charset=utf-8"]
    assert headers[b"Content-Length"] == [b"%d" % len(body)]


@pytest.mark.parametrize("reason, code", [
    ("too_large", 413), ("unauthorized_uuid", 401), ("malformed_no_content_type", 400),
    ("rule_is_nightly", 400)])
def test_discarded_status_follows_the_reason(reason, code):
    assert written(answers.discarded(reason))[::2] == (code, b"Discarded=" + reason.encode())


def test_discarded_with_a_given_status():
    assert written(answers.discarded("rule_reject", code=200))[::2] == (200, b"Discarded=rule_reject")


def test_busy_asks_to_retry_later():
    code, headers, body = written(answers.busy())
    assert (code, body) == (503, b"Discarded=busy")
    assert headers[b"Retry-After"] == [b"60"]


def test_plain_errors_and_json():
    assert written(answers.NOT_FOUND)[::2] == (404, b"Not Found")
    assert written(answers.METHOD_NOT_ALLOWED)[::2] == (405, b"Method Not Allowed")
    assert written(answers.INTERNAL_ERROR)[::2] == (500, b"Internal Server Error")
    code, headers, body = written(answers.json_answer(503, {"b": 1, "a": [2]}))
    assert (code, body) == (503, b'{"a": [2], "b": 1}')
    assert headers[b"Content-Type"] == [b"application/json"]
    code, headers, body = written(answers.empty_json())
    assert (code, body, headers[b"Content-Length"]) == (200, b"", [b"0"])


def test_raw_answers_are_whole_responses_that_close():
    assert answers.raw(answers.too_large()) == (
        b"HTTP/1.1 413 Payload Too Large\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 19\r\nConnection: close\r\n\r\nDiscarded=too_large")
    assert answers.raw(answers.busy()) == (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 14\r\nRetry-After: 60\r\nConnection: close\r\n\r\nDiscarded=busy")
