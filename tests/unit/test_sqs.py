"""The SQS publisher's requests and its reading of answers, without a server."""

import json

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived
from twisted.web.http_headers import Headers

from antenna_tw.ext import sqs
from antenna_tw.ext.s3.client import CredentialSource, in_threads
from antenna_tw.ext.sqs import (
    QueueLocation,
    SQSCrashPublisher,
    SQSError,
    SQSUnreachable,
    parse_answer,
    signed_call,
)
from antenna_tw.publisher import PublisherUnavailable, PublisherUnreachable, PublishFailed

LOCATION = QueueLocation("crash-ids", "eu-west-1")


def credentials():
    return CredentialSource(in_threads(None, None), "AKIDEXAMPLE", "secret")


def test_calls_are_signed_for_sqs_in_the_region():
    frozen = credentials().resolve_blocking()
    url, headers, body = signed_call(LOCATION, frozen, "GetQueueUrl", {"QueueName": "q"})
    assert url == "https://sqs.eu-west-1.amazonaws.com/"
    assert headers["X-Amz-Target"] == "AmazonSQS.GetQueueUrl"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    assert "/eu-west-1/sqs/aws4_request" in headers["Authorization"]
    assert "Content-MD5" not in headers
    assert json.loads(body) == {"QueueName": "q"}


@pytest.mark.parametrize("headers,body,code,message", [
    ({}, b'{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "gone"}',
     "QueueDoesNotExist", "gone"),
    ({"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"}, b"",
     "AWS.SimpleQueueService.NonExistentQueue", ""),
    ({}, b"<ErrorResponse><Error><Code>InvalidClientTokenId</Code><Message>no such key"
         b"</Message></Error></ErrorResponse>", "InvalidClientTokenId", "no such key"),
    ({}, b"oops", "", ""),
])
def test_error_answers_are_read_for_their_code(headers, body, code, message):
    with pytest.raises(SQSError) as caught:
        parse_answer("GetQueueUrl", 400, headers, body)
    assert (caught.value.status, caught.value.code, caught.value.message) == (400, code, message)


def test_what_an_error_code_means():
    assert SQSError("GetQueueUrl", 400, "AWS.SimpleQueueService.NonExistentQueue").no_queue
    assert SQSError("GetQueueUrl", 403, "").bad_credentials
    assert SQSError("GetQueueUrl", 400, "InvalidClientTokenId").bad_credentials
    assert SQSError("SendMessageBatch", 400, "ExpiredToken").needs_new_credentials
    assert not SQSError("SendMessageBatch", 500, "InternalError").bad_credentials


class Response:
    def __init__(self, code, document):
        self.code = code
        self.headers = Headers({"content-type": ["application/x-amz-json-1.0"]})
        self._body = json.dumps(document).encode()

    def content(self):
        return defer.succeed(self._body)


class FakeHTTP:
    """Answers each request with the next document and keeps what was sent."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent = []

    def request(self, method, url, data=None, headers=None):
        self.sent.append((method, url, json.loads(data), headers))
        return defer.succeed(Response(*self.answers.pop(0)))


def publisher(http):
    return SQSCrashPublisher(LOCATION, credentials(), http, task.Clock(),
                             queue_url="https://sqs.eu-west-1.amazonaws.com/1/crash-ids")


def test_one_batch_names_only_the_ids_sqs_did_not_take():
    http = FakeHTTP((200, {"Successful": [{"Id": "0"}, {"Id": "2"}],
                           "Failed": [{"Id": "1", "Code": "InternalError",
                                       "Message": "try again", "SenderFault": False}]}))
    d = publisher(http).publish(["a", "b", "c"])
    failure = d.result
    d.addErrback(lambda _: None)
    assert isinstance(failure.value, PublishFailed)
    assert failure.value.crash_ids == ("b",)
    assert failure.value.reason == "SQS SendMessageBatch: InternalError: try again"
    [(method, url, payload, headers)] = http.sent
    assert (method, url) == ("POST", "https://sqs.eu-west-1.amazonaws.com/")
    assert payload == {"QueueUrl": "https://sqs.eu-west-1.amazonaws.com/1/crash-ids",
                       "Entries": [{"Id": "0", "MessageBody": "a"},
                                   {"Id": "1", "MessageBody": "b"},
                                   {"Id": "2", "MessageBody": "c"}]}
    assert headers["X-Amz-Target"] == ["AmazonSQS.SendMessageBatch"]


def test_an_id_sqs_did_not_mention_is_not_published():
    d = publisher(FakeHTTP((200, {"Successful": [{"Id": "1"}]}))).publish(["a", "b"])
    failure = d.result
    d.addErrback(lambda _: None)
    assert failure.value.crash_ids == ("a",)


def test_a_batch_all_taken_fires():
    d = publisher(FakeHTTP((200, {"Successful": [{"Id": "0"}, {"Id": "1"}]}))).publish(
        ["a", "b"])
    assert d.result is None


def test_an_error_status_fails_every_id():
    d = publisher(FakeHTTP((500, {"__type": "InternalError"}))).publish(["a", "b"])
    failure = d.result
    d.addErrback(lambda _: None)
    assert failure.value.crash_ids == ("a", "b")
    assert failure.value.reason == "SQS SendMessageBatch answered 500 InternalError"


def test_the_endpoint_must_be_a_url():
    with pytest.raises(ValueError) as caught:
        QueueLocation("q", "us-west-2", "localhost:4566")
    assert str(caught.value) == (
        "CRASHPUBLISH_ENDPOINT_URL='localhost:4566' is not an http(s) URL")


class HangingHTTP:
    """Never answers; a cancelled request fails as treq's does (ResponseNeverReceived)."""

    def __init__(self):
        self.sent = 0

    def request(self, method, url, data=None, headers=None):
        self.sent += 1
        return defer.Deferred(lambda d: d.errback(
            ResponseNeverReceived([Failure(defer.CancelledError())])))


def test_a_cancelled_publish_is_cancelled_not_unpublished():
    # The publish queue stops its loops at the shutdown deadline: the ids go
    # back to its queue as they were, with no "not published" warning.
    http = HangingHTTP()
    d = publisher(http).publish(["a", "b"])
    d.cancel()
    failure = d.result
    d.addErrback(lambda _: None)
    assert isinstance(failure.value, defer.CancelledError)
    assert http.sent == 1


def test_an_expired_token_makes_the_next_call_resolve_credentials_again():
    class Credentials:
        invalidated = 0

        def __init__(self):
            self.real = credentials()

        def frozen(self):
            return self.real.frozen()

        def invalidate(self):
            self.invalidated += 1

    source = Credentials()
    http = FakeHTTP((400, {"__type": "com.amazonaws.sqs#ExpiredToken", "message": "expired"}))
    sqs = SQSCrashPublisher(LOCATION, source, http, task.Clock(),
                            queue_url="https://sqs.eu-west-1.amazonaws.com/1/crash-ids")
    d = sqs.publish(["a"])
    failure = d.result
    d.addErrback(lambda _: None)
    assert isinstance(failure.value, PublishFailed)
    assert source.invalidated == 1


@pytest.mark.parametrize("error, unreachable", [
    (SQSError("GetQueueUrl", 500, "InternalError"), True),
    (SQSError("GetQueueUrl", 400, "RequestThrottled"), True),
    (SQSUnreachable("GetQueueUrl", "ConnectionRefusedError"), True),
    (SQSError("GetQueueUrl", 400, "QueueDoesNotExist"), False),
    (SQSError("GetQueueUrl", 403, "InvalidClientTokenId"), False),
    (SQSError("GetQueueUrl", 400, "InvalidParameterValue"), False),
])
def test_the_start_up_check_refuses_only_a_misconfiguration(monkeypatch, error, unreachable):
    def call(*args):
        raise error

    monkeypatch.setattr(sqs, "call_blocking", call)
    checked = SQSCrashPublisher(LOCATION, credentials(), FakeHTTP(), task.Clock())
    with pytest.raises(PublisherUnavailable) as caught:
        checked.verify()
    assert isinstance(caught.value, PublisherUnreachable) is unreachable
    assert "\n" not in str(caught.value)
