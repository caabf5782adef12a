"""
The start-up check: one blocking, signed HEAD of the bucket.

It runs before the reactor starts (``ICrashStorage.verify``), so it uses
``http.client`` and blocks. HEAD bucket needs only ``s3:ListBucket``, as in
Antenna. Any answer but 200, or none, refuses start-up with one line naming
the bucket, the endpoint and the status; never a secret.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import botocore.exceptions

from antenna_tw.ext.s3.credentials import NoCredentials
from antenna_tw.ext.s3.signing import signed_headers
from antenna_tw.storage import StorageUnavailable

HINTS = {
    301: "wrong CRASHSTORAGE_REGION?",
    400: "wrong CRASHSTORAGE_REGION or malformed request?",
    403: "wrong credentials, or no s3:ListBucket permission on the bucket",
    404: "no such bucket",
}


def one_line(text):
    return " ".join(str(text).split())


def head_bucket_blocking(url, headers, timeout):
    """``(status, reason, headers)`` of a HEAD; raises OSError when there is no answer."""
    parts = urlsplit(url)
    connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                        else http.client.HTTPConnection)
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("HEAD", parts.path or "/", headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.reason, response.headers
    finally:
        connection.close()


def verify_bucket(location, credentials, timeout=10.0):
    """Raise StorageUnavailable unless a signed HEAD of the bucket answers 200."""
    where = f"S3 {location.describe()}"
    try:
        frozen = credentials.resolve_blocking()
    except NoCredentials as error:
        raise StorageUnavailable(f"{where}: {error}") from None
    except botocore.exceptions.BotoCoreError as error:
        raise StorageUnavailable(
            f"{where}: cannot resolve AWS credentials: {one_line(error)}") from None
    url = location.bucket_url()
    headers = signed_headers(frozen, location.region, "HEAD", url)
    try:
        status, reason, answer = head_bucket_blocking(url, headers, timeout)
    except (OSError, http.client.HTTPException) as error:
        reason = one_line(getattr(error, "strerror", None) or error or type(error).__name__)
        raise StorageUnavailable(f"{where}: no answer to HEAD bucket ({reason})") from None
    if status == 200:
        return
    hint = HINTS.get(status, "")
    actual_region = answer.get("x-amz-bucket-region")
    if actual_region and actual_region != location.region:
        hint = f"the bucket is in {actual_region}, CRASHSTORAGE_REGION is {location.region}"
    raise StorageUnavailable(
        f"{where}: HEAD bucket answered {status} {one_line(reason)}"
        + (f" ({hint})" if hint else ""))
