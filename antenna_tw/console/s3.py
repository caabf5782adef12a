"""
Crashes in an S3 bucket, for the console, with the project's S3 client
(``antenna_tw/ext/s3/client.py``: its bucket location, credentials and
SigV4 signing, its connection's requests and retries).

The recent list is a ListObjectsV2 of the raw-crash prefix, at most
``MAX_PAGES`` pages of 1,000 keys: S3 lists in key order, not by time, so
the newest crashes are the newest of the keys listed (all of them, up to
that many). The product and version of the ``DETAILS`` newest are read
from their raw crashes (one GET each, remembered: a stored raw crash
never changes). A crash is found by its keys: raw crash, dump names, dumps.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections import OrderedDict
from datetime import datetime
from urllib.parse import urlencode

import attr
from twisted.internet import defer
from zope.interface import implementer

from antenna_tw.console.crashes import CrashRecord, CrashRow, ICrashFinder
from antenna_tw.ext.s3.client import S3Connection, S3Error, error_code, signed_headers
from antenna_tw.ext.s3.storage import dump_key, dump_names_key, raw_crash_key

MAX_PAGES = 5
DETAILS = 100
REMEMBERED = 2000
REQUEST_TIMEOUT = 10.0
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3ListError(Exception):
    """A listing S3 refused."""


def parse_listing(body: bytes) -> tuple[list[tuple[float, str, int]], str | None]:
    """``([(last modified, key, size)], next continuation token or None)`` of a ListObjectsV2."""
    root = ElementTree.fromstring(body)
    found = []
    for item in root.iter(f"{_NS}Contents"):
        key = item.findtext(f"{_NS}Key") or ""
        modified = item.findtext(f"{_NS}LastModified") or ""
        try:
            moment = datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp()
        except ValueError:
            moment = 0.0
        found.append((moment, key, int(item.findtext(f"{_NS}Size") or 0)))
    truncated = (root.findtext(f"{_NS}IsTruncated") or "").lower() == "true"
    token = root.findtext(f"{_NS}NextContinuationToken") if truncated else None
    return found, token


@implementer(ICrashFinder)
@attr.s
class S3Crashes:
    """The bucket of ``connection`` in Antenna's layout (``layout``: v2 or v1 raw crashes)."""

    connection: S3Connection = attr.ib()
    layout: str = attr.ib(default="v2")
    published: bool = attr.ib(default=False)

    def __attrs_post_init__(self) -> None:
        self._columns: OrderedDict[str, tuple[str, str, dict[str, int]]] = OrderedDict()

    def _state(self) -> str:
        return "published" if self.published else "stored"

    async def _list_page(self, prefix: str, token: str | None) -> bytes:
        connection = self.connection
        query = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
        if token:
            query["continuation-token"] = token
        url = connection.location.bucket_url().rstrip("/") + "/?" + urlencode(sorted(
            query.items()))
        credentials = await connection.credentials.frozen()
        headers = signed_headers(credentials, connection.location.region, "GET", url)
        listing = connection.http.request("GET", url, b"", headers)
        listing.addTimeout(REQUEST_TIMEOUT, connection.reactor)
        response = await listing
        code, body = response.status, response.body
        if code != 200:
            raise S3ListError(f"ListObjectsV2 answered {code} {error_code(body)}")
        return bytes(body)

    async def _recent(self, limit: int) -> list[CrashRow]:
        prefix = "v1/raw_crash/" if self.layout == "v1" else "v2/raw_crash/"
        keys: list[tuple[float, str, int]] = []
        token = None
        for _ in range(MAX_PAGES):
            body = await self._list_page(prefix, token)
            found, token = await self.connection.run_in_thread(parse_listing, body)
            keys += found
            if not token:
                break
        keys.sort(reverse=True)
        rows = []
        for index, (moment, key, _) in enumerate(keys[:limit]):
            crash_id = key.rsplit("/", 1)[-1]
            product, version = "", ""
            dumps: dict[str, int] = {}
            if index < DETAILS:
                product, version, dumps = await self._details(crash_id, key)
            rows.append(CrashRow(crash_id, moment, product, version, dumps, self._state()))
        return rows

    async def _get(self, key: str) -> bytes | None:
        try:
            answer = await self.connection.request("GET", key, timeout=REQUEST_TIMEOUT,
                                                   attempts=2)
        except S3Error as error:
            if error.status in (403, 404):
                return None
            raise
        return answer.body

    async def _details(self, crash_id: str, key: str) -> tuple[str, str, dict[str, int]]:
        if crash_id in self._columns:
            return self._columns[crash_id]
        body = await self._get(key)
        try:
            raw_crash = json.loads(body or b"{}")
        except ValueError:
            raw_crash = {}
        if not isinstance(raw_crash, dict):
            raw_crash = {}
        checksums = (raw_crash.get("metadata") or {}).get("dump_checksums") or {}
        # Sizes are not in the listing: -1 says unknown (the crash page has them).
        columns = (str(raw_crash.get("ProductName", "")), str(raw_crash.get("Version", "")),
                   {str(name): -1 for name in checksums})
        self._columns[crash_id] = columns
        if len(self._columns) > REMEMBERED:
            self._columns.popitem(last=False)
        return columns

    async def _find(self, crash_id: str) -> CrashRecord | None:
        data = await self._get(raw_crash_key(crash_id, self.layout))
        if data is None:
            return None
        try:
            raw_crash = json.loads(data)
        except ValueError:
            raw_crash = {}
        names_body = await self._get(dump_names_key(crash_id))
        try:
            names = json.loads(names_body or b"[]")
        except ValueError:
            names = []
        dumps: dict[str, int] = {}
        locations: dict[str, str] = {}
        for name in names if isinstance(names, list) else ():
            if not isinstance(name, str):
                continue
            body = await self._get(dump_key(crash_id, name))
            if body is not None:
                dumps[name] = len(body)
                locations[name] = dump_key(crash_id, name)
        return CrashRecord(crash_id, raw_crash if isinstance(raw_crash, dict) else {}, data,
                           dumps, self._state(), locations)

    def recent(self, limit: int) -> defer.Deferred[list[CrashRow]]:
        """The newest ``limit`` of the keys listed (at most MAX_PAGES pages)."""
        return defer.ensureDeferred(self._recent(limit))

    def find(self, crash_id: str) -> defer.Deferred[CrashRecord | None]:
        """The crash at its keys, or None."""
        return defer.ensureDeferred(self._find(crash_id))

    def read_dump(self, record: CrashRecord, name: str) -> defer.Deferred[bytes]:
        """A GET of the dump's key."""
        async def read() -> bytes:
            body = await self._get(record.dump_locations[name])
            if body is None:
                raise KeyError(name)
            return body
        return defer.ensureDeferred(read())

    def close(self) -> defer.Deferred[None]:
        """Close the connection's pooled connections."""
        return self.connection.close()
