import os
import re

import pytest

from antenna_tw import config as config_module
from antenna_tw.config import (
    ConfigError,
    load_config,
    read_env_file,
    unknown_name_messages,
)


def test_defaults_run_anywhere():
    config = load_config({}, None)
    assert config.storage.crashstorage_class == "fs"
    assert config.storage.fs_root == "./antenna_crashes"
    assert config.intake.max_payload_size == 25 * 1024 * 1024
    assert config.intake.dump_id_prefix == "bp-"
    assert config.spool.concurrent_crashmovers == 0  # by storage
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
    ("CONCURRENT_CRASHMOVERS", "-1"),
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
    summary = config.summary().split()
    assert "CRASHSTORAGE_SECRET_ACCESS_KEY=*****" in summary
    assert "STAGE_SUBMITTER_BEARER_TOKEN=*****" in summary
    assert "SECRET_SENTRY_DSN=*****" in summary
    assert secret not in config.summary()
    assert secret not in repr(config)


def test_the_start_up_summary_is_one_line_of_the_options_not_at_their_defaults():
    config = load_config({"SPOOL_DIR": "/var/spool/a b", "CONCURRENT_CRASHMOVERS": "0",
                          "LOGGING_FORMAT": "Text", "HOST_ID": "line\nbreak"})
    summary = config.summary()
    assert "\n" not in summary
    assert summary.startswith("configuration: HOST_ID=\"line\\nbreak\" LOGGING_FORMAT=text "
                              "SPOOL_DIR=\"/var/spool/a b\" (3 set, ")
    assert "CONCURRENT_CRASHMOVERS" not in summary  # 0 is its default
    assert load_config({}).summary().startswith("configuration: all defaults (0 set, ")


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


# -- Antenna's names of 2021 to today ---------------------------------------

NAMESPACED = {
    "CRASHMOVER_CRASHSTORAGE_CLASS": "antenna.ext.s3.crashstorage.S3CrashStorage",
    "CRASHMOVER_CRASHSTORAGE_BUCKET_NAME": "org-myorg-crashes",
    "CRASHMOVER_CRASHSTORAGE_REGION": "eu-central-1",
    "CRASHMOVER_CRASHSTORAGE_ENDPOINT_URL": "http://127.0.0.1:9000",
    "CRASHMOVER_CRASHSTORAGE_ACCESS_KEY": "AKIDEXAMPLE",
    "CRASHMOVER_CRASHSTORAGE_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
    "CRASHMOVER_CRASHSTORAGE_FS_ROOT": "/srv/crashes",
    "CRASHMOVER_CONCURRENT_CRASHMOVERS": "7",
    "BREAKPAD_THROTTLER_RULES": "antenna.throttler.MOZILLA_RULES",
    "BREAKPAD_THROTTLER_PRODUCTS": "antenna.throttler.MOZILLA_PRODUCTS",
    "BREAKPAD_THROTTLER_PRODUCT_PACKAGENAMES": "antenna.throttler.MOZILLA_PRODUCT_PACKAGENAMES",
    "BREAKPAD_DUMP_FIELD": "dump",
    "BREAKPAD_STAGE_SUBMITTER_BEARER_TOKEN": "t0ken",
    "CRASHMOVER_CRASHPUBLISH_CLASS": "antenna.ext.crashpublish_base.NoOpCrashPublish",
}


def test_antenna_namespaced_names_are_read():
    config = load_config(NAMESPACED)
    storage = config.storage
    assert storage.crashstorage_class == "antenna.ext.s3.crashstorage.S3CrashStorage"
    assert storage.bucket_name == "org-myorg-crashes"
    assert storage.aws.region == "eu-central-1"
    assert storage.aws.endpoint_url == "http://127.0.0.1:9000"
    assert storage.aws.access_key == "AKIDEXAMPLE"
    assert storage.aws.secret_access_key == "wJalrXUtnFEMI"
    assert storage.fs_root == "/srv/crashes"
    assert config.publish.crashpublish_class == "none"
    assert config.spool.concurrent_crashmovers == 7
    assert config.throttle.throttle_rules == "antenna.throttler.MOZILLA_RULES"
    assert config.throttle.products == "antenna.throttler.MOZILLA_PRODUCTS"
    assert config.throttle.product_packagenames == \
        "antenna.throttler.MOZILLA_PRODUCT_PACKAGENAMES"
    assert config.intake.dump_field == "dump"
    assert config.intake.stage_submitter_bearer_token == "t0ken"
    assert config.warnings == ()


def test_antennas_s3_fallback_names_are_read():
    config = load_config({"S3_REGION": "ca-central-1", "S3_ENDPOINT_URL": "http://minio:9000"})
    assert config.storage.aws.region == "ca-central-1"
    assert config.storage.aws.endpoint_url == "http://minio:9000"


@pytest.mark.parametrize(("path", "field"), [
    (path, field) for path, field in config_module.all_options()
    if field.metadata["alternates"]], ids=lambda option: getattr(option, "name", option))
def test_every_alternate_is_read_in_order(path, field):
    """Each alternate alone sets the option; the primary name, then the earlier one, wins."""
    valid = {"CRASHSTORAGE_CLASS": "noop", "CONCURRENT_CRASHMOVERS": "5",
             "CRASHPUBLISH_CLASS": "none"}
    value = valid.get(field.metadata["key"], "some-value")
    names = config_module.option_names(field)
    for name in names[1:]:
        read = load_config({name: value}).value_of(path)
        assert read == field.metadata["parser"](value), name
    # The same value under every name is no conflict.
    assert load_config(dict.fromkeys(names, value)).value_of(path) == \
        field.metadata["parser"](value)


def test_an_alternate_in_the_env_file_is_read(tmp_path):
    env_file = tmp_path / "antenna.env"
    env_file.write_text("CRASHMOVER_CRASHSTORAGE_FS_ROOT=/from/file\n")
    assert load_config({}, str(env_file)).storage.fs_root == "/from/file"


def test_two_names_with_different_values_are_refused_naming_both():
    with pytest.raises(ConfigError) as caught:
        load_config({"CRASHSTORAGE_FS_ROOT": "/a", "CRASHMOVER_CRASHSTORAGE_FS_ROOT": "/b"})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("CRASHSTORAGE_FS_ROOT and CRASHMOVER_CRASHSTORAGE_FS_ROOT "
                              "are both set, to different values")


def test_a_conflict_between_alternates_is_refused_too(tmp_path):
    env_file = tmp_path / "antenna.env"
    env_file.write_text("S3_REGION=us-east-1\n")
    with pytest.raises(ConfigError, match="^CRASHMOVER_CRASHSTORAGE_REGION and S3_REGION "):
        load_config({"CRASHMOVER_CRASHSTORAGE_REGION": "eu-west-1"}, str(env_file))


def test_a_conflicting_secret_is_named_but_never_shown():
    with pytest.raises(ConfigError) as caught:
        load_config({"CRASHSTORAGE_SECRET_ACCESS_KEY": "s3cr3t-one",
                     "CRASHMOVER_CRASHSTORAGE_SECRET_ACCESS_KEY": "s3cr3t-two"})
    message = str(caught.value)
    assert "CRASHSTORAGE_SECRET_ACCESS_KEY and CRASHMOVER_CRASHSTORAGE_SECRET_ACCESS_KEY" \
        in message
    assert "s3cr3t" not in message


def test_a_bad_value_under_an_alternate_names_the_alternate():
    with pytest.raises(ConfigError, match="^CRASHMOVER_CONCURRENT_CRASHMOVERS='-1' is invalid"):
        load_config({"CRASHMOVER_CONCURRENT_CRASHMOVERS": "-1"})


# -- names no option reads ----------------------------------------------------

def test_a_misspelt_name_is_warned_with_the_nearest_option():
    config = load_config({"CONCURENT_CRASHMOVERS": "4", "SPOOL_DIRR": "/x",
                          "CRASHMOVER_CRASHSTORAGE_BUCKETNAME": "b", "PATH": "/bin",
                          "HOSTNAME": "box", "LANG": "C"})
    assert config.warnings == (
        "`CONCURENT_CRASHMOVERS` is not an option; did you mean `CONCURRENT_CRASHMOVERS`?",
        "`CRASHMOVER_CRASHSTORAGE_BUCKETNAME` is not an option; "
        "did you mean `CRASHMOVER_CRASHSTORAGE_BUCKET_NAME`?",
        "`SPOOL_DIRR` is not an option; did you mean `SPOOL_DIR`?",
    )
    assert config.spool.concurrent_crashmovers == 0


def test_a_misspelling_in_the_env_file_is_warned(tmp_path):
    env_file = tmp_path / "antenna.env"
    env_file.write_text("THROTTLE_RULE=antenna_tw.throttler.MOZILLA_RULES\n")
    assert load_config({}, str(env_file)).warnings == (
        "`THROTTLE_RULE` is not an option; did you mean `THROTTLE_RULES`?",)


def test_an_antenna_only_name_says_so():
    assert unknown_name_messages({"CRASHMOVER_MAX_ATTEMPTS": "3",
                                  "CRASHMOVER_CRASHPUBLISH_TOPIC_NAME": "t"}) == [
        "`CRASHMOVER_CRASHPUBLISH_TOPIC_NAME` is Antenna's and not an option of antenna-tw "
        "(Pub/Sub's: antenna-tw does not publish to Pub/Sub)",
        "`CRASHMOVER_MAX_ATTEMPTS` is Antenna's and not an option of antenna-tw "
        "(a failed save is retried until it succeeds)",
    ]


def test_config_strict_refuses_an_unknown_name_in_one_line():
    with pytest.raises(ConfigError) as caught:
        load_config({"CONFIG_STRICT": "true", "CONCURENT_CRASHMOVERS": "4",
                     "SPOOL_DIRR": "/x"})
    assert str(caught.value) == (
        "`CONCURENT_CRASHMOVERS` is not an option; did you mean `CONCURRENT_CRASHMOVERS`? "
        "(and 1 more); CONFIG_STRICT is on")
    assert load_config({"CONFIG_STRICT": "true"}).app.config_strict is True


def test_unknown_names_never_show_a_value():
    secret = "s3cr3t-value"
    source = {"SECRET_SENTRY_DNS": secret, "CRASHSTORAGE_SECRET_ACCES_KEY": secret,
              "STAGE_SUBMITTER_BEARER_TOKN": secret}
    warnings = load_config(source).warnings
    assert len(warnings) == 3
    assert not any(secret in line for line in warnings)
    with pytest.raises(ConfigError) as caught:
        load_config(dict(source, CONFIG_STRICT="1"))
    assert secret not in str(caught.value)


def test_the_documented_prefixes_are_the_derived_ones():
    page = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs",
                             "configuration.rst"), encoding="utf-8").read()
    listed = page[page.index("up to its first ``_``"):page.index("or a name that is nearly")]
    assert set(re.findall(r"``([A-Z0-9]+_)``", listed)) == config_module.collector_prefixes()


# -- what antenna-tw does not have ----------------------------------------------

@pytest.mark.parametrize("key", ["CRASHSTORAGE_CLASS", "CRASHMOVER_CRASHSTORAGE_CLASS"])
def test_antennas_gcs_storage_is_refused_in_one_line(key):
    with pytest.raises(ConfigError) as caught:
        load_config({key: "antenna.ext.gcs.crashstorage.GcsCrashStorage"})
    assert str(caught.value) == (
        f"{key}='antenna.ext.gcs.crashstorage.GcsCrashStorage' is invalid: Antenna's Google "
        "Cloud Storage, which antenna-tw does not have; use s3 or fs")


@pytest.mark.parametrize("key", ["CRASHMOVER_CRASHPUBLISH_CLASS", "CRASHPUBLISH_CLASS"])
def test_the_pubsub_publisher_class_is_refused_in_one_line(key):
    value = "antenna.ext.pubsub.crashpublish.PubSubCrashPublish"
    with pytest.raises(ConfigError) as caught:
        load_config({key: value})
    assert str(caught.value) == (
        f"{key}={value!r} is invalid: Antenna's Google Cloud Pub/Sub, which antenna-tw does "
        "not have; use sqs or rabbitmq")


@pytest.mark.parametrize("value", ["", "none", "NONE",
                                   "antenna.ext.crashpublish_base.NoOpCrashPublish"])
def test_no_publisher_is_fine(value):
    assert load_config({"CRASHPUBLISH_CLASS": value}).publish.crashpublish_class == "none"


@pytest.mark.parametrize("value,expected", [
    ("sqs", "sqs"), ("SQS", "sqs"), ("rabbitmq", "rabbitmq"),
    ("antenna.ext.sqs.crashpublish.SQSCrashPublish", "sqs"),
    ("mypackage.MyPublisher", "mypackage.MyPublisher"),
])
def test_publisher_classes_are_read(value, expected):
    assert load_config({"CRASHPUBLISH_CLASS": value}).publish.crashpublish_class == expected


def test_an_unknown_publisher_name_is_refused():
    with pytest.raises(ConfigError) as caught:
        load_config({"CRASHPUBLISH_CLASS": "kafka"})
    assert str(caught.value) == (
        "CRASHPUBLISH_CLASS='kafka' is invalid: must be none, sqs, rabbitmq or the dotted "
        "path of a publisher class")


ANTENNA_2020_SQS = {
    "CRASHPUBLISH_CLASS": "antenna.ext.sqs.crashpublish.SQSCrashPublish",
    "CRASHPUBLISH_QUEUE_NAME": "socorro-standard",
    "CRASHPUBLISH_REGION": "us-east-1",
    "CRASHPUBLISH_ENDPOINT_URL": "http://localstack:4566",
    "CRASHPUBLISH_ACCESS_KEY": "foo",
    "CRASHPUBLISH_SECRET_ACCESS_KEY": "bar",
}


@pytest.mark.parametrize("prefix", ["", "CRASHMOVER_"])
def test_antennas_sqs_publisher_names_are_read(prefix):
    config = load_config({prefix + key: value for key, value in ANTENNA_2020_SQS.items()})
    publish = config.publish
    assert (publish.crashpublish_class, publish.queue_name, publish.aws.region,
            publish.aws.endpoint_url, publish.aws.access_key,
            publish.aws.secret_access_key) == (
        "sqs", "socorro-standard", "us-east-1", "http://localstack:4566", "foo", "bar")
    assert publish.verify_message is True
    assert publish.accepted_only is False
    assert config.warnings == ()


def test_the_publisher_falls_back_on_antennas_s3_names_like_antenna():
    publish = load_config({"S3_REGION": "eu-west-1", "S3_ENDPOINT_URL": "http://x:1"}).publish
    assert (publish.aws.region, publish.aws.endpoint_url) == ("eu-west-1", "http://x:1")


def test_pubsub_names_are_named_as_antennas():
    config = load_config({"CRASHMOVER_CRASHPUBLISH_TOPIC_NAME": "t"})
    assert config.warnings == (
        "`CRASHMOVER_CRASHPUBLISH_TOPIC_NAME` is Antenna's and not an option of antenna-tw "
        "(Pub/Sub's: antenna-tw does not publish to Pub/Sub)",)


def test_secret_options_are_left_out_of_repr_and_only_they():
    # Each option's field spells out attr.ib (for mypy): its repr=False must
    # follow the metadata's secret flag.
    for field in config_module.all_fields():
        assert field.repr is not field.metadata["secret"], field.name
