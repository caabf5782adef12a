"""
The HEAD of the bucket: one signed request and one judge of its answer for
both the start-up check (blocking, ``http.client``) and the heartbeat (on the reactor).
The blocking HEAD runs against a loopback ``http.server`` here;
tests/integration and tests/system run both against moto.
"""

import http.server
import threading
import time

import botocore.exceptions
import pytest
from twisted.internet import defer, task

from antenna_tw.ext.s3 import S3CrashStorage, storage
from antenna_tw.ext.s3.client import (
    Answer, BucketLocation, CredentialSource, S3Connection, S3Unreachable, head_bucket_blocking,
)
from antenna_tw.storage import StorageUnavailable, StorageUnreachable
from tests.s3server import free_port
from tests.unit.test_s3_connection import FakeHTTP, FakeResponse

LOCATION = BucketLocation("crashes", "us-west-2", "http://127.0.0.1:9")
SECRET = "never-show-this-secret"


def static_keys():
    return CredentialSource(None, "AKIAEXAMPLE", SECRET)


def s3_storage(credentials=None, location=LOCATION, http=None, clock=None):
    connection = S3Connection(location, credentials or static_keys(), http, clock, None)
    return S3CrashStorage(connection, clock or task.Clock())


def answering(answer):
    def head(location, credentials, timeout):
        assert location == LOCATION and timeout == 10.0
        assert credentials.secret_key == SECRET
        if isinstance(answer, Exception):
            raise answer
        return answer
    return head


def reason_for(monkeypatch, head, credentials=None, unreachable=False):
    """
    The one line of the failed start-up check; ``unreachable``: whether it
    must let the start go on (StorageUnreachable) rather than refuse it.
    """
    monkeypatch.setattr(storage, "head_bucket_blocking", head)
    with pytest.raises(StorageUnavailable) as caught:
        s3_storage(credentials).verify()
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message
    assert isinstance(caught.value, StorageUnreachable) is unreachable, caught.value
    return message


def test_200_passes(monkeypatch):
    monkeypatch.setattr(storage, "head_bucket_blocking", answering(Answer(200, "OK")))
    s3_storage().verify()


def test_403_names_credentials_and_permission(monkeypatch):
    assert reason_for(monkeypatch, answering(Answer(403, "Forbidden"))) == (
        "S3 bucket 'crashes' at http://127.0.0.1:9: HEAD bucket answered 403 Forbidden "
        "(wrong credentials, or no s3:ListBucket permission on the bucket)")


def test_another_region_is_named(monkeypatch):
    head = answering(Answer(301, "Moved Permanently", "eu-west-1"))
    assert reason_for(monkeypatch, head).endswith(
        "HEAD bucket answered 301 Moved Permanently "
        "(the bucket is in eu-west-1, CRASHSTORAGE_REGION is us-west-2)")


def test_no_answer(monkeypatch):
    head = answering(S3Unreachable("HEAD", "bucket", "timed out"))
    assert reason_for(monkeypatch, head, unreachable=True) == (
        "S3 bucket 'crashes' at http://127.0.0.1:9: no answer to HEAD bucket (timed out)")


def test_no_credentials(monkeypatch):
    class NoSession:
        def get_credentials(self):
            return None

    credentials = CredentialSource(None, make_session=NoSession)
    message = reason_for(monkeypatch, answering(Answer(200, "OK")), credentials)
    assert "no AWS credentials" in message


@pytest.mark.parametrize("status, phrase", [
    (404, "Not Found"), (403, "Forbidden"), (400, "Bad Request"), (301, "Moved Permanently"),
    (405, "Method Not Allowed"),
])
def test_what_says_the_settings_are_wrong_refuses_the_start(monkeypatch, status, phrase):
    reason_for(monkeypatch, answering(Answer(status, phrase)), unreachable=False)


@pytest.mark.parametrize("status, phrase", [
    (500, "Internal Server Error"), (502, "Bad Gateway"), (503, "Slow Down"),
    (504, "Gateway Timeout"), (429, "Too Many Requests"), (408, "Request Timeout"),
    (307, "Temporary Redirect"),
])
def test_an_unwell_s3_does_not_refuse_the_start(monkeypatch, status, phrase):
    message = reason_for(monkeypatch, answering(Answer(status, phrase)), unreachable=True)
    assert message.startswith(f"S3 bucket 'crashes' at http://127.0.0.1:9: HEAD bucket "
                              f"answered {status} {phrase}")


def test_a_credential_provider_that_does_not_answer_does_not_refuse_the_start(monkeypatch):
    class Unreachable:
        def get_credentials(self):
            raise botocore.exceptions.ConnectTimeoutError(endpoint_url="http://169.254.169.254")

    credentials = CredentialSource(None, make_session=Unreachable)
    message = reason_for(monkeypatch, answering(Answer(200, "OK")), credentials,
                         unreachable=True)
    assert "cannot resolve AWS credentials" in message


def test_the_heartbeat_line_has_the_status_alone():
    answer = Answer(404, "Not Found")
    assert storage.bucket_problem(LOCATION, answer) == (
        "S3 bucket 'crashes' at http://127.0.0.1:9: HEAD bucket answered 404")
    assert storage.bucket_problem(LOCATION, answer, detailed=True) == (
        "S3 bucket 'crashes' at http://127.0.0.1:9: HEAD bucket answered 404 Not Found "
        "(no such bucket)")
    assert storage.bucket_problem(LOCATION, Answer(200, "OK"), detailed=True) is None


class Bucket(http.server.BaseHTTPRequestHandler):
    """Answers every HEAD with the server's ``status`` and records what it got."""

    def do_HEAD(self):  # noqa: N802 - http.server's name
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        self.send_response(self.server.status)
        self.send_header("x-amz-bucket-region", "eu-west-1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def bucket_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), Bucket)
    server.seen, server.status = [], 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def local(server):
    return BucketLocation("crashes", "us-west-2", f"http://127.0.0.1:{server.server_port}")


def test_the_blocking_head_reads_status_phrase_and_region(bucket_server):
    bucket_server.status = 301
    frozen = static_keys().resolve_blocking()
    answer = head_bucket_blocking(local(bucket_server), frozen, 5.0)
    assert (answer.status, answer.phrase, answer.bucket_region) == (
        301, "Moved Permanently", "eu-west-1")
    [(method, path, headers)] = bucket_server.seen
    assert (method, path) == ("HEAD", "/crashes")
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/")


def test_the_blocking_head_reports_no_answer():
    location = BucketLocation("crashes", "us-west-2", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(S3Unreachable) as caught:
        head_bucket_blocking(location, static_keys().resolve_blocking(), 5.0)
    assert caught.value.reason == "Connection refused"


def signed_parts(headers):
    """The header names and the signed scope of an Authorization (its date and hash vary)."""
    credential, signed, _ = headers["Authorization"].split(", ")
    return sorted(name.lower() for name in headers), credential, signed


def test_start_up_check_and_heartbeat_send_the_same_request(bucket_server):
    frozen = static_keys().resolve_blocking()
    head_bucket_blocking(local(bucket_server), frozen, 5.0)
    [(_, blocking_path, blocking_headers)] = bucket_server.seen

    http = FakeHTTP()
    clock = task.Clock()
    clock.advance(time.time())  # requests are signed at the reactor's time
    heartbeat = s3_storage(location=local(bucket_server), http=http, clock=clock)
    results = []
    defer.ensureDeferred(heartbeat.connection.head_bucket()).addBoth(results.append)
    [sent] = http.sent
    sent.deferred.callback(FakeResponse(200))
    assert results[0].status == 200
    assert sent.method == "HEAD"
    assert sent.url == f"http://127.0.0.1:{bucket_server.server_port}{blocking_path}"
    blocking_signed = {name: value for name, value in blocking_headers.items()
                       if name.lower() not in ("host", "accept-encoding")}
    assert signed_parts(sent.headers) == signed_parts(blocking_signed)
