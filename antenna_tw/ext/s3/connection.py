"""
Requests to one bucket: signed, timed out, and retried on the reactor's clock.

treq sends them over a persistent ``HTTPConnectionPool``; every response
body is read (so the connection can go back to the pool) and its status
checked (treq never raises on one). Throttling (429, 503 SlowDown), server
errors (5xx), 408 and S3's ``RequestTimeout``, and transport errors
(refused, reset, no answer within the timeout) are retried a few times with
jittered exponential backoff; an expired session token makes the next try
re-resolve credentials. What still fails raises, and the caller (the crash
mover) puts the crash back on its queue.
"""

from __future__ import annotations

import random
import re

import attr
from twisted.internet import defer, error, task
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web._newclient import RequestTransmissionFailed

from antenna_tw.ext.s3.signing import signed_headers
from antenna_tw.logs import Logger

RETRY_STATUSES = frozenset({408, 429})
RETRY_CODES = frozenset({
    "SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError",
    "ServiceUnavailable", "ExpiredToken", "TokenRefreshRequired",
})
REFRESH_CODES = frozenset({"ExpiredToken", "TokenRefreshRequired"})

TRANSPORT_ERRORS = (
    error.ConnectError,  # includes refused and timed-out connects
    error.DNSLookupError,
    error.ConnectionLost,
    error.ConnectionDone,
    error.TimeoutError,  # our per-request timeout (Deferred.addTimeout)
    defer.TimeoutError,
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    ConnectionError,
)

_CODE = re.compile(rb"<Code>\s*([A-Za-z0-9.]{1,64})\s*</Code>")


def error_code(body):
    """The ``<Code>`` of an S3 XML error body, or "" (HEAD answers carry no body)."""
    match = _CODE.search(body or b"")
    return match.group(1).decode("ascii") if match else ""


class S3Error(Exception):
    """S3 answered with an error status. The message names no secret."""

    def __init__(self, method, what, status, code=""):
        self.method = method
        self.what = what
        self.status = status
        self.code = code
        super().__init__(f"S3 {method} {what} answered {status}{' ' + code if code else ''}")

    @property
    def retryable(self):
        return self.status >= 500 or self.status in RETRY_STATUSES or self.code in RETRY_CODES

    @property
    def needs_new_credentials(self):
        return self.code in REFRESH_CODES


class S3Unreachable(Exception):
    """No usable answer from S3 (refused, reset, timed out)."""

    def __init__(self, method, what, reason):
        self.reason = reason
        super().__init__(f"S3 {method} {what}: no answer ({reason})")


def describe_transport_error(exc):
    """A short reason for a transport error, one line, no secrets."""
    if isinstance(exc, (ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed)):
        reasons = getattr(exc, "reasons", None) or []
        if reasons:
            inner = reasons[0].value
            return f"{type(exc).__name__}: {type(inner).__name__}"
    return type(exc).__name__


def _timed_out(result, seconds):
    # Whatever the cancelled request failed with (CancelledError,
    # ResponseNeverReceived, ConnectingCancelledError), report the timeout.
    raise error.TimeoutError(f"no answer in {seconds:.0f} s")


@attr.s
class RetryPolicy:
    """
    ``attempts`` tries in all; before try n+1 wait uniformly between half and
    all of ``min(max_delay, base_delay * 2**(n-1))``.
    """

    attempts = attr.ib(default=4)
    base_delay = attr.ib(default=0.5)
    max_delay = attr.ib(default=5.0)
    rng = attr.ib(factory=random.Random, repr=False)

    def delay(self, failures):
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(failures - 1, 30))
        return self.rng.uniform(ceiling / 2, ceiling)


@attr.s
class Timeouts:
    """
    Per-request timeouts: ``base`` seconds, plus one second for every
    ``bytes_per_second`` bytes of body so large uploads on slow links finish.
    """

    base = attr.ib(default=10.0)
    bytes_per_second = attr.ib(default=256 * 1024)
    health = attr.ib(default=5.0)

    def for_body(self, size):
        return self.base + size / self.bytes_per_second


@attr.s
class S3Connection:
    """
    Signed requests to the bucket at ``location``.

    ``http`` is a ``treq.client.HTTPClient`` (or anything with its
    ``request`` method); ``run_in_thread(function, *args)`` returns a
    Deferred and is used to sign large bodies off the reactor thread.
    ``pool`` is the HTTPConnectionPool behind ``http``, closed by ``close``.
    """

    location = attr.ib()
    credentials = attr.ib()
    http = attr.ib(repr=False)
    reactor = attr.ib(repr=False)
    run_in_thread = attr.ib(repr=False)
    retry = attr.ib(factory=RetryPolicy)
    timeouts = attr.ib(factory=Timeouts)
    pool = attr.ib(default=None, repr=False)
    sign_in_thread_bytes = attr.ib(default=256 * 1024)
    log = Logger(namespace="antenna.s3")

    async def put_object(self, key, body):
        """Store ``body`` at ``key``; raises S3Error or S3Unreachable after the retries."""
        await self.request("PUT", self.location.object_url(key), key, body,
                           timeout=self.timeouts.for_body(len(body)))

    async def head_bucket(self):
        """One HEAD of the bucket, no retries; the status (any). Raises S3Unreachable."""
        return await self.request("HEAD", self.location.bucket_url(), "bucket",
                                  timeout=self.timeouts.health, attempts=1, raise_status=False)

    async def request(self, method, url, what, body=b"", *, timeout, attempts=None,
                      raise_status=True):
        """
        Send a signed request, retrying what is worth retrying; the status.
        ``what`` names the target in logs and errors (a key, or "bucket").
        """
        attempts = attempts or self.retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                status, content = await self._once(method, url, body, timeout)
                if 200 <= status < 300 or not raise_status:
                    return status
                raise S3Error(method, what, status, error_code(content))
            except S3Error as failure:
                if not failure.retryable or attempt == attempts:
                    raise
                if failure.needs_new_credentials:
                    self.credentials.invalidate()
                reason = str(failure)
            except TRANSPORT_ERRORS as failure:
                reason = describe_transport_error(failure)
                if attempt == attempts:
                    raise S3Unreachable(method, what, reason) from None
            delay = self.retry.delay(attempt)
            self.log.warn(
                "S3 {method} {what} failed ({reason}); try {next} of {attempts} in {delay:.2f} s",
                method=method, what=what, reason=reason, next=attempt + 1,
                attempts=attempts, delay=delay)
            await task.deferLater(self.reactor, delay, lambda: None)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, method, url, body, timeout):
        credentials = await self.credentials.frozen()
        region = self.location.region
        if len(body) >= self.sign_in_thread_bytes:
            headers = await self.run_in_thread(
                signed_headers, credentials, region, method, url, body)
        else:
            headers = signed_headers(credentials, region, method, url, body)
        exchange = defer.ensureDeferred(self._exchange(method, url, body, headers))
        exchange.addTimeout(timeout, self.reactor, onTimeoutCancel=_timed_out)
        return await exchange

    async def _exchange(self, method, url, body, headers):
        response = await self.http.request(
            method, url, data=body or None,
            headers={name: [value] for name, value in headers.items()})
        content = await response.content()  # always drained: the connection goes back
        return response.code, content

    def close(self):
        """Close idle pooled connections (tests, shutdown). A Deferred."""
        if self.pool is None:
            return defer.succeed(None)
        return self.pool.closeCachedConnections()
