import os
import subprocess
import sys
import textwrap

import pytest

from antenna_tw.config import S3Settings, StorageSettings
from antenna_tw.workers.footprint import builtin_storage, storage_needs_tls, worker_environment
from antenna_tw.workers.supervisor import WorkerSupervisor


@pytest.mark.parametrize("storage_class,endpoint,needs_tls", [
    ("fs", "", False),
    ("noop", "", False),
    ("antenna.ext.fs.crashstorage.FSCrashStorage", "", False),
    ("antenna.ext.crashstorage_base.NoOpCrashStorage", "", False),
    ("antenna_tw.ext.fs.FSCrashStorage", "", False),
    ("s3", "", True),  # AWS itself
    ("s3", "https://s3.example.com", True),
    ("s3", "http://127.0.0.1:9000", False),
    ("antenna.ext.s3.crashstorage.S3CrashStorage", " HTTP://minio:9000 ", False),
    ("antenna_tw.ext.s3.S3CrashStorage", "https://minio:9000", True),
    ("mycompany.storage.Elsewhere", "", True),  # not ours: it may need TLS
])
def test_storage_needs_tls(storage_class, endpoint, needs_tls):
    settings = StorageSettings(crashstorage_class=storage_class,
                               aws=S3Settings(endpoint_url=endpoint))
    assert storage_needs_tls(settings) is needs_tls
    assert (builtin_storage(settings) is None) is (storage_class.startswith("mycompany"))


def test_workers_get_malloc_arena_max_unless_set():
    environ = {"PATH": "/bin"}
    assert worker_environment(environ) == {"PATH": "/bin", "MALLOC_ARENA_MAX": "2"}
    assert environ == {"PATH": "/bin"}
    assert worker_environment({"MALLOC_ARENA_MAX": "8"}) == {"MALLOC_ARENA_MAX": "8"}


class SpawningReactor:
    def __init__(self):
        self.spawned = []

    def spawnProcess(self, protocol, executable, args, env, childFDs):
        self.spawned.append((executable, args, env))

        class Process:
            pid = 4242
        return Process()

    def seconds(self):
        return 0.0


def test_workers_are_spawned_with_p_and_the_malloc_setting(monkeypatch):
    monkeypatch.setenv("ANTENNA_TEST_MARK", "1")
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    reactor = SpawningReactor()
    supervisor = WorkerSupervisor(reactor, 1, lambda index: ["-n", "antenna"])
    supervisor.startService()
    [(executable, args, env)] = reactor.spawned
    assert executable == sys.executable
    assert args[:3] == [sys.executable, "-P", "-c"]
    assert args[-2:] == ["-n", "antenna"]
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["ANTENNA_TEST_MARK"] == "1"


def run_python(code):
    """Run ``code`` in a fresh interpreter (nothing imported yet); its stdout."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_without_pyopenssl_keeps_it_out_of_the_reactor_only():
    assert run_python("""
        import sys
        from antenna_tw.workers.footprint import without_pyopenssl
        with without_pyopenssl() as blocked:
            from twisted.internet import reactor
            from twisted.internet import posixbase
        print(blocked, posixbase.ssl is None, "OpenSSL" in sys.modules)
        import OpenSSL  # importable again after the block
        print(OpenSSL.__name__)
        with without_pyopenssl() as blocked:  # too late now: does nothing
            pass
        print(blocked, sys.modules["OpenSSL"] is OpenSSL)
    """) == ["True", "True", "False", "OpenSSL", "False", "True"]


def test_forbid_pyopenssl_is_for_good_and_only_when_it_is_not_too_late():
    assert run_python("""
        import sys
        from antenna_tw.workers.footprint import forbid_pyopenssl
        print(forbid_pyopenssl())
        from twisted.internet import reactor
        try:
            import OpenSSL
        except ImportError:
            print("unimportable")
    """) == ["True", "unimportable"]
    assert run_python("""
        import OpenSSL
        from antenna_tw.workers.footprint import forbid_pyopenssl
        print(forbid_pyopenssl())
    """) == ["False"]
