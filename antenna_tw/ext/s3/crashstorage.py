"""``S3CrashStorage``: crashes into an S3 bucket in Antenna's layout and order (docs/s3.rst)."""

from __future__ import annotations

import functools

import attr
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from zope.interface import implementer

from antenna_tw.crash import serialize_dump_names
from antenna_tw.ext.s3.connection import S3Connection, S3Error, S3Unreachable
from antenna_tw.ext.s3.credentials import CredentialSource
from antenna_tw.ext.s3.keys import dump_key, dump_names_key, raw_crash_key
from antenna_tw.ext.s3.location import BucketLocation
from antenna_tw.ext.s3.probe import verify_bucket
from antenna_tw.ext.s3.shared import SingleFlight
from antenna_tw.logs import Logger
from antenna_tw.storage import ICrashStorage


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """
    A persistent pool whose connections do not log "Starting factory" and
    "Stopping factory" (two info lines per request against servers that close
    every connection, such as moto).
    """

    _factory = _QuietClientFactory


def build_connection(settings, reactor, threadpool, concurrency=2):
    """
    An S3Connection from StorageSettings: a persistent pool that keeps one
    connection per crash mover (plus one for the heartbeat), SigV4 signing,
    credentials from the settings or botocore's chain.
    """
    run_in_thread = functools.partial(deferToThreadPool, reactor, threadpool)
    location = BucketLocation(settings.bucket_name, settings.region, settings.endpoint_url)
    credentials = CredentialSource(run_in_thread, settings.access_key,
                                   settings.secret_access_key)
    pool = QuietConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = concurrency + 1
    http = HTTPClient(Agent(reactor, pool=pool))
    return S3Connection(location, credentials, http, reactor, run_in_thread, pool=pool)


@implementer(ICrashStorage)
@attr.s
class S3CrashStorage:
    """
    Writes dump_names, each dump, then the raw crash (the crash-complete
    marker), each a PUT with Content-MD5. A failed PUT is retried by the
    connection; what still fails raises so the crash mover re-queues the
    whole crash (rewriting a key with the same bytes is harmless).

    ``check_health`` HEADs the bucket at most once every ``health_ttl``
    seconds, whatever the heartbeat rate.
    """

    connection = attr.ib()
    reactor = attr.ib(repr=False)
    health_ttl = attr.ib(default=5.0)
    name = "s3"
    log = Logger(namespace="antenna.s3")

    def __attrs_post_init__(self):
        self._health = None
        self._health_at = None
        self._health_flight = SingleFlight()

    @classmethod
    def from_settings(cls, settings, reactor, threadpool, concurrency=2):
        return cls(build_connection(settings, reactor, threadpool, concurrency), reactor)

    @property
    def location(self):
        return self.connection.location

    def verify(self):
        verify_bucket(self.location, self.connection.credentials)

    async def _save(self, crash):
        crash_id = crash.crash_id
        names = crash.dump_names()
        put = self.connection.put_object
        await put(dump_names_key(crash_id), serialize_dump_names(names))
        for name in names:
            await put(dump_key(crash_id, name), crash.dump_bytes(name))
        await put(raw_crash_key(crash_id), crash.serialized_raw_crash())

    def save_crash(self, crash):
        return defer.ensureDeferred(self._save(crash))

    async def _health_check(self):
        where = f"S3 {self.location.describe()}"
        try:
            status = await self.connection.head_bucket()
        except S3Unreachable as error:
            errors = [f"{where}: no answer to HEAD bucket ({error.reason})"]
        except S3Error as error:  # pragma: no cover - head_bucket returns statuses
            errors = [f"{where}: {error}"]
        else:
            errors = [] if status == 200 else [f"{where}: HEAD bucket answered {status}"]
        self._health, self._health_at = errors, self.reactor.seconds()
        return errors

    def check_health(self):
        if self._health_at is not None and \
                self.reactor.seconds() - self._health_at < self.health_ttl:
            return defer.succeed(list(self._health))
        return self._health_flight.run(
            lambda: defer.ensureDeferred(self._health_check())).addCallback(list)

    def close(self):
        """Close pooled connections; a Deferred."""
        return self.connection.close()
