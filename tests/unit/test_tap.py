import os
import socket

import pytest
from twisted.python import usage

from antenna_tw.tap import Options, makeService
from tests.helpers import test_environ


def test_options_defaults_and_env():
    options = Options()
    options.parseOptions([])
    assert options["port"] == ["tcp:8000:interface=127.0.0.1"]
    assert options["env"] is None
    options = Options()
    options.parseOptions(["--port", "tcp:0", "--env", "conf/dev.env", "-p", "tcp6:0"])
    assert options["env"] == "conf/dev.env"
    assert options["port"] == ["tcp:0", "tcp6:0"]


def test_env_option_file_is_read(tmp_path):
    env_file = tmp_path / "x.env"
    env_file.write_text("MAX_PARTS=nope\n")
    options = Options()
    options.parseOptions(["--env", str(env_file)])
    with pytest.raises(SystemExit, match="MAX_PARTS='nope' is invalid"):
        makeService(options, environ={})


def test_workers_are_started_as_workers_of_this_parent():
    from antenna_tw.tap import _worker_args

    options = Options()
    options.parseOptions(["--workers", "2", "--port", "tcp:8000", "--env", "x.env",
                          "--port", "ssl:8443"])
    argv = _worker_args(options)(1)
    assert argv[argv.index("--worker-index") + 1] == "1"
    assert argv[argv.index("--parent-pid") + 1] == str(os.getpid())
    assert argv[argv.index("--env") + 1] == "x.env"
    # every --port, in order: the worker finds their sockets at fds 3, 4, ...
    assert [argv[at + 1] for at, arg in enumerate(argv) if arg == "--port"] == [
        "tcp:8000", "ssl:8443"]


def test_no_balance_is_gone():
    # The workers share one accept queue; there is nothing left to balance.
    with pytest.raises(usage.UsageError, match="no-balance"):
        Options().parseOptions(["--workers", "2", "--no-balance"])


UNIX_REFUSAL = ("--workers cannot share a Unix socket (Twisted removes its file when any one "
                "worker stops); use --workers 0")


@pytest.mark.parametrize("port,refusal", [
    ("unix:/tmp/antenna.sock", UNIX_REFUSAL),
    ("systemd:domain=UNIX:index=0", UNIX_REFUSAL),
    ("onion:80", "unknown kind 'onion:'; expected tcp:, tcp6:, ssl:, unix: or systemd: "
                 "(--workers 0 serves the kinds of Twisted's endpoint plugins too)"),
])
def test_the_parent_refuses_a_port_it_cannot_share(tmp_path, port, refusal):
    options = Options()
    options.parseOptions(["--workers", "2", "--port", "tcp:0", "--port", port])
    with pytest.raises(SystemExit) as refused:
        makeService(options, environ=test_environ(tmp_path))
    assert str(refused.value) == f"antenna: cannot start: --port {port!r}: {refusal}"


def test_a_bad_port_is_refused_before_anything_else(tmp_path):
    options = Options()
    options.parseOptions(["--workers", "0", "--port", "tcp:0", "--port", "ssl:0"])
    with pytest.raises(SystemExit) as refused:
        makeService(options, environ=dict(test_environ(tmp_path), MAX_PARTS="nope"))
    assert str(refused.value) == ("antenna: cannot start: --port 'ssl:0': privateKey: "
                                  "cannot read 'server.pem' (No such file or directory)")


def test_the_parent_cannot_start_on_a_port_that_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        options = Options()
        options.parseOptions(["--workers", "2", "--port",
                              f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"])
        with pytest.raises(SystemExit, match="antenna: cannot start: .*[Aa]ddress already in use"):
            makeService(options, environ=test_environ(tmp_path))


def test_the_parent_starts_its_workers_when_storage_does_not_answer(tmp_path, capsys):
    from tests.helpers import UnreachableStorage

    UnreachableStorage.checks = 0
    options = Options()
    options.parseOptions(["--workers", "2", "--port", "tcp:0:interface=127.0.0.1"])
    environ = dict(test_environ(tmp_path), CRASHSTORAGE_CLASS="tests.helpers.UnreachableStorage")
    supervisor = makeService(options, environ=environ)
    try:
        assert supervisor.count == 2
        assert UnreachableStorage.checks == 1  # the parent checks, once
        assert "no answer (Connection refused); starting all the same" in capsys.readouterr().out
    finally:
        for listener in supervisor.listeners:
            listener.close()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_console_beyond_loopback_without_a_token_refuses_to_start(tmp_path, workers):
    options = Options()
    options.parseOptions(["--workers", workers, "--port", "tcp:0:interface=127.0.0.1"])
    environ = test_environ(tmp_path, CONSOLE_PORT="tcp:0:interface=0.0.0.0")
    with pytest.raises(SystemExit) as refused:
        makeService(options, environ=environ)
    assert str(refused.value) == (
        "antenna: cannot start: CONSOLE_PORT=tcp:0:interface=0.0.0.0 listens on 0.0.0.0, "
        "beyond loopback, and SECRET_CONSOLE_TOKEN is empty: set a token or listen on 127.0.0.1")
