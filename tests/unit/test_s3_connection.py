"""Retries, backoff and timeouts of S3 requests, on a task.Clock with a fake HTTP client."""

import attr
import pytest
from twisted.internet import defer, error, task
from twisted.web.client import ResponseNeverReceived
from twisted.python.failure import Failure

from antenna_tw.ext.s3.connection import (
    RetryPolicy, S3Connection, S3Error, S3Unreachable, Timeouts, error_code,
)
from antenna_tw.ext.s3.credentials import CredentialSource
from antenna_tw.ext.s3.location import BucketLocation

SECRET = "do-not-leak-this-secret"
SLOWDOWN = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>x</Message></Error>"


class Highest:
    """A random source that always picks the top of the jitter range."""

    def uniform(self, low, high):
        return high


@attr.s
class FakeResponse:
    code = attr.ib()
    body = attr.ib(default=b"")

    def content(self):
        return defer.succeed(self.body)


@attr.s
class Sent:
    method = attr.ib()
    url = attr.ib()
    headers = attr.ib()
    data = attr.ib()
    deferred = attr.ib()
    cancelled = attr.ib(default=False)


class FakeHTTP:
    """Records requests; the test answers each one."""

    def __init__(self):
        self.sent = []

    def request(self, method, url, data=None, headers=None):
        sent = Sent(method, url, headers, data, None)

        def cancel(d):
            sent.cancelled = True
            d.errback(ResponseNeverReceived([Failure(defer.CancelledError())]))

        sent.deferred = defer.Deferred(cancel)
        self.sent.append(sent)
        return sent.deferred

    def answer(self, code, body=b""):
        pending = [s for s in self.sent if not s.deferred.called]
        pending[0].deferred.callback(FakeResponse(code, body))

    def fail(self, exception):
        pending = [s for s in self.sent if not s.deferred.called]
        pending[0].deferred.errback(Failure(exception))


def run_now(function, *args):
    return defer.maybeDeferred(function, *args)


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def http():
    return FakeHTTP()


def make_connection(clock, http, run_in_thread=run_now, **kwargs):
    location = BucketLocation("crashes", "us-west-2", "http://127.0.0.1:9")
    credentials = CredentialSource(run_now, "AKIAEXAMPLE", SECRET)
    kwargs.setdefault("retry", RetryPolicy(attempts=4, base_delay=0.5, max_delay=5.0,
                                           rng=Highest()))
    return S3Connection(location, credentials, http, clock, run_in_thread, **kwargs)


def put(connection, key="v1/dump/x", body=b"dump"):
    results = []
    d = defer.ensureDeferred(connection.put_object(key, body))
    d.addBoth(results.append)
    return results


def test_success_needs_one_request(clock, http):
    connection = make_connection(clock, http)
    results = put(connection)
    assert len(http.sent) == 1
    sent = http.sent[0]
    assert (sent.method, sent.url, sent.data) == (
        "PUT", "http://127.0.0.1:9/crashes/v1/dump/x", b"dump")
    assert set(sent.headers) >= {"Authorization", "Content-MD5", "X-Amz-Date"}
    assert all(isinstance(value, list) for value in sent.headers.values())
    http.answer(200)
    assert results == [None]


def test_throttling_and_server_errors_are_retried_with_growing_delays(clock, http):
    connection = make_connection(clock, http)
    results = put(connection)
    http.answer(503, SLOWDOWN)
    clock.advance(0.49)
    assert len(http.sent) == 1  # still waiting: backoff is on the reactor's clock
    clock.advance(0.01)
    assert len(http.sent) == 2
    http.answer(500)
    clock.advance(0.99)
    assert len(http.sent) == 2
    clock.advance(0.01)
    assert len(http.sent) == 3
    http.answer(429)
    clock.advance(2.0)
    assert len(http.sent) == 4
    http.answer(200)
    assert results == [None]


def test_gives_up_after_the_last_attempt_and_raises(clock, http):
    connection = make_connection(clock, http)
    results = put(connection)
    for delay in (0.5, 1.0, 2.0):
        http.answer(503, SLOWDOWN)
        clock.advance(delay)
    http.answer(503, SLOWDOWN)
    assert len(http.sent) == 4
    assert not clock.getDelayedCalls()
    [failure] = results
    assert failure.check(S3Error)
    assert failure.value.status == 503 and failure.value.code == "SlowDown"
    assert str(failure.value) == "S3 PUT v1/dump/x answered 503 SlowDown"


def test_delays_are_capped():
    policy = RetryPolicy(base_delay=0.5, max_delay=5.0, rng=Highest())
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_stays_in_the_upper_half():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    for failures in range(1, 6):
        ceiling = min(8.0, 2 ** (failures - 1))
        assert ceiling / 2 <= policy.delay(failures) <= ceiling


@pytest.mark.parametrize("status, body", [
    (403, b"<Error><Code>AccessDenied</Code></Error>"),
    (404, b"<Error><Code>NoSuchBucket</Code></Error>"),
    (400, b"<Error><Code>BadDigest</Code></Error>"),
])
def test_client_errors_are_not_retried(clock, http, status, body):
    connection = make_connection(clock, http)
    results = put(connection)
    http.answer(status, body)
    [failure] = results
    assert failure.check(S3Error)
    assert failure.value.status == status
    assert len(http.sent) == 1 and not clock.getDelayedCalls()


@pytest.mark.parametrize("status, body", [
    (408, b""), (400, b"<Error><Code>RequestTimeout</Code></Error>"), (502, b""),
])
def test_timeouts_reported_by_s3_are_retried(clock, http, status, body):
    connection = make_connection(clock, http)
    results = put(connection)
    http.answer(status, body)
    clock.advance(0.5)
    http.answer(200)
    assert results == [None] and len(http.sent) == 2


def test_a_request_without_answer_times_out_and_is_retried(clock, http):
    connection = make_connection(clock, http, timeouts=Timeouts(base=10.0))
    results = put(connection)
    clock.advance(9.9)
    assert not http.sent[0].cancelled
    clock.advance(0.2)
    assert http.sent[0].cancelled
    clock.advance(0.5)
    assert len(http.sent) == 2
    http.answer(200)
    assert results == [None]


def test_timeout_grows_with_the_body():
    timeouts = Timeouts(base=10.0, bytes_per_second=1024 * 1024)
    assert timeouts.for_body(0) == 10.0
    assert timeouts.for_body(25 * 1024 * 1024) == 35.0


def test_transport_errors_are_retried_then_reported(clock, http):
    connection = make_connection(clock, http, retry=RetryPolicy(attempts=2, rng=Highest()))
    results = put(connection)
    http.fail(error.ConnectionRefusedError())
    clock.advance(0.5)
    http.fail(error.ConnectionRefusedError())
    [failure] = results
    assert failure.check(S3Unreachable)
    assert "ConnectionRefusedError" in str(failure.value)


def test_expired_token_makes_the_next_try_resolve_credentials_again(clock, http):
    connection = make_connection(clock, http)
    calls = []
    connection.credentials.invalidate = lambda: calls.append("invalidate")
    results = put(connection)
    http.answer(400, b"<Error><Code>ExpiredToken</Code></Error>")
    assert calls == ["invalidate"]
    clock.advance(0.5)
    http.answer(200)
    assert results == [None]


def test_large_bodies_are_signed_in_a_thread(clock, http):
    threaded = []

    def run_in_thread(function, *args):
        threaded.append(function.__name__)
        return run_now(function, *args)

    connection = make_connection(clock, http, run_in_thread, sign_in_thread_bytes=1000)
    put(connection, body=b"x" * 999)
    assert threaded == []
    put(connection, body=b"x" * 1000)
    assert threaded == ["signed_headers"]


def test_errors_never_name_the_secret(clock, http):
    connection = make_connection(clock, http, retry=RetryPolicy(attempts=1))
    results = put(connection)
    http.answer(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>")
    assert SECRET not in str(results[0].value)
    assert SECRET not in repr(connection)


def test_head_bucket_returns_any_status_without_retrying(clock, http):
    connection = make_connection(clock, http)
    results = []
    defer.ensureDeferred(connection.head_bucket()).addBoth(results.append)
    assert http.sent[0].method == "HEAD"
    assert http.sent[0].url == "http://127.0.0.1:9/crashes"
    http.answer(404)
    assert results == [404]


def test_error_code_parsing():
    assert error_code(SLOWDOWN) == "SlowDown"
    assert error_code(b"") == ""
    assert error_code(b"<html>nope</html>") == ""
