"""SigV4 headers of S3 requests: SigV4Signer against botocore's own S3SigV4Auth for the same
request at the same time (signature checks against moto are in
tests/integration/test_s3_auth.py)."""

import datetime
import hashlib

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from antenna_tw.ext.s3.client import (
    EMPTY_SHA256,
    BucketLocation,
    SigV4Signer,
    signed_headers,
    signed_request,
)

CREDENTIALS = ReadOnlyCredentials("AKIAEXAMPLE", "secret-example", None)
SESSION = ReadOnlyCredentials("ASIAEXAMPLE", "secret-example", "session-token")
URL = "http://127.0.0.1:9000/crashes/v1/dump/a%20b"
NOW = datetime.datetime(2026, 12, 3, 23, 59, 58, tzinfo=datetime.timezone.utc)


def botocores(monkeypatch, credentials, method, url, body, region="us-west-2"):
    """botocore's S3SigV4Auth headers for the request, signed at NOW."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)
    request = AWSRequest(method=method, url=url, data=body, headers={})
    S3SigV4Auth(credentials, "s3", region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("credentials", [CREDENTIALS, SESSION])
@pytest.mark.parametrize("method,url,body", [
    ("PUT", URL, b"\x00minidump bytes\xff" * 100),
    ("PUT", "http://127.0.0.1:9000/crashes/v2/raw_crash/de0/20261203/x", b"{}"),
    ("PUT", "https://crashes.s3.us-west-2.amazonaws.com/v1/dump_names/x", b"[]"),
    ("PUT", "https://s3.us-west-2.amazonaws.com/a.b/v1/dump/x", b"dump"),
    ("HEAD", "http://127.0.0.1:9000/crashes", b""),
    ("HEAD", "https://crashes.s3.us-west-2.amazonaws.com/", b""),
    ("HEAD", "http://[::1]:9000/crashes", b""),
    ("HEAD", "http://LocalHost:80/crashes", b""),
])
def test_headers_equal_botocores_for_the_same_request_and_time(monkeypatch, credentials,
                                                               method, url, body):
    expected = botocores(monkeypatch, credentials, method, url, body)
    ours = SigV4Signer("us-west-2").headers(credentials, method, url,
                                            hashlib.sha256(body).hexdigest(),
                                            NOW.timestamp())
    assert ours == expected


def test_the_signing_key_is_kept_for_the_day_and_secret(monkeypatch):
    signer = SigV4Signer("eu-west-1")
    first = signer.signing_key("secret", "20261203")
    assert signer.signing_key("secret", "20261203") is first
    assert signer.signing_key("secret", "20261204") != first
    assert signer.signing_key("other", "20261204") != signer.signing_key("secret", "20261204")
    # Still botocore's signature across the change of day, for either secret.
    for moment in (NOW, NOW + datetime.timedelta(seconds=3)):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda moment=moment: moment)
        request = AWSRequest(method="PUT", url=URL, data=b"x", headers={})
        S3SigV4Auth(CREDENTIALS, "s3", "eu-west-1").add_auth(request)
        ours = signer.headers(CREDENTIALS, "PUT", URL, hashlib.sha256(b"x").hexdigest(),
                              moment.timestamp())
        assert ours["Authorization"] == request.headers["Authorization"]


def test_the_payload_hash_is_sent_and_signed_as_given():
    signer = SigV4Signer("us-west-2")
    body = b"dump"
    good = signer.headers(CREDENTIALS, "PUT", URL, hashlib.sha256(body).hexdigest(), 0)
    other = signer.headers(CREDENTIALS, "PUT", URL, hashlib.sha256(b"dumb").hexdigest(), 0)
    assert good["X-Amz-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert good["Authorization"] != other["Authorization"]
    assert "Content-MD5" not in good
    assert "secret-example" not in repr(good)


def test_signed_request_heads_the_bucket_with_the_empty_payload_hash():
    location = BucketLocation("crashes", "us-west-2", "http://127.0.0.1:9000")
    url, headers = signed_request(location, CREDENTIALS, "HEAD")
    assert url == "http://127.0.0.1:9000/crashes"
    assert headers["X-Amz-Content-SHA256"] == EMPTY_SHA256 == hashlib.sha256(b"").hexdigest()
    assert "/us-west-2/s3/aws4_request" in headers["Authorization"]


def test_botocore_signs_other_services():
    headers = signed_headers(SESSION, "eu-west-1", "POST", "https://sqs.eu-west-1.amazonaws.com/",
                             b"{}", service="sqs")
    assert "/eu-west-1/sqs/aws4_request" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "session-token"
    assert "Content-MD5" not in headers
