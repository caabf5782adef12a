import pytest

from antenna_tw.tap import Options, makeService


def test_options_defaults_and_env():
    options = Options()
    options.parseOptions([])
    assert options["port"] == "tcp:8000:interface=127.0.0.1"
    assert options["env"] is None
    options.parseOptions(["--port", "tcp:0", "--env", "conf/dev.env"])
    assert options["env"] == "conf/dev.env"


def test_env_option_file_is_read(tmp_path):
    env_file = tmp_path / "x.env"
    env_file.write_text("MAX_PARTS=nope\n")
    options = Options()
    options.parseOptions(["--env", str(env_file)])
    with pytest.raises(SystemExit, match="MAX_PARTS='nope' is invalid"):
        makeService(options, environ={})


def test_workers_are_started_with_the_parent_s_balance_choice():
    from antenna_tw.tap import _worker_args

    for given, passed in (([], False), (["--no-balance"], True)):
        options = Options()
        options.parseOptions(["--workers", "2", "--port", "tcp:8000"] + given)
        argv = _worker_args(options)(1)
        assert ("--no-balance" in argv) is passed
        assert argv[argv.index("--worker-index") + 1] == "1"
