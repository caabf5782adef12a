"""The start-up check's one-line reasons (the HEAD itself is faked here; tests/integration
and tests/system run it against moto)."""

import pytest

from antenna_tw.ext.s3 import probe
from antenna_tw.ext.s3.credentials import CredentialSource
from antenna_tw.ext.s3.location import BucketLocation
from antenna_tw.storage import StorageUnavailable

LOCATION = BucketLocation("crashes", "us-west-2", "http://127.0.0.1:9")
SECRET = "never-show-this-secret"


def static_keys():
    return CredentialSource(None, "AKIAEXAMPLE", SECRET)


def answering(status, reason, headers=None):
    def head(url, headers_sent, timeout):
        assert url == "http://127.0.0.1:9/crashes"
        assert "Authorization" in headers_sent
        return status, reason, headers or {}
    return head


def reason_for(monkeypatch, head, credentials=None):
    monkeypatch.setattr(probe, "head_bucket_blocking", head)
    with pytest.raises(StorageUnavailable) as caught:
        probe.verify_bucket(LOCATION, credentials or static_keys())
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message
    return message


def test_200_passes(monkeypatch):
    monkeypatch.setattr(probe, "head_bucket_blocking", answering(200, "OK"))
    probe.verify_bucket(LOCATION, static_keys())


def test_403_names_credentials_and_permission(monkeypatch):
    assert reason_for(monkeypatch, answering(403, "Forbidden")) == (
        "S3 bucket 'crashes' at http://127.0.0.1:9: HEAD bucket answered 403 Forbidden "
        "(wrong credentials, or no s3:ListBucket permission on the bucket)")


def test_another_region_is_named(monkeypatch):
    head = answering(301, "Moved Permanently", {"x-amz-bucket-region": "eu-west-1"})
    assert reason_for(monkeypatch, head).endswith(
        "HEAD bucket answered 301 Moved Permanently "
        "(the bucket is in eu-west-1, CRASHSTORAGE_REGION is us-west-2)")


def test_no_answer(monkeypatch):
    def head(url, headers, timeout):
        raise TimeoutError("timed out")
    assert reason_for(monkeypatch, head) == (
        "S3 bucket 'crashes' at http://127.0.0.1:9: no answer to HEAD bucket (timed out)")


def test_no_credentials(monkeypatch):
    class NoSession:
        def get_credentials(self):
            return None

    credentials = CredentialSource(None, make_session=NoSession)
    assert "no AWS credentials" in reason_for(monkeypatch, answering(200, "OK"), credentials)
