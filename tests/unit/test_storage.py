"""
The storage contract: every backend provides ICrashStorage whole, the
filesystem IFileCrashStorage too, and start-up refuses a class that does not.
"""

import pytest
from twisted.internet import defer, reactor
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from antenna_tw.app import StartupError, build_collector
from antenna_tw.config import load_config
from antenna_tw.ext.fs import FSCrashStorage
from antenna_tw.ext.noop import NoOpCrashStorage
from antenna_tw.storage import (
    ICrashStorage,
    IFileCrashStorage,
    StorageUnavailable,
    check_storage,
    storage_class,
)
from tests.helpers import test_environ


@pytest.mark.parametrize("short_name,files", [("fs", True), ("noop", False), ("s3", False)])
def test_every_backend_provides_the_whole_interface(short_name, files):
    cls = storage_class(short_name)
    assert verifyClass(ICrashStorage, cls)
    assert isinstance(cls.name, str)
    assert IFileCrashStorage.implementedBy(cls) is files
    if files:
        assert verifyClass(IFileCrashStorage, cls)


def test_the_builtin_instances_pass_the_start_up_check(tmp_path):
    for storage in (FSCrashStorage(str(tmp_path), reactor, None), NoOpCrashStorage()):
        check_storage(storage)
        assert verifyObject(ICrashStorage, storage)


class Undeclared:
    """Has every method but does not say it is crash storage."""

    name = "undeclared"

    def verify(self):
        pass

    def save_crash(self, crash):
        return defer.succeed(None)

    def check_health(self):
        return defer.succeed([])

    def close(self):
        return defer.succeed(None)


@implementer(ICrashStorage)
class WithoutClose:
    """Says it is crash storage but cannot let go of its connections."""

    name = "without-close"
    health_ttl = 0.0

    def verify(self):
        pass

    def save_crash(self, crash):
        return defer.succeed(None)

    def check_health(self):
        return defer.succeed([])

    @classmethod
    def from_settings(cls, settings, reactor, threadpool, concurrency=None):
        return cls()


@implementer(ICrashStorage)
class BrokenMethods(Undeclared):
    """Says it is crash storage but its methods want arguments nobody gives."""

    health_ttl = 0.0

    def verify(self, strictly):
        pass

    def close(self, now):
        return defer.succeed(None)


@implementer(IFileCrashStorage)
class FilesWithoutTheFileMethod(Undeclared):
    """Says it takes spooled files but has no method for them."""

    health_ttl = 0.0


@implementer(ICrashStorage)
class WithoutHealthTtl(Undeclared):
    """Says it is crash storage but not how long the heartbeat may reuse its health."""


@pytest.mark.parametrize("storage,why", [
    (Undeclared(), "^Undeclared is not usable as ICrashStorage: "
                   "Does not declaratively implement the interface; "
                   "The antenna_tw.storage.ICrashStorage.health_ttl attribute was not provided$"),
    (WithoutClose(), r"^WithoutClose is not usable as ICrashStorage: "
                     r"The antenna_tw.storage.ICrashStorage.close\(\) attribute was not provided.$"),
    (WithoutHealthTtl(), r"^WithoutHealthTtl is not usable as ICrashStorage: "
                         r"The antenna_tw.storage.ICrashStorage.health_ttl attribute was not "
                         r"provided.$"),
    (FilesWithoutTheFileMethod(),
     r"^FilesWithoutTheFileMethod is not usable as IFileCrashStorage: The antenna_tw.storage."
     r"IFileCrashStorage.save_spooled_blocking\(spooled\) attribute was not provided.$"),
    (BrokenMethods(), r"^BrokenMethods is not usable as ICrashStorage: The contract of "
                      r".*verify\(\) is violated .*; The contract of .*close\(\) is violated"),
])
def test_a_storage_that_breaks_the_contract_is_refused_in_one_line(storage, why):
    with pytest.raises(StorageUnavailable, match=why) as caught:
        check_storage(storage)
    assert "\n" not in str(caught.value)


def test_start_up_refuses_a_storage_class_that_breaks_the_contract(tmp_path):
    environ = test_environ(
        tmp_path, CRASHSTORAGE_CLASS="tests.unit.test_storage.WithoutClose")
    with pytest.raises(StartupError, match="WithoutClose is not usable as ICrashStorage"):
        build_collector(load_config(environ, None), reactor)
