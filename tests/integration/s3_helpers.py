"""Building S3 storage against the test server, and reading what it stored."""

from __future__ import annotations

from twisted.internet import reactor, task

from antenna_tw.config import load_config
from antenna_tw.ext.s3 import S3CrashStorage
from tests.helpers import in_thread


def s3_environ(server, bucket, keys=None, **overrides):
    """Antenna's option names for S3 storage on ``server``."""
    keys = keys or server.keys
    environ = {
        "CRASHSTORAGE_CLASS": "antenna.ext.s3.crashstorage.S3CrashStorage",
        "CRASHSTORAGE_ENDPOINT_URL": server.endpoint,
        "CRASHSTORAGE_BUCKET_NAME": bucket,
        "CRASHSTORAGE_REGION": "us-west-2",
        "CRASHSTORAGE_ACCESS_KEY": keys.access_key,
        "CRASHSTORAGE_SECRET_ACCESS_KEY": keys.secret_key,
    }
    environ.update({key: str(value) for key, value in overrides.items()})
    return environ


def build_storage(environ, threadpool, concurrency=2):
    config = load_config(environ, None)
    return S3CrashStorage.from_settings(config.storage, reactor, threadpool,
                                        concurrency=concurrency)


async def wait_for_key(server, bucket, key, timeout=15.0):
    """Poll the bucket (botocore, in a thread) until ``key`` is there."""
    waited = 0.0
    while key not in await in_thread(server.keys_in, bucket, key):
        if waited > timeout:
            raise AssertionError(f"{key} not in {bucket} after {timeout} s")
        await task.deferLater(reactor, 0.1, lambda: None)
        waited += 0.1
