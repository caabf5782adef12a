"""
The S3 client: where the bucket is, credentials, SigV4 signing, and
requests with timeouts and reactor-timed retries.

``wire.ConnectionPool`` (HTTP/1.1 on kept-alive Twisted connections, answers
parsed by httptools) sends the crash movers' and the heartbeat's requests;
every answer is read whole and its status checked.
Throttling (429, 503 SlowDown), server errors (5xx), 408 and S3's
``RequestTimeout``, and transport errors (refused, reset, no answer within the
timeout) are retried a few times with ``antenna_tw.backoff.Backoff``'s
delays; an expired session token makes the next try re-resolve credentials.
What still fails raises, and the caller (the crash mover) puts the crash back
on its queue. A cancelled request (the crash movers stopping at the shutdown
deadline) raises ``CancelledError`` at once: it is never retried.

The HEAD of the bucket has two transports and one request: the pool on the
reactor (``S3Connection.head_bucket``, the heartbeat) and ``http.client``,
blocking (``head_bucket_blocking``, the start-up check, which runs before the
reactor, in the ``--workers`` parent too, and so must not need Twisted's TLS:
see ``antenna_tw/workers/footprint.py``). Both send what ``signed_request`` builds
and return an ``Answer``, or raise ``S3Unreachable``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast
from urllib.parse import quote, urlsplit

import attr
import botocore.exceptions
import botocore.session
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from twisted.internet import defer, error, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import (
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from zope.interface import implementer

from antenna_tw.backoff import Backoff
from antenna_tw.ext.s3.wire import IHTTP, BadAnswer, ConnectionPool, Response, host_header
from antenna_tw.logs import Logger

if TYPE_CHECKING:
    from antenna_tw.config import StorageSettings

T = TypeVar("T")

# ``run_in_thread(function, *args)``: a Deferred of the call, run in a pool thread.
RunInThread = Callable[..., "Deferred[Any]"]


# -- one call at a time -------------------------------------------------------


class SingleFlight(Generic[T]):
    """
    ``run(start)`` calls ``start()`` (which returns a Deferred or a value)
    unless a call is already under way; every caller gets a Deferred of that
    call's result. Used so that many crash movers waiting for credentials,
    or many heartbeats, cause one refresh or one HEAD, not one each.
    """

    def __init__(self) -> None:
        self._waiters: list[Deferred[T]] | None = None

    @property
    def running(self) -> bool:
        """True while a call is under way."""
        return self._waiters is not None

    def run(self, start: Callable[[], Deferred[T] | T]) -> Deferred[T]:
        """A Deferred of the running call's result, starting one if none runs."""
        waiter: Deferred[T] = Deferred()
        if self._waiters is not None:
            self._waiters.append(waiter)
            return waiter
        self._waiters = [waiter]
        defer.maybeDeferred(start).addBoth(self._finish)
        return waiter

    def _finish(self, result: object) -> None:
        waiters, self._waiters = self._waiters or [], None
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(cast(T, result))


def check_endpoint_url(url: str, option: str) -> None:
    """ValueError naming ``option`` unless ``url`` is empty or an http(s) URL with a host."""
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{option}={url!r} is not an http(s) URL")


# -- where the bucket is ------------------------------------------------------


def quote_key(key: str) -> str:
    """Percent-encode a key for the URL path; SigV4 signs the path as sent."""
    return quote(key, safe="/~")


def _endpoint_url(url: str | None) -> str:
    return (url or "").rstrip("/")


@attr.s(frozen=True)
class ServiceLocation:
    """
    Which bucket or queue (``name``), and where its AWS service answers:
    ``endpoint_url`` (MinIO, LocalStack, moto), else AWS's endpoint for
    ``region``. Subclasses name the service and the options for messages.
    """

    service: ClassVar[str]  # the first word of AWS's host name: s3, sqs
    name_option: ClassVar[str]
    endpoint_option: ClassVar[str]
    used_for: ClassVar[str]

    name: str = attr.ib()
    region: str = attr.ib()
    endpoint_url: str = attr.ib(default="", converter=_endpoint_url)

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise ValueError(f"{self.name_option} is required for {self.used_for}")
        check_endpoint_url(self.endpoint_url, self.endpoint_option)

    @property
    def endpoint(self) -> str:
        """The service endpoint, for messages and path-style URLs."""
        return self.endpoint_url or f"https://{self.service}.{self.region}.amazonaws.com"


@attr.s(frozen=True)
class BucketLocation(ServiceLocation):
    """
    Where a bucket lives. With ``endpoint_url`` requests go to
    ``<endpoint>/<bucket>/<key>``; without it, to
    ``https://<bucket>.s3.<region>.amazonaws.com/<key>``, or path style on the
    regional endpoint when the bucket name has dots (they break TLS names).
    """

    service = "s3"
    name_option = "CRASHSTORAGE_BUCKET_NAME"
    endpoint_option = "CRASHSTORAGE_ENDPOINT_URL"
    used_for = "S3 storage"

    def __attrs_post_init__(self) -> None:
        if "/" in self.name:
            raise ValueError(f"CRASHSTORAGE_BUCKET_NAME={self.name!r} is not a bucket name")
        super().__attrs_post_init__()

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self.name

    @property
    def path_style(self) -> bool:
        """Whether the bucket is in the URL's path rather than its host name."""
        return bool(self.endpoint_url) or "." in self.bucket

    def bucket_url(self) -> str:
        """The bucket's own URL (HEAD bucket)."""
        if self.path_style:
            return f"{self.endpoint}/{quote_key(self.bucket)}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/"

    def object_url(self, key: str) -> str:
        """The URL of ``key`` in the bucket, percent-encoded."""
        if self.path_style:
            return f"{self.endpoint}/{quote_key(self.bucket)}/{quote_key(key)}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{quote_key(key)}"

    def url(self, key: str | None) -> str:
        """``object_url(key)``, or the bucket's URL when ``key`` is None."""
        return self.bucket_url() if key is None else self.object_url(key)

    def describe(self) -> str:
        """``bucket 'name' at <endpoint>``, for one-line messages."""
        return f"bucket {self.bucket!r} at {self.endpoint}"


# -- credentials --------------------------------------------------------------
#
# The two CRASHSTORAGE_* keys, else botocore's provider chain (environment,
# shared config, container and instance roles). The chain may do blocking HTTP
# (instance metadata, STS, SSO), so it is resolved and refreshed through
# ``run_in_thread``, never on the reactor thread; on the reactor thread only
# frozen credentials that are not near expiry are read. botocore's refreshable
# credentials report ``refresh_needed()`` some minutes before they expire, so a
# refresh happens before requests would be refused, and a failed advisory
# refresh keeps the old keys while they are still valid.


class NoCredentials(Exception):
    """No credentials in the settings nor in botocore's chain."""


# botocore's errors for a credential provider that did not answer (the
# instance metadata service, STS, a container's endpoint), not a bad setting:
# the start-up checks let the collector start on them.
CREDENTIALS_UNREACHABLE = (botocore.exceptions.ConnectionError,
                           botocore.exceptions.HTTPClientError)


def _needs_refresh(credentials: Credentials) -> bool:
    return isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed()


@attr.s
class CredentialSource:
    """
    Hands out frozen (read-only) credentials for one request at a time.

    ``run_in_thread(function, *args)`` returns a Deferred of the call run in
    a thread pool. ``make_session`` builds a botocore session (each
    re-resolution uses a fresh one so nothing stale is cached).
    """

    run_in_thread: RunInThread = attr.ib(repr=False)
    access_key: str = attr.ib(default="", repr=False)
    secret_access_key: str = attr.ib(default="", repr=False)
    make_session: Callable[[], Any] = attr.ib(default=botocore.session.get_session,
                                              repr=False)
    # The options the two keys come from, for messages (SQS has its own).
    option_names: tuple[str, str] = attr.ib(
        default=("CRASHSTORAGE_ACCESS_KEY", "CRASHSTORAGE_SECRET_ACCESS_KEY"))
    _credentials: Credentials | None = attr.ib(default=None, init=False, repr=False)
    _flight: SingleFlight[Any] = attr.ib(factory=SingleFlight, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if bool(self.access_key) != bool(self.secret_access_key):
            raise ValueError(
                f"{self.option_names[0]} and {self.option_names[1]} go together: "
                "set both, or neither to use the AWS credential chain")
        if self.access_key:
            self._credentials = Credentials(self.access_key, self.secret_access_key,
                                            method="settings")

    @property
    def static(self) -> bool:
        """True when the keys come from the settings."""
        return bool(self.access_key)

    @property
    def method(self) -> str | None:
        """Where the credentials came from (``settings``, ``env``, ``iam-role``...), or None."""
        return getattr(self._credentials, "method", None)

    def _resolve(self) -> Credentials:
        credentials = self.make_session().get_credentials()
        if credentials is None:
            raise NoCredentials(
                f"no AWS credentials: set {self.option_names[0]} and "
                f"{self.option_names[1]}, or configure the AWS credential chain")
        return credentials

    def resolve_blocking(self) -> Any:
        """
        Resolve now, blocking; for start-up, before the reactor runs.
        Returns frozen credentials and keeps the resolved ones for later.
        """
        if self._credentials is None:
            self._credentials = self._resolve()
        return self._credentials.get_frozen_credentials()

    def resolve_at_start_up(self, where: str, refused: type[Exception],
                            unreachable: type[Exception]) -> Any:
        """
        ``resolve_blocking`` for a start-up check of ``where``: ``refused``
        (stops the start) when there are no credentials or botocore calls
        them unusable, ``unreachable`` (the start goes on) when their
        provider did not answer; one line each.
        """
        try:
            return self.resolve_blocking()
        except NoCredentials as error:
            raise refused(f"{where}: {error}") from None
        except CREDENTIALS_UNREACHABLE as error:
            raise unreachable(
                f"{where}: cannot resolve AWS credentials: {one_line(error)}") from None
        except botocore.exceptions.BotoCoreError as error:
            raise refused(f"{where}: cannot resolve AWS credentials: {one_line(error)}") from None

    def _resolve_and_freeze(self, credentials: Credentials | None) -> tuple[Credentials, Any]:
        # In a worker thread: may do blocking HTTP.
        if credentials is None:
            credentials = self._resolve()
        return credentials, credentials.get_frozen_credentials()

    def _store(self, result: tuple[Credentials, Any]) -> Any:
        self._credentials, frozen = result
        return frozen

    def frozen(self) -> Deferred[Any]:
        """A Deferred of ``ReadOnlyCredentials`` good for signing a request now."""
        credentials = self._credentials
        if credentials is not None and not _needs_refresh(credentials):
            return defer.succeed(credentials.get_frozen_credentials())
        return self._flight.run(
            lambda: self.run_in_thread(self._resolve_and_freeze, credentials)
            .addCallback(self._store))

    def invalidate(self) -> None:
        """
        Forget chain credentials (S3 said the token expired): the next
        request resolves the chain afresh, in a thread. Static keys stay.
        """
        if not self.static:
            self._credentials = None


# -- signing ------------------------------------------------------------------
#
# S3 requests are signed by ``SigV4Signer``: SigV4 as botocore's S3SigV4Auth
# signs them (tests/unit/test_s3_signing.py compares the two for the same
# request and time), without botocore's request objects, with the payload
# hash given (a dump's SHA-256 is the one the intake computed) and the signing
# key derived once a day. No Content-MD5: the signed ``X-Amz-Content-SHA256``
# already makes S3 refuse a body that is not the one hashed
# (``XAmzContentSHA256Mismatch``), so a second hash of every body bought
# nothing. Other services (SQS) keep botocore's signer: ``signed_headers``.

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_hex(body: bytes) -> str:
    """The hex SHA-256 of ``body``: the payload hash SigV4 signs."""
    return hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256


def is_sha256_hex(value: object) -> bool:
    """Whether ``value`` is a lower-case hex SHA-256 (a usable payload hash)."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def signed_headers(credentials: Any, region: str, method: str, url: str,
                   body: bytes = b"", service: str = "s3",
                   headers: dict[str, str] | None = None) -> dict[str, str]:
    """
    ``{name: value}`` to send with the request: ``headers``, then botocore's
    SigV4 headers (``X-Amz-Date``, ``X-Amz-Content-SHA256`` for S3,
    ``X-Amz-Security-Token`` for session credentials, ``Authorization``).
    ``service`` is the signing name (``sqs``: antenna_tw/ext/sqs.py; S3's
    own requests use ``SigV4Signer``). ``url`` must already be
    percent-encoded: SigV4 signs the path as sent.
    """
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    auth = S3SigV4Auth if service == "s3" else SigV4Auth
    auth(credentials, service, region).add_auth(request)
    return dict(request.headers.items())


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


@attr.s
class SigV4Signer:
    """
    SigV4 headers of S3 requests (no query string) in one region. The
    signing key, four HMACs of the secret, the day, the region and the
    service, is kept for the last day and secret it was derived for, so
    most requests cost one SHA-256 of the short canonical request and two
    HMACs. Pure CPU on small strings: safe on the reactor thread.
    """

    region: str = attr.ib()
    service: str = attr.ib(default="s3")
    _key: tuple[tuple[str, str], bytes] | None = attr.ib(default=None, init=False, repr=False)

    def signing_key(self, secret_key: str, day: str) -> bytes:
        """The signing key of ``day`` (YYYYMMDD), derived once per day and secret."""
        cached = self._key
        if cached is not None and cached[0] == (secret_key, day):
            return cached[1]
        key = _hmac(f"AWS4{secret_key}".encode(), day)
        for part in (self.region, self.service, "aws4_request"):
            key = _hmac(key, part)
        self._key = ((secret_key, day), key)
        return key

    def headers(self, credentials: Any, method: str, url: str, payload_hash: str,
                now: float) -> dict[str, str]:
        """
        ``X-Amz-Date``, ``X-Amz-Content-SHA256``, ``X-Amz-Security-Token``
        (session credentials only) and ``Authorization`` for ``method`` on
        ``url`` (percent-encoded, signed as sent) at ``now`` (POSIX seconds),
        the body's hex SHA-256 being ``payload_hash``.
        """
        parts = urlsplit(url)
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = amz_date[:8]
        signed = {"host": host_header(parts), "x-amz-content-sha256": payload_hash,
                  "x-amz-date": amz_date}
        token = credentials.token
        if token:
            signed["x-amz-security-token"] = token
        names = sorted(signed)
        canonical = "\n".join((
            method, parts.path or "/", parts.query,
            "".join(f"{name}:{' '.join(signed[name].split())}\n" for name in names),
            ";".join(names), payload_hash))
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join((
            "AWS4-HMAC-SHA256", amz_date, scope,
            hashlib.sha256(canonical.encode("utf-8")).hexdigest()))
        signature = hmac.new(self.signing_key(credentials.secret_key, day),
                             to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        headers = {"X-Amz-Date": amz_date, "X-Amz-Content-SHA256": payload_hash}
        if token:
            headers["X-Amz-Security-Token"] = token
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return headers


def signed_request(location: BucketLocation, credentials: Any, method: str,
                   key: str | None = None, payload_hash: str = EMPTY_SHA256,
                   now: float | None = None,
                   signer: SigV4Signer | None = None) -> tuple[str, dict[str, str]]:
    """
    ``(url, headers)`` of one request: to ``key``, or to the bucket itself
    when ``key`` is None (the HEAD of the start-up check and the heartbeat),
    signed at ``now`` (default: the system clock) by ``signer`` (default: a
    new one for the bucket's region).
    """
    url = location.url(key)
    signer = signer or SigV4Signer(location.region)
    return url, signer.headers(credentials, method, url, payload_hash,
                               time.time() if now is None else now)


# -- answers and errors -------------------------------------------------------

RETRY_STATUSES = frozenset({408, 429})
RETRY_CODES = frozenset({
    "SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError",
    "ServiceUnavailable", "ExpiredToken", "TokenRefreshRequired",
})
REFRESH_CODES = frozenset({"ExpiredToken", "TokenRefreshRequired"})

# The region S3 names when a bucket is asked for in the wrong one.
BUCKET_REGION = "x-amz-bucket-region"

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
    BadAnswer,  # bytes that are not an HTTP answer
)

_CODE = re.compile(rb"<Code>\s*([A-Za-z0-9.]{1,64})\s*</Code>")


def error_code(body: bytes | None) -> str:
    """The ``<Code>`` of an S3 XML error body, or "" (HEAD answers carry no body)."""
    match = _CODE.search(body or b"")
    return match.group(1).decode("ascii") if match else ""


@attr.s(frozen=True)
class Answer:
    """What S3 answered: the status, its reason phrase, the region it named, the body."""

    status: int = attr.ib()
    phrase: str = attr.ib(default="")
    bucket_region: str | None = attr.ib(default=None)
    body: bytes = attr.ib(default=b"", repr=False)

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300


class AwsAnswerError(Exception):
    """An AWS service answered an error status. The message names no secret."""

    def __init__(self, service: str, operation: str, status: int, code: str = "",
                 message: str = "") -> None:
        self.operation = operation
        self.status = status
        self.code = code
        self.message = message
        detail = f" {code}" if code else ""
        detail += f": {one_line(message)[:200]}" if message else ""
        super().__init__(f"{service} {operation} answered {status}{detail}")


class AwsUnreachable(Exception):
    """No usable answer from an AWS service (refused, reset, timed out)."""

    def __init__(self, service: str, operation: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{service} {operation}: no answer ({reason})")


class S3Error(AwsAnswerError):
    """S3 answered with an error status to ``method`` on ``what`` (a key or the bucket)."""

    def __init__(self, method: str, what: str, status: int, code: str = "") -> None:
        super().__init__("S3", f"{method} {what}", status, code)

    @property
    def retryable(self) -> bool:
        """Throttling, a server error or a timeout: worth another try."""
        return self.status >= 500 or self.status in RETRY_STATUSES or self.code in RETRY_CODES

    @property
    def needs_new_credentials(self) -> bool:
        """The session token expired: resolve the credentials again."""
        return self.code in REFRESH_CODES


class S3Unreachable(AwsUnreachable):
    """No usable answer from S3 to ``method`` on ``what``."""

    def __init__(self, method: str, what: str, reason: str) -> None:
        super().__init__("S3", f"{method} {what}", reason)


def cancelled(exc: BaseException | None) -> bool:
    """
    Whether ``exc`` is how a cancelled request fails: ``CancelledError``,
    ``ConnectingCancelledError``, or the Agent's ``ResponseNeverReceived`` (and
    its kin) whose ``reasons`` hold one. The per-request timeout turns its
    own cancellation into a ``TimeoutError`` first (``_timed_out``), so what
    is left is the caller's cancel (shutdown at its deadline): final, never
    retried as a network error.
    """
    if isinstance(exc, (defer.CancelledError, error.ConnectingCancelledError)):
        return True
    reasons = getattr(exc, "reasons", None) or []
    return any(isinstance(reason, Failure) and cancelled(reason.value) for reason in reasons)


def describe_transport_error(exc: BaseException) -> str:
    """A short reason for a transport error, one line, no secrets."""
    if isinstance(exc, (ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed)):
        reasons = getattr(exc, "reasons", None) or []
        if reasons:
            inner = reasons[0].value
            return f"{type(exc).__name__}: {type(inner).__name__}"
    return type(exc).__name__


def one_line(text: object) -> str:
    """``text`` with its runs of white space, newlines included, made one space."""
    return " ".join(str(text).split())


def _timed_out(result: object, seconds: float) -> None:
    # Whatever the cancelled request failed with (CancelledError,
    # ResponseNeverReceived, ConnectingCancelledError), report the timeout.
    raise error.TimeoutError(f"no answer in {seconds:.0f} s")


# -- requests on the reactor --------------------------------------------------


@attr.s
class Timeouts:
    """
    Per-request timeouts: ``base`` seconds, plus one second for every
    ``bytes_per_second`` bytes of body so large uploads on slow links finish;
    ``health`` for the heartbeat's HEAD, ``start_up`` for the start-up check's.
    """

    base: float = attr.ib(default=10.0)
    bytes_per_second: float = attr.ib(default=256 * 1024)
    health: float = attr.ib(default=5.0)
    start_up: float = attr.ib(default=10.0)

    def for_body(self, size: int) -> float:
        """The timeout of a request with ``size`` bytes of body."""
        return self.base + size / self.bytes_per_second


def _default_backoff() -> Backoff:
    # Up to 0.5 s, 1 s, 2 s before tries 2, 3 and 4 (docs/s3.rst).
    return Backoff(base=0.5, cap=5.0)


@attr.s
class S3Connection:
    """
    Signed requests to the bucket at ``location``.

    ``http`` is a ``wire.ConnectionPool`` (any ``wire.IHTTP``);
    ``run_in_thread(function, *args)`` returns a
    Deferred and is used to hash large bodies off the reactor thread when
    their SHA-256 is not given (``hash_in_thread_bytes``). ``signer`` signs
    every request and keeps the day's signing key.
    A request is tried ``attempts`` times in all, ``backoff`` apart;
    cancelling it (shutdown) ends it at once with ``CancelledError``.
    """

    location: BucketLocation = attr.ib()
    credentials: CredentialSource = attr.ib()
    http: IHTTP = attr.ib(repr=False)
    reactor: IReactorTime = attr.ib(repr=False)
    run_in_thread: RunInThread = attr.ib(repr=False)
    attempts: int = attr.ib(default=4)
    backoff: Backoff = attr.ib(factory=_default_backoff)
    timeouts: Timeouts = attr.ib(factory=Timeouts)
    hash_in_thread_bytes: int = attr.ib(default=256 * 1024)
    signer: SigV4Signer = attr.ib(
        default=attr.Factory(lambda self: SigV4Signer(self.location.region), takes_self=True),
        repr=False)
    log = Logger(namespace="antenna.s3")

    async def put_object(self, key: str, body: bytes, sha256: str | None = None) -> None:
        """
        Store ``body`` at ``key``; raises S3Error or S3Unreachable after the
        retries. ``sha256``: the body's hex SHA-256 when already known (S3
        refuses the body if it is not the one hashed).
        """
        if sha256 is None:
            if len(body) >= self.hash_in_thread_bytes:
                sha256 = await self.run_in_thread(sha256_hex, body)
            else:
                sha256 = sha256_hex(body)
        await self.request("PUT", key, body, timeout=self.timeouts.for_body(len(body)),
                           payload_hash=sha256)

    async def head_bucket(self) -> Answer:
        """One HEAD of the bucket, no retries; the answer (any status). Raises S3Unreachable."""
        return await self.request("HEAD", None, timeout=self.timeouts.health, attempts=1,
                                  raise_status=False)

    async def request(self, method: str, key: str | None, body: bytes = b"", *,
                      timeout: float, attempts: int | None = None,
                      raise_status: bool = True, payload_hash: str | None = None) -> Answer:
        """
        Send a signed request to ``key`` (the bucket when None), retrying
        what is worth retrying; the answer. ``payload_hash`` is the body's
        hex SHA-256 (hashed here when not given). Logs and errors name the
        key, or "bucket".
        """
        if payload_hash is None:
            payload_hash = sha256_hex(body)
        what = "bucket" if key is None else key
        attempts = attempts or self.attempts
        for attempt in range(1, attempts + 1):
            try:
                answer = await self._once(method, key, body, payload_hash, timeout)
                if answer.ok or not raise_status:
                    return answer
                raise S3Error(method, what, answer.status, error_code(answer.body))
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
            delay = self.backoff.delay(attempt)
            self.log.warn(
                "S3 {method} {what} failed ({reason}); try {next} of {attempts} in {delay:.2f} s",
                method=method, what=what, reason=reason, next=attempt + 1,
                attempts=attempts, delay=delay)
            await task.deferLater(self.reactor, delay, lambda: None)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, method: str, key: str | None, body: bytes, payload_hash: str,
                    timeout: float) -> Answer:
        credentials = await self.credentials.frozen()
        url, headers = signed_request(self.location, credentials, method, key, payload_hash,
                                      self.reactor.seconds(), self.signer)
        exchange = self.http.request(method, url, body, headers).addCallback(_answer)
        exchange.addTimeout(timeout, self.reactor, onTimeoutCancel=_timed_out)
        try:
            return await exchange
        except Exception as failure:
            if cancelled(failure):
                raise defer.CancelledError(f"S3 {method} cancelled") from None
            raise

    def close(self) -> Deferred[None]:
        """Close idle pooled connections (tests, shutdown). A Deferred."""
        if self.http is None:
            return defer.succeed(None)
        return self.http.close()


def _answer(response: Response) -> Answer:
    region = response.headers.get(b"x-amz-bucket-region")
    return Answer(response.status, response.phrase,
                  region.decode("latin-1") if region is not None else None, response.body)


# -- the blocking HEAD of the start-up check ----------------------------------


def head_bucket_blocking(location: BucketLocation, credentials: Any,
                         timeout: float) -> Answer:
    """
    One signed HEAD of the bucket with ``http.client``, blocking: for the
    start-up check, before the reactor runs (the standard library's ``ssl``,
    no pyOpenSSL). Raises S3Unreachable when there is no answer.
    """
    url, headers = signed_request(location, credentials, "HEAD")
    parts = urlsplit(url)
    connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                        else http.client.HTTPConnection)
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("HEAD", parts.path or "/", headers=headers)
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as failure:
        reason = one_line(getattr(failure, "strerror", None) or failure
                          or type(failure).__name__)
        raise S3Unreachable("HEAD", "bucket", reason) from None
    finally:
        connection.close()
    return Answer(response.status, response.reason, response.headers.get(BUCKET_REGION))


# -- the connection pool -------------------------------------------------------


@implementer(IStreamClientEndpoint)
@attr.s(frozen=True, repr=False)
class QuietEndpoint:
    """
    An endpoint whose connections' factories are quiet: ``Factory.noisy``
    off, so no "Starting factory" and "Stopping factory" lines (two info
    lines per request against servers that close every connection, as moto).
    """

    endpoint: IStreamClientEndpoint = attr.ib()

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:  # noqa: N803
        """Connect as the wrapped endpoint does, the factory made quiet first."""
        if isinstance(protocolFactory, Factory):
            protocolFactory.noisy = False
        return self.endpoint.connect(protocolFactory)

    def __repr__(self) -> str:
        # The pool names its factories after the endpoint.
        return repr(self.endpoint)


class QuietConnectionPool(HTTPConnectionPool):
    """A persistent pool whose new connections are opened through ``QuietEndpoint``."""

    def getConnection(self, key: Any, endpoint: IStreamClientEndpoint) -> Deferred[Any]:
        """As ``HTTPConnectionPool.getConnection``, new connections quiet."""
        return super().getConnection(key, QuietEndpoint(endpoint))


# PUTs one crash mover has under way at once: a crash's dump_names and its
# dump go together (antenna_tw/ext/s3/storage.py); a crash with more dumps
# opens a connection for each, closed after use.
PUTS_AT_ONCE = 2

# Bytes a connection hands the kernel per reactor turn: a whole 3 MB dump
# (Twisted's default, 128 KiB, sends a 400 KB body in four turns).
SEND_LIMIT = 4 * 1024 * 1024


def _no_threads(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return defer.fail(RuntimeError("S3 storage built without a thread pool"))


def in_threads(reactor: Any, threadpool: ThreadPool | None) -> RunInThread:
    """
    ``run_in_thread`` on ``threadpool``. Without one (storage built only for
    its start-up check, before the reactor: ``tap.py``) nothing can run.
    """
    if threadpool is None:
        return _no_threads
    return functools.partial(deferToThreadPool, reactor, threadpool)


def build_connection(settings: StorageSettings, reactor: Any, threadpool: ThreadPool | None,
                     concurrency: int = 2) -> S3Connection:
    """
    An S3Connection from StorageSettings: a pool that keeps
    ``PUTS_AT_ONCE`` connections per crash mover alive (plus one for the
    heartbeat), SigV4 signing,
    credentials from the settings or botocore's chain. ``reactor`` is the
    running one (time, TCP, threads: no one interface says all three).
    """
    run_in_thread = in_threads(reactor, threadpool)
    aws = settings.aws
    location = BucketLocation(settings.bucket_name, aws.region, aws.endpoint_url)
    credentials = CredentialSource(run_in_thread, aws.access_key, aws.secret_access_key,
                                   option_names=aws.key_names)
    pool = ConnectionPool(reactor, max_idle=PUTS_AT_ONCE * concurrency + 1,
                          send_limit=SEND_LIMIT)
    return S3Connection(location, credentials, pool, reactor, run_in_thread)
