"""Content-MD5 and SigV4 headers for one request (signature checks against moto are in
tests/integration/test_s3_auth.py)."""

import base64
import hashlib

from botocore.credentials import ReadOnlyCredentials

from antenna_tw.ext.s3.client import signed_headers

CREDENTIALS = ReadOnlyCredentials("AKIAEXAMPLE", "secret-example", None)
URL = "http://127.0.0.1:9000/crashes/v1/dump/a%20b"


def test_put_carries_md5_and_sigv4():
    body = b"\x00minidump bytes\xff" * 100
    headers = signed_headers(CREDENTIALS, "us-west-2", "PUT", URL, body)
    assert headers["Content-MD5"] == base64.b64encode(hashlib.md5(body).digest()).decode()
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    authorization = headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/")
    assert "/us-west-2/s3/aws4_request" in authorization
    assert "content-md5" in authorization and "x-amz-content-sha256" in authorization
    assert "secret-example" not in repr(headers)
    assert "X-Amz-Date" in headers


def test_head_has_no_md5_and_empty_payload_hash():
    headers = signed_headers(CREDENTIALS, "us-west-2", "HEAD", "http://127.0.0.1:9000/crashes")
    assert "Content-MD5" not in headers
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(b"").hexdigest()


def test_session_token_is_sent():
    credentials = ReadOnlyCredentials("ASIAEXAMPLE", "secret", "session-token")
    headers = signed_headers(credentials, "us-west-2", "PUT", URL, b"x")
    assert headers["X-Amz-Security-Token"] == "session-token"
    assert "x-amz-security-token" in headers["Authorization"]


def test_different_bodies_sign_differently():
    one = signed_headers(CREDENTIALS, "us-west-2", "PUT", URL, b"one")
    two = signed_headers(CREDENTIALS, "us-west-2", "PUT", URL, b"two")
    assert one["Authorization"] != two["Authorization"]


def test_the_body_hash_is_signed_over_tls_too():
    body = b"dump"
    headers = signed_headers(CREDENTIALS, "us-west-2", "PUT",
                             "https://crashes.s3.us-west-2.amazonaws.com/v1/dump/x", body)
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert "Content-MD5" in headers
