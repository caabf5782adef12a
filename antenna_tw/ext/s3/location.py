"""The bucket's URLs: path style for a custom endpoint, virtual-hosted style on AWS."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import attr


def quote_key(key):
    """Percent-encode a key for the URL path; SigV4 signs the path as sent."""
    return quote(key, safe="/~")


@attr.s(frozen=True)
class BucketLocation:
    """
    Where a bucket lives. With ``endpoint_url`` (MinIO, LocalStack, moto)
    requests go to ``<endpoint>/<bucket>/<key>``; without it, to
    ``https://<bucket>.s3.<region>.amazonaws.com/<key>``, or path style on the
    regional endpoint when the bucket name has dots (they break TLS names).
    """

    bucket = attr.ib()
    region = attr.ib()
    endpoint_url = attr.ib(default="", converter=lambda url: (url or "").rstrip("/"))

    def __attrs_post_init__(self):
        if not self.bucket:
            raise ValueError("CRASHSTORAGE_BUCKET_NAME is required for S3 storage")
        if "/" in self.bucket:
            raise ValueError(f"CRASHSTORAGE_BUCKET_NAME={self.bucket!r} is not a bucket name")
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"CRASHSTORAGE_ENDPOINT_URL={self.endpoint_url!r} is not an http(s) URL")

    @property
    def path_style(self):
        return bool(self.endpoint_url) or "." in self.bucket

    @property
    def endpoint(self):
        """The service endpoint, for messages and path-style URLs."""
        return self.endpoint_url or f"https://s3.{self.region}.amazonaws.com"

    def bucket_url(self):
        if self.path_style:
            return f"{self.endpoint}/{quote_key(self.bucket)}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/"

    def object_url(self, key):
        if self.path_style:
            return f"{self.endpoint}/{quote_key(self.bucket)}/{quote_key(key)}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{quote_key(key)}"

    def describe(self):
        """``bucket 'name' at <endpoint>``, for one-line messages."""
        return f"bucket {self.bucket!r} at {self.endpoint}"
