"""
``SQSCrashPublisher``: each stored crash's id, as the body of one SQS
message, on the queue :envvar:`CRASHPUBLISH_QUEUE_NAME` (docs/publishing.rst).

It speaks SQS's JSON protocol (``X-Amz-Target: AmazonSQS.<Action>``, what
botocore speaks today) on the S3 storage's stack: requests signed with
botocore's SigV4, credentials from ``antenna_tw.ext.s3.client``'s
``CredentialSource`` (the keys in the settings, else botocore's chain), treq
over a quiet persistent connection pool. ``verify`` resolves the queue's URL
with ``GetQueueUrl`` and sends Antenna's ``test`` message before the reactor
runs, blocking, with ``http.client`` (the ``--workers`` parent loads no
pyOpenSSL: see ``antenna_tw/footprint.py``); ``publish`` sends up to ten ids
with one ``SendMessageBatch`` and names the ids SQS did not accept.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attr
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent
from zope.interface import implementer

from antenna_tw.ext.s3.client import (
    TRANSPORT_ERRORS,
    AwsAnswerError,
    AwsUnreachable,
    CredentialSource,
    QuietConnectionPool,
    ServiceLocation,
    SingleFlight,
    Timeouts,
    cancelled,
    describe_transport_error,
    in_threads,
    one_line,
    signed_headers,
)
from antenna_tw.logs import Logger
from antenna_tw.publisher import (
    ICrashPublisher,
    PublisherUnavailable,
    PublisherUnreachable,
    PublishFailed,
)

if TYPE_CHECKING:
    from twisted.python.threadpool import ThreadPool

    from antenna_tw.config import PublishSettings, StorageSettings

JSON_TYPE = "application/x-amz-json-1.0"
# What Antenna sends at start-up; Socorro's processor ignores it.
VERIFY_MESSAGE = "test"
# SendMessageBatch takes at most ten entries.
BATCH_SIZE = 10

# Error codes (the part of ``__type`` after ``#``, or the query protocol's
# code) that say the configuration is wrong: start-up stops on them.
NO_QUEUE_CODES = frozenset({"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"})
CREDENTIAL_CODES = frozenset({
    "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
    "AccessDenied", "AccessDeniedException", "MissingAuthenticationToken",
    "InvalidSecurity", "IncompleteSignature",
})
THROTTLING_CODES = frozenset({
    "RequestThrottled", "ThrottlingException", "Throttling", "KmsThrottled",
    "ServiceUnavailable", "InternalError", "InternalFailure",
})
REFRESH_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})


@attr.s(frozen=True)
class QueueLocation(ServiceLocation):
    """Which queue, and where SQS answers: ``endpoint_url`` (moto, LocalStack) or AWS's."""

    service = "sqs"
    name_option = "CRASHPUBLISH_QUEUE_NAME"
    endpoint_option = "CRASHPUBLISH_ENDPOINT_URL"
    used_for = "SQS publishing"

    @property
    def queue_name(self) -> str:
        """The queue's name."""
        return self.name

    def describe(self) -> str:
        """``SQS queue 'name' at <endpoint>``, for one-line messages."""
        return f"SQS queue {self.queue_name!r} at {self.endpoint}"


def signed_call(location: QueueLocation, credentials: Any, action: str,
                payload: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    """``(url, headers, body)`` of one signed SQS JSON-protocol call."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    url = location.endpoint + "/"
    headers = {"Content-Type": JSON_TYPE, "X-Amz-Target": f"AmazonSQS.{action}"}
    return url, signed_headers(credentials, location.region, "POST", url, body,
                               service="sqs", headers=headers), body


class SQSError(AwsAnswerError):
    """SQS answered an error status to ``action``."""

    def __init__(self, action: str, status: int, code: str, message: str = "") -> None:
        super().__init__("SQS", action, status, code, message)

    @property
    def no_queue(self) -> bool:
        """The queue does not exist."""
        return self.code in NO_QUEUE_CODES

    @property
    def bad_credentials(self) -> bool:
        """The credentials were refused (unknown key, bad signature, no permission)."""
        return self.code in CREDENTIAL_CODES or self.status == 403

    @property
    def needs_new_credentials(self) -> bool:
        """The session token expired: resolve the credentials again."""
        return self.code in REFRESH_CODES

    @property
    def unwell(self) -> bool:
        """SQS is unwell (a server error, throttling), not misconfigured: start all the same."""
        return self.status >= 500 or self.status in (408, 429) or self.code in THROTTLING_CODES


class SQSUnreachable(AwsUnreachable):
    """No usable answer from SQS to ``action``."""

    def __init__(self, action: str, reason: str) -> None:
        super().__init__("SQS", action, reason)


_XML_CODE = re.compile(rb"<Code>\s*([A-Za-z0-9.]{1,64})\s*</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]{0,300})</Message>")


def parse_answer(action: str, status: int, headers: dict[str, str], body: bytes) -> Any:
    """The JSON of a 2xx answer; SQSError for any other status."""
    try:
        document = json.loads(body) if body else {}
    except ValueError:
        document = None
    if 200 <= status < 300 and isinstance(document, dict):
        return document
    if 200 <= status < 300:
        raise SQSError(action, status, "", "answer is not JSON")
    code, message = "", ""
    if isinstance(document, dict):
        code = str(document.get("__type", "")).rpartition("#")[2]
        message = str(document.get("message") or document.get("Message") or "")
    elif body.lstrip().startswith(b"<"):
        # An XML error (the query protocol's, or an authorization layer's).
        found = _XML_CODE.search(body)
        code = found.group(1).decode("ascii") if found else ""
        found = _XML_MESSAGE.search(body)
        message = found.group(1).decode("utf-8", "replace") if found else ""
    if not code:
        # The query protocol's name of the error, when the body has none.
        code = headers.get("x-amzn-query-error", "").partition(";")[0]
    raise SQSError(action, status, code, message)


def _timed_out(result: object, seconds: float) -> None:
    raise defer.TimeoutError(f"no answer in {seconds:.0f} s")


def call_blocking(location: QueueLocation, credentials: Any, action: str,
                  payload: dict[str, Any], timeout: float) -> Any:
    """
    One signed call with ``http.client``, blocking: for the start-up check,
    before the reactor runs (the standard library's ``ssl``, no pyOpenSSL).
    The answer's JSON; SQSError or SQSUnreachable.
    """
    url, headers, body = signed_call(location, credentials, action, payload)
    parts = urlsplit(url)
    connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                        else http.client.HTTPConnection)
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("POST", parts.path or "/", body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
    except (OSError, http.client.HTTPException) as failure:
        reason = one_line(getattr(failure, "strerror", None) or failure
                          or type(failure).__name__)
        raise SQSUnreachable(action, reason) from None
    finally:
        connection.close()
    answer_headers = {name.lower(): value for name, value in response.getheaders()}
    return parse_answer(action, response.status, answer_headers, content)


def queue_problem(location: QueueLocation, error: Exception) -> str:
    """One line for the operator: which queue, where, and what went wrong."""
    where = location.describe()
    if isinstance(error, SQSError) and error.no_queue:
        return f"{where}: no such queue ({error})"
    if isinstance(error, SQSError) and error.bad_credentials:
        return (f"{where}: credentials refused ({error}); check CRASHPUBLISH_ACCESS_KEY, "
                "the AWS credential chain and the sqs:GetQueueUrl and sqs:SendMessage "
                "permissions")
    return f"{where}: {error}"


@implementer(ICrashPublisher)
@attr.s
class SQSCrashPublisher:
    """
    Publishes crash ids to one SQS queue, up to ten per ``SendMessageBatch``.

    The queue's URL is resolved once, by ``verify`` at start-up (or by the
    first ``publish`` when it was not run). A ``publish`` fires when SQS
    listed every id as ``Successful``; otherwise it fails with PublishFailed
    naming the others (all of them when SQS did not answer), which the
    caller sends again. ``check_health`` asks ``GetQueueUrl``; the heartbeat
    reuses an answer for ``health_ttl`` seconds (``antenna_tw.health``).
    """

    location: QueueLocation = attr.ib()
    credentials: CredentialSource = attr.ib()
    http: HTTPClient = attr.ib(repr=False)
    reactor: IReactorTime = attr.ib(repr=False)
    verify_message: bool = attr.ib(default=True)
    timeouts: Timeouts = attr.ib(factory=Timeouts)
    pool: QuietConnectionPool | None = attr.ib(default=None, repr=False)
    health_ttl: float = attr.ib(default=5.0)
    queue_url: str | None = attr.ib(default=None)
    _url_flight: SingleFlight[str] = attr.ib(factory=SingleFlight, init=False, repr=False)
    name = "sqs"
    batch_size = BATCH_SIZE
    log = Logger(namespace="antenna.sqs")

    @classmethod
    def from_settings(cls, publish_settings: PublishSettings,
                      storage_settings: StorageSettings, reactor: Any,
                      threadpool: ThreadPool | None) -> SQSCrashPublisher:
        """A publisher for PublishSettings; ValueError (one line) when they cannot work."""
        aws = publish_settings.aws
        location = QueueLocation(publish_settings.queue_name, aws.region, aws.endpoint_url)
        credentials = CredentialSource(in_threads(reactor, threadpool), aws.access_key,
                                       aws.secret_access_key, option_names=aws.key_names)
        pool = QuietConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        client = HTTPClient(Agent(reactor, pool=pool))
        return cls(location, credentials, client, reactor,
                   verify_message=publish_settings.verify_message, pool=pool)

    # -- start-up, blocking ------------------------------------------------

    def verify(self) -> None:
        """
        Resolve the queue's URL with ``GetQueueUrl``, then send Antenna's
        ``test`` message unless ``verify_message`` is off; blocking, before
        the reactor runs. PublisherUnavailable with one line when the
        settings are wrong (no such queue, credentials refused);
        PublisherUnreachable when SQS did not answer or answered a server
        error (the start goes on; the first publish resolves the URL).
        """
        where = self.location.describe()
        frozen = self.credentials.resolve_at_start_up(
            where, PublisherUnavailable, PublisherUnreachable)
        timeout = self.timeouts.start_up
        try:
            answer = call_blocking(self.location, frozen, "GetQueueUrl",
                                   {"QueueName": self.location.queue_name}, timeout)
            queue_url = str(answer["QueueUrl"])
            if self.verify_message:
                call_blocking(self.location, frozen, "SendMessage",
                              {"QueueUrl": queue_url, "MessageBody": VERIFY_MESSAGE}, timeout)
        except SQSUnreachable as error:
            raise PublisherUnreachable(queue_problem(self.location, error)) from None
        except SQSError as error:
            if error.unwell and not (error.no_queue or error.bad_credentials):
                raise PublisherUnreachable(queue_problem(self.location, error)) from None
            raise PublisherUnavailable(queue_problem(self.location, error)) from None
        except (KeyError, TypeError):
            raise PublisherUnavailable(
                f"{where}: GetQueueUrl answered without a QueueUrl") from None
        self.queue_url = queue_url

    # -- on the reactor ----------------------------------------------------

    async def _call(self, action: str, payload: dict[str, Any], timeout: float) -> Any:
        credentials = await self.credentials.frozen()
        url, headers, body = signed_call(self.location, credentials, action, payload)
        exchange = defer.ensureDeferred(self._exchange(action, url, headers, body))
        exchange.addTimeout(timeout, self.reactor, onTimeoutCancel=_timed_out)
        try:
            return await exchange
        except SQSError as failure:
            if failure.needs_new_credentials:
                self.credentials.invalidate()
            raise
        except Exception as failure:
            # Cancelled (the publish loops stopping at the shutdown deadline):
            # final, not an unreachable queue to report and retry.
            if cancelled(failure):
                raise defer.CancelledError(f"SQS {action} cancelled") from None
            if isinstance(failure, TRANSPORT_ERRORS):
                raise SQSUnreachable(action, describe_transport_error(failure)) from None
            raise

    async def _exchange(self, action: str, url: str, headers: dict[str, str],
                        body: bytes) -> Any:
        sent: dict[bytes | str, list[bytes | str]] = {
            name: [value] for name, value in headers.items()}
        response = await self.http.request("POST", url, data=body, headers=sent)
        content = await response.content()  # always drained: the connection goes back
        answer_headers = {
            name.decode("latin-1").lower(): values[0].decode("latin-1")
            for name, values in response.headers.getAllRawHeaders() if values}
        return parse_answer(action, response.code, answer_headers, content)

    async def _resolve_url(self) -> str:
        answer = await self._call("GetQueueUrl", {"QueueName": self.location.queue_name},
                                  self.timeouts.base)
        try:
            self.queue_url = str(answer["QueueUrl"])
        except (KeyError, TypeError):
            raise SQSError("GetQueueUrl", 200, "", "no QueueUrl in the answer") from None
        return self.queue_url

    def _url(self) -> Deferred[str]:
        if self.queue_url is not None:
            return defer.succeed(self.queue_url)
        return self._url_flight.run(lambda: defer.ensureDeferred(self._resolve_url()))

    async def _publish(self, crash_ids: Sequence[str]) -> None:
        ids = list(crash_ids)
        if not ids:
            return
        if len(ids) > self.batch_size:
            raise ValueError(f"at most {self.batch_size} ids per publish, not {len(ids)}")
        try:
            queue_url = await self._url()
            answer = await self._call(
                "SendMessageBatch",
                {"QueueUrl": queue_url,
                 "Entries": [{"Id": str(index), "MessageBody": crash_id}
                             for index, crash_id in enumerate(ids)]},
                self.timeouts.base)
        except (SQSError, SQSUnreachable) as error:
            raise PublishFailed(ids, str(error)) from None
        confirmed = {str(entry.get("Id")) for entry in answer.get("Successful") or ()
                     if isinstance(entry, dict)}
        failed = [crash_id for index, crash_id in enumerate(ids)
                  if str(index) not in confirmed]
        if failed:
            reasons = [f"{entry.get('Code', '?')}: {one_line(entry.get('Message', ''))[:100]}"
                       for entry in answer.get("Failed") or () if isinstance(entry, dict)]
            raise PublishFailed(failed, "SQS SendMessageBatch: "
                                + ("; ".join(sorted(set(reasons))) or "not in Successful"))

    def publish(self, crash_ids: Sequence[str]) -> Deferred[None]:
        """
        Send these ids (at most ten), one message each, in one
        ``SendMessageBatch``; fails with PublishFailed naming the ids SQS
        did not list as ``Successful``.
        """
        return defer.ensureDeferred(self._publish(crash_ids))

    async def _health_check(self) -> list[str]:
        try:
            await self._call("GetQueueUrl", {"QueueName": self.location.queue_name},
                             self.timeouts.health)
            errors = []
        except (SQSError, SQSUnreachable) as error:
            errors = [queue_problem(self.location, error)]
        except Exception as error:  # credentials: botocore may raise anything
            errors = [f"{self.location.describe()}: {one_line(error) or type(error).__name__}"]
        return errors

    def check_health(self) -> Deferred[list[str]]:
        """A Deferred of the queue's problems (none: healthy): one ``GetQueueUrl``."""
        return defer.ensureDeferred(self._health_check())

    def close(self) -> Deferred[None]:
        """Close pooled connections; a Deferred."""
        if self.pool is None:
            return defer.succeed(None)
        return self.pool.closeCachedConnections()
