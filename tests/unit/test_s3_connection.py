"""
Retries, backoff and timeouts of S3 requests, on a task.Clock with a fake
HTTP client (``wire.IHTTP``; tests/unit/test_s3_wire.py tests the real one).
"""

import hashlib

import attr
import pytest
from twisted.internet import defer, error, task
from twisted.python.failure import Failure
from zope.interface import implementer

from antenna_tw.backoff import Backoff
from antenna_tw.ext.s3.client import (
    BucketLocation, CredentialSource, S3Connection, S3Error, S3Unreachable, Timeouts, error_code,
)
from antenna_tw.ext.s3.wire import IHTTP, Response

SECRET = "do-not-leak-this-secret"
SLOWDOWN = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>x</Message></Error>"


class Highest:
    """A random source that always picks the top of the jitter range."""

    def __init__(self):
        self.ranges = []

    def uniform(self, low, high):
        self.ranges.append((low, high))
        return high


def FakeResponse(status, body=b"", phrase="", headers=None):  # noqa: N802 - reads as a class
    return Response(status, phrase, headers or {}, body)


@attr.s
class Sent:
    method = attr.ib()
    url = attr.ib()
    headers = attr.ib()
    data = attr.ib()
    deferred = attr.ib()
    cancelled = attr.ib(default=False)


@implementer(IHTTP)
class FakeHTTP:
    """Records requests; the test answers each one."""

    def __init__(self):
        self.sent = []
        # What a cancelled request fails with.
        self.cancel_error = defer.CancelledError()

    def request(self, method, url, body, headers):
        sent = Sent(method, url, headers, body, None)

        def cancel(d):
            sent.cancelled = True
            d.errback(Failure(self.cancel_error))

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
    kwargs.setdefault("backoff", Backoff(base=0.5, cap=5.0, rng=Highest()))
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
    assert set(sent.headers) >= {"Authorization", "X-Amz-Content-SHA256", "X-Amz-Date"}
    assert "Content-MD5" not in sent.headers  # the signed SHA-256 protects the body
    assert all(isinstance(value, str) for value in sent.headers.values())
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


def test_the_default_retries_are_four_tries_with_the_projects_backoff():
    connection = make_connection(task.Clock(), FakeHTTP(), backoff=Backoff(base=0.5, cap=5.0))
    defaults = S3Connection(connection.location, connection.credentials, None, None, None)
    assert defaults.attempts == 4
    assert (defaults.backoff.base, defaults.backoff.cap) == (0.5, 5.0)


def test_retries_wait_what_the_backoff_draws(clock, http):
    rng = Highest()
    connection = make_connection(clock, http, backoff=Backoff(base=0.5, cap=1.5, rng=rng))
    results = put(connection)
    for delay in (0.5, 1.0, 1.5):
        http.answer(503, SLOWDOWN)
        clock.advance(delay)
    http.answer(200)
    assert results == [None]
    assert rng.ranges == [(0.25, 0.5), (0.25, 1.0), (0.25, 1.5)]  # Backoff's ranges, capped


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


@pytest.mark.parametrize("cancel_error", [
    error.ConnectingCancelledError(("127.0.0.1", 9)),  # still connecting
    defer.CancelledError(),
])
def test_a_cancelled_request_is_final_and_never_retried(clock, http, cancel_error):
    # At the shutdown deadline the crash movers cancel their saves: the
    # cancellation must end the request, not count as a network error.
    http.cancel_error = cancel_error
    connection = make_connection(clock, http)
    results = []
    d = defer.ensureDeferred(connection.put_object("v1/dump/x", b"dump"))
    d.addBoth(results.append)
    d.cancel()
    [failure] = results
    assert failure.check(defer.CancelledError)
    assert http.sent[0].cancelled
    assert not clock.getDelayedCalls()  # no retry pending, no timeout left behind
    clock.advance(60)
    assert len(http.sent) == 1


def test_a_request_cancelled_during_its_backoff_is_final(clock, http):
    connection = make_connection(clock, http)
    results = []
    d = defer.ensureDeferred(connection.put_object("v1/dump/x", b"dump"))
    d.addBoth(results.append)
    http.answer(503, SLOWDOWN)
    assert clock.getDelayedCalls()  # waiting before the second try
    d.cancel()
    [failure] = results
    assert failure.check(defer.CancelledError)
    assert not clock.getDelayedCalls()
    clock.advance(60)
    assert len(http.sent) == 1


def test_timeout_grows_with_the_body():
    timeouts = Timeouts(base=10.0, bytes_per_second=1024 * 1024)
    assert timeouts.for_body(0) == 10.0
    assert timeouts.for_body(25 * 1024 * 1024) == 35.0


def test_transport_errors_are_retried_then_reported(clock, http):
    connection = make_connection(clock, http, attempts=2)
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


def test_large_bodies_are_hashed_in_a_thread_unless_their_hash_is_given(clock, http):
    threaded = []

    def run_in_thread(function, *args):
        threaded.append(function.__name__)
        return run_now(function, *args)

    connection = make_connection(clock, http, run_in_thread, hash_in_thread_bytes=1000)
    put(connection, body=b"x" * 999)
    assert threaded == []
    put(connection, body=b"x" * 1000)
    assert threaded == ["sha256_hex"]
    given = hashlib.sha256(b"y" * 1000).hexdigest()
    defer.ensureDeferred(connection.put_object("v1/dump/y", b"y" * 1000, given))
    assert threaded == ["sha256_hex"]
    assert http.sent[-1].headers["X-Amz-Content-SHA256"] == given


def test_the_payload_hash_sent_is_the_bodys(clock, http):
    connection = make_connection(clock, http)
    for body in (b"", b"dump", b"\x00" * 300_000):
        put(connection, body=body)
        assert http.sent[-1].headers["X-Amz-Content-SHA256"] == (
            hashlib.sha256(body).hexdigest())


def test_the_signing_key_is_derived_once_a_day(clock, http):
    connection = make_connection(clock, http)
    derived = []
    real = connection.signer.signing_key

    def counting(secret, day):
        key = real(secret, day)
        derived.append((day, key))
        return key

    clock.advance(86400 - 2)  # 1970-01-01T23:59:58Z
    connection.signer.signing_key = counting
    put(connection)
    put(connection)
    clock.advance(3)
    put(connection)
    assert [day for day, _ in derived] == ["19700101", "19700101", "19700102"]
    assert derived[0][1] == derived[1][1] != derived[2][1]


def test_errors_never_name_the_secret(clock, http):
    connection = make_connection(clock, http, attempts=1)
    results = put(connection)
    http.answer(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>")
    assert SECRET not in str(results[0].value)
    assert SECRET not in repr(connection)


def test_head_bucket_returns_any_answer_without_retrying(clock, http):
    connection = make_connection(clock, http)
    results = []
    defer.ensureDeferred(connection.head_bucket()).addBoth(results.append)
    assert http.sent[0].method == "HEAD"
    assert http.sent[0].url == "http://127.0.0.1:9/crashes"
    headers = {b"x-amz-bucket-region": b"eu-west-1"}
    http.sent[0].deferred.callback(FakeResponse(301, phrase="Moved Permanently",
                                                headers=headers))
    [answer] = results
    assert (answer.status, answer.phrase, answer.bucket_region) == (
        301, "Moved Permanently", "eu-west-1")
    assert len(http.sent) == 1 and not clock.getDelayedCalls()


def test_error_code_parsing():
    assert error_code(SLOWDOWN) == "SlowDown"
    assert error_code(b"") == ""
    assert error_code(b"<html>nope</html>") == ""
