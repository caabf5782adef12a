"""
Signatures checked for real: a moto server with INITIAL_NO_AUTH_ACTION_COUNT
at 0 and IAM users, so a wrong signature or key fails loudly. The collector's
user has only the permissions docs/s3.rst asks for.
"""

import pytest
import pytest_twisted
from twisted.python.threadpool import ThreadPool

from antenna_tw.crash import Crash
from antenna_tw.ext.s3 import S3Error
from antenna_tw.storage import StorageUnavailable
from tests.integration.s3_helpers import build_storage, s3_environ
from tests.s3server import Keys

CRASH_ID = "a1b2c3d4-0d1c-4f2a-9d7e-3c5b1a260504"


@pytest_twisted.async_yield_fixture
async def storages():
    threadpool = ThreadPool(minthreads=1, maxthreads=2, name="test-s3-auth")
    threadpool.start()
    built = []

    def make(environ):
        storage = build_storage(environ, threadpool)
        built.append(storage)
        return storage

    yield make
    for storage in built:
        await storage.close()
    threadpool.stop()


def with_wrong_secret(keys):
    return Keys(keys.access_key, keys.secret_key[:-4] + "XXXX")


@pytest_twisted.ensureDeferred
async def test_signed_requests_with_the_documented_permissions_pass(moto_auth, storages):
    server = moto_auth.server
    storage = storages(s3_environ(server, moto_auth.bucket, moto_auth.collector_keys))
    storage.verify()
    assert await storage.check_health() == []
    crash = Crash(CRASH_ID, {"uuid": CRASH_ID}, {"upload_file_minidump": b"\x00dump"})
    await storage.save_crash(crash)
    await storage.connection.put_object("v1/odd name/ü+=&?~", b"odd")
    stored = server.objects(moto_auth.bucket)  # read with the admin's key
    assert stored[f"v1/dump/{CRASH_ID}"] == b"\x00dump"
    assert stored["v1/odd name/ü+=&?~"] == b"odd"


@pytest_twisted.ensureDeferred
async def test_a_wrong_signature_fails_loudly(moto_auth, storages):
    keys = with_wrong_secret(moto_auth.collector_keys)
    storage = storages(s3_environ(moto_auth.server, moto_auth.bucket, keys))
    with pytest.raises(S3Error) as caught:
        await storage.save_crash(Crash(CRASH_ID, {}, {}))
    assert (caught.value.status, caught.value.code) == (403, "SignatureDoesNotMatch")
    assert keys.secret_key not in str(caught.value)
    [error] = await storage.check_health()
    assert "HEAD bucket answered 403" in error


@pytest.mark.parametrize("keys", [
    lambda auth: with_wrong_secret(auth.collector_keys),
    lambda auth: Keys("AKIAUNKNOWNUNKNOWN00", "unknown-secret"),
], ids=["wrong-secret", "unknown-key"])
def test_start_up_check_refuses_bad_credentials(moto_auth, keys):
    keys = keys(moto_auth)
    storage = build_storage(s3_environ(moto_auth.server, moto_auth.bucket, keys), ThreadPool())
    with pytest.raises(StorageUnavailable) as caught:
        storage.verify()
    message = str(caught.value)
    assert message == (
        f"S3 bucket '{moto_auth.bucket}' at {moto_auth.server.endpoint}: HEAD bucket answered "
        "403 FORBIDDEN (wrong credentials, or no s3:ListBucket permission on the bucket)")
    assert keys.secret_key not in message


@pytest_twisted.ensureDeferred
async def test_an_unknown_key_is_refused_on_upload(moto_auth, storages):
    storage = storages(s3_environ(moto_auth.server, moto_auth.bucket,
                                  Keys("AKIAUNKNOWNUNKNOWN00", "unknown-secret")))
    with pytest.raises(S3Error) as caught:
        await storage.connection.put_object("v1/x", b"x")
    assert (caught.value.status, caught.value.code) == (403, "InvalidAccessKeyId")
