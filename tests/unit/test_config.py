import pytest

from antenna_tw.config import ConfigError, load_config, read_env_file


def test_defaults_run_anywhere():
    config = load_config({}, None)
    assert config.storage.crashstorage_class == "fs"
    assert config.storage.fs_root == "./antenna_crashes"
    assert config.intake.max_payload_size == 25 * 1024 * 1024
    assert config.intake.dump_id_prefix == "bp-"
    assert config.spool.concurrent_crashmovers == 2
    assert config.throttle.throttle_rules == "antenna_tw.throttler.ACCEPT_ALL"


def test_environment_wins_over_env_file(tmp_path):
    env_file = tmp_path / "my.env"
    env_file.write_text("# comment\nCONCURRENT_CRASHMOVERS=8\nDUMP_ID_PREFIX='xx-'\n"
                        "export HOST_ID=from-file\n")
    config = load_config({"CONCURRENT_CRASHMOVERS": "3"}, str(env_file))
    assert config.spool.concurrent_crashmovers == 3
    assert config.intake.dump_id_prefix == "xx-"
    assert config.app.host_id == "from-file"


def test_antenna_env_names_the_file(tmp_path):
    env_file = tmp_path / "a.env"
    env_file.write_text("MAX_PARTS=12\n")
    assert load_config({"ANTENNA_ENV": str(env_file)}).intake.max_parts == 12


@pytest.mark.parametrize("key,value", [
    ("CONCURRENT_CRASHMOVERS", "zero"),
    ("CONCURRENT_CRASHMOVERS", "0"),
    ("MAX_PAYLOAD_SIZE", "lots"),
    ("SPOOL_FSYNC", "maybe"),
    ("LOGGING_LEVEL", "LOUD"),
    ("REQUEST_TIMEOUT", "-1"),
])
def test_bad_value_is_one_line_naming_the_option(key, value):
    with pytest.raises(ConfigError) as caught:
        load_config({key: value})
    message = str(caught.value)
    assert message.startswith(f"{key}=")
    assert "\n" not in message


def test_secret_values_never_appear_in_errors_or_log_lines():
    secret = "s3cr3t-value"
    config = load_config({"CRASHSTORAGE_SECRET_ACCESS_KEY": secret,
                          "STAGE_SUBMITTER_BEARER_TOKEN": secret,
                          "SECRET_SENTRY_DSN": secret})
    lines = config.log_lines()
    assert "CRASHSTORAGE_SECRET_ACCESS_KEY=*****" in lines
    assert "STAGE_SUBMITTER_BEARER_TOKEN=*****" in lines
    assert not any(secret in line for line in lines)
    assert secret not in repr(config)


def test_sizes_and_durations_read_like_an_operator_writes_them():
    config = load_config({"MAX_PAYLOAD_SIZE": "20m", "SPOOL_MAX_AGE": "10m",
                          "REQUEST_TIMEOUT": "1500ms"})
    assert config.intake.max_payload_size == 20 * 1024 * 1024
    assert config.spool.spool_max_age == 600
    assert config.intake.request_timeout == 1.5


def test_env_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read env file"):
        read_env_file(str(tmp_path / "missing.env"))
    bad = tmp_path / "bad.env"
    bad.write_text("GOOD=1\nthis is not an assignment\n")
    with pytest.raises(ConfigError, match="bad.env:2"):
        read_env_file(str(bad))
