"""
``S3CrashStorage``: crashes into an S3 bucket in Antenna's layout and order
(docs/s3.rst), and the bucket's check, at start-up and for the heartbeat.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, cast

import attr
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from antenna_tw.crash import Crash, serialize_dump_names
from antenna_tw.crashid import date_from_crash_id
from antenna_tw.ext.s3.client import (
    RETRY_STATUSES,
    Answer,
    BucketLocation,
    S3Connection,
    S3Error,
    S3Unreachable,
    build_connection,
    head_bucket_blocking,
    is_sha256_hex,
    one_line,
)
from antenna_tw.storage import (
    CrashDamaged,
    ICrashStorage,
    StorageUnavailable,
    StorageUnreachable,
)

if TYPE_CHECKING:
    from twisted.python.threadpool import ThreadPool

    from antenna_tw.config import StorageSettings

# -- where each file of a crash goes in the bucket (docs/s3.rst, *Bucket layout*)

# Dump names stored under the key of the main minidump, as Antenna does.
MAIN_DUMP_NAMES = ("upload_file_minidump", "")


RAW_CRASH_LAYOUTS = ("v2", "v1")


def raw_crash_key(crash_id: str, layout: str = "v2") -> str:
    """
    ``v2/raw_crash/<first 3 chars of id>/<YYYYMMDD>/<id>``, or with the
    ``v1`` layout (CRASHSTORAGE_RAW_CRASH_LAYOUT; Antenna 2022-2024's)
    ``v1/raw_crash/<YYYYMMDD>/<id>``.
    """
    if layout == "v1":
        return f"v1/raw_crash/{date_from_crash_id(crash_id)}/{crash_id}"
    return f"v2/raw_crash/{crash_id[:3]}/{date_from_crash_id(crash_id)}/{crash_id}"


def dump_names_key(crash_id: str) -> str:
    """``v1/dump_names/<id>``"""
    return f"v1/dump_names/{crash_id}"


def dump_key(crash_id: str, name: str) -> str:
    """``v1/<name>/<id>``; ``upload_file_minidump`` and ``""`` are ``v1/dump/<id>``."""
    if name in MAIN_DUMP_NAMES:
        name = "dump"
    return f"v1/{name}/{crash_id}"


def dump_checksums(crash: Crash) -> dict[str, str]:
    """
    The SHA-256 of each dump as the intake computed it over the bytes it
    received (the raw crash's ``metadata.dump_checksums``), the ones that
    look like one: sent as the payload hash of the dump's PUT instead of
    hashing it again. If the bytes read back from the spool differ, S3
    refuses them; an entry found at start-up was checked against them by
    the spool already.
    """
    metadata = crash.raw_crash.get("metadata")
    checksums = metadata.get("dump_checksums") if isinstance(metadata, dict) else None
    if not isinstance(checksums, dict):
        return {}
    return {name: value for name, value in checksums.items() if is_sha256_hex(value)}


# S3's answers to a body that does not match its x-amz-content-sha256 (or MD5).
DAMAGED_CODES = frozenset({"XAmzContentSHA256Mismatch", "BadDigest"})


async def all_stored(puts: Iterable[Coroutine[Any, Any, None]]) -> None:
    """
    Run ``puts`` at once and wait for every one of them to end; then raise
    the first failure, if any (so no PUT of a crash is still running when
    its mover retries it). Cancelling cancels them all.
    """
    ended = await defer.DeferredList([defer.ensureDeferred(each) for each in puts],
                                     consumeErrors=True)
    for succeeded, result in ended:
        if not succeeded:
            cast(Failure, result).raiseException()


# -- what a HEAD of the bucket says ------------------------------------------

HINTS = {
    301: "wrong CRASHSTORAGE_REGION?",
    400: "wrong CRASHSTORAGE_REGION or malformed request?",
    403: "wrong credentials, or no s3:ListBucket permission on the bucket",
    404: "no such bucket",
}


def refuses(answer: Answer) -> bool:
    """
    Whether a HEAD of the bucket that did not answer 200 says the settings
    are wrong, so that the start is refused: a 301 (another region) and any
    4xx but 408 and 429 (no such bucket, access denied, bad credentials, a
    malformed request). A server error, throttling or another redirect
    says S3 is unwell, not misconfigured.
    """
    return answer.status == 301 or (
        400 <= answer.status < 500 and answer.status not in RETRY_STATUSES)


def bucket_problem(location: BucketLocation, answer: Answer | S3Unreachable,
                   detailed: bool = False) -> str | None:
    """
    None when the HEAD of the bucket answered 200; else one line naming the
    bucket, the endpoint and the status (or why nothing answered), never a
    secret. ``detailed`` (the start-up check) adds the reason phrase and a
    hint; the heartbeat's line has the status alone.
    """
    where = f"S3 {location.describe()}"
    if isinstance(answer, S3Unreachable):
        return f"{where}: no answer to HEAD bucket ({answer.reason})"
    if answer.status == 200:
        return None
    if not detailed:
        return f"{where}: HEAD bucket answered {answer.status}"
    hint = HINTS.get(answer.status, "")
    if answer.bucket_region and answer.bucket_region != location.region:
        hint = f"the bucket is in {answer.bucket_region}, CRASHSTORAGE_REGION is {location.region}"
    return (f"{where}: HEAD bucket answered {answer.status} {one_line(answer.phrase)}"
            + (f" ({hint})" if hint else ""))


@implementer(ICrashStorage)
@attr.s
class S3CrashStorage:
    """
    Writes dump_names and each dump in parallel, then, once they are all
    stored, the raw crash (the crash-complete marker), each a PUT signed
    with its body's SHA-256 (a dump's is the intake's, ``dump_checksums``).
    A failed PUT is retried by the connection; what still fails raises
    (after the crash's other PUTs ended, and before its raw crash is
    written) so the crash mover re-queues the whole crash (rewriting a key
    with the same bytes is harmless).

    ``verify`` (start-up, blocking) and ``check_health`` (the heartbeat)
    both HEAD the bucket with the same signed request and judge the answer
    with ``bucket_problem``. The heartbeat reuses an answer for
    ``health_ttl`` seconds, whatever its rate (``antenna_tw.health``).
    """

    connection: S3Connection = attr.ib()
    reactor: IReactorTime = attr.ib(repr=False)
    health_ttl: float = attr.ib(default=5.0)
    raw_crash_layout: str = attr.ib(default="v2",
                                    validator=attr.validators.in_(RAW_CRASH_LAYOUTS))
    name = "s3"

    @classmethod
    def from_settings(cls, settings: StorageSettings, reactor: Any,
                      threadpool: ThreadPool | None, concurrency: int = 2) -> S3CrashStorage:
        """Storage for StorageSettings; ``concurrency`` sizes the connection pool."""
        return cls(build_connection(settings, reactor, threadpool, concurrency), reactor,
                   raw_crash_layout=settings.raw_crash_layout)

    @property
    def location(self) -> BucketLocation:
        """Where the bucket is."""
        return self.connection.location

    def verify(self) -> None:
        """
        The start-up check, blocking, before the reactor runs: a signed HEAD
        of the bucket (it needs only ``s3:ListBucket``, as in Antenna).
        StorageUnavailable when it says the settings are wrong (``refuses``)
        or there are no credentials; StorageUnreachable when nothing usable
        answered (refused, timed out, a 5xx), which does not stop the start.
        """
        where = f"S3 {self.location.describe()}"
        frozen = self.connection.credentials.resolve_at_start_up(
            where, StorageUnavailable, StorageUnreachable)
        answer: Answer | S3Unreachable
        try:
            answer = head_bucket_blocking(self.location, frozen,
                                          self.connection.timeouts.start_up)
        except S3Unreachable as error:
            answer = error
        problem = bucket_problem(self.location, answer, detailed=True)
        if problem is None:
            return
        if isinstance(answer, Answer) and refuses(answer):
            raise StorageUnavailable(problem)
        raise StorageUnreachable(problem)

    async def _save(self, crash: Crash) -> None:
        crash_id = crash.crash_id
        names = crash.dump_names()
        checksums = dump_checksums(crash)
        put = self.connection.put_object
        # dump_names and the dumps at once; the raw crash, the crash-complete
        # marker, only once they are all stored.
        try:
            await all_stored([
                put(dump_names_key(crash_id), serialize_dump_names(names)),
                *(put(dump_key(crash_id, name), crash.dump_bytes(name), checksums.get(name))
                  for name in names)])
        except S3Error as error:
            if error.code in DAMAGED_CODES:
                raise CrashDamaged(f"{error}: a dump no longer matches the SHA-256 taken at "
                                   "intake") from error
            raise
        await put(raw_crash_key(crash_id, self.raw_crash_layout), crash.serialized_raw_crash())

    def save_crash(self, crash: Crash) -> Deferred[None]:
        """Store the crash: dump_names and each dump in parallel, the raw crash last."""
        return defer.ensureDeferred(self._save(crash))

    async def _health_check(self) -> list[str]:
        answer: Answer | S3Unreachable
        try:
            answer = await self.connection.head_bucket()
        except S3Unreachable as error:
            answer = error
        problem = bucket_problem(self.location, answer)
        return [] if problem is None else [problem]

    def check_health(self) -> Deferred[list[str]]:
        """A Deferred of the bucket's problems (none: healthy): one HEAD of the bucket."""
        return defer.ensureDeferred(self._health_check())

    def close(self) -> Deferred[None]:
        """Close pooled connections; a Deferred."""
        return self.connection.close()
