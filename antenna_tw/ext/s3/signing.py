"""The headers that make one S3 request authentic and its body verifiable."""

from __future__ import annotations

import base64
import hashlib

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

BODY_METHODS = ("PUT", "POST")


def content_md5(body):
    """Base64 MD5 of the body: S3 refuses the upload (BadDigest) if the bytes change."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")


def signed_headers(credentials, region, method, url, body=b""):
    """
    ``{name: value}`` to send with the request: ``Content-MD5`` for uploads,
    then botocore's SigV4 headers (``X-Amz-Date``, ``X-Amz-Content-SHA256``,
    ``X-Amz-Security-Token`` for session credentials, ``Authorization``).

    ``url`` must already be percent-encoded: SigV4 signs the path as sent.
    Pure CPU (two hashes of the body); large bodies are signed in a thread.
    """
    headers = {}
    if method in BODY_METHODS:
        headers["Content-MD5"] = content_md5(body)
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    S3SigV4Auth(credentials, "s3", region).add_auth(request)
    return dict(request.headers.items())
