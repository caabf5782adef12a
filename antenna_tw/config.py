"""
Settings from environment variables and an env file, validated at start-up.

Each component gets one frozen attrs class whose fields name the environment
variable they come from (the seed's option names, see SPEC.md section 7).
``load_config`` reads them all, so a bad value stops start-up with one line
that names the option, before anything listens or writes.
"""

from __future__ import annotations

import os
import re

import attr

from antenna_tw.units import parse_bool, parse_bytes, parse_seconds


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message is one line."""


def option(key, default, parser=str, secret=False, doc=""):
    """Declare an attrs field read from the environment variable ``key``."""
    return attr.ib(
        default=default,
        metadata={"key": key, "parser": parser, "secret": secret, "doc": doc},
        repr=not secret,
    )


def parse_positive_int(value):
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def parse_log_level(value):
    level = value.strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


@attr.s(frozen=True)
class AppSettings:
    """Process-wide settings: identity, logging, error reporting."""

    basedir = option("BASEDIR", ".", doc="where version.json lives")
    logging_level = option("LOGGING_LEVEL", "INFO", parse_log_level)
    host_id = option("HOST_ID", "", doc="goes into every log line; hostname when empty")
    secret_sentry_dsn = option("SECRET_SENTRY_DSN", "", secret=True)
    metrics_class = option("METRICS_CLASS", "logging", doc="logging, statsd or none")
    statsd_host = option("STATSD_HOST", "localhost")
    statsd_port = option("STATSD_PORT", 8125, int)
    statsd_namespace = option("STATSD_NAMESPACE", "")


@attr.s(frozen=True)
class IntakeSettings:
    """How /submit reads, limits and judges an upload."""

    dump_field = option("DUMP_FIELD", "upload_file_minidump", doc="kept for Antenna compatibility")
    dump_id_prefix = option("DUMP_ID_PREFIX", "bp-")
    max_payload_size = option("MAX_PAYLOAD_SIZE", 25 * 1024 * 1024, parse_bytes)
    max_decompressed_size = option("MAX_DECOMPRESSED_SIZE", 100 * 1024 * 1024, parse_bytes)
    max_parts = option("MAX_PARTS", 256, parse_positive_int)
    request_timeout = option("REQUEST_TIMEOUT", 60.0, parse_seconds)
    max_inflight_bytes = option(
        "MAX_INFLIGHT_BYTES", 1024 * 1024 * 1024, parse_bytes,
        doc="bytes all uploads being received may hold at once (split between workers)")
    stage_submitter_bearer_token = option("STAGE_SUBMITTER_BEARER_TOKEN", "", secret=True)


@attr.s(frozen=True)
class ThrottleSettings:
    """Which rule set decides and which products it knows."""

    throttle_rules = option("THROTTLE_RULES", "antenna_tw.throttler.ACCEPT_ALL")
    products = option("PRODUCTS", "antenna_tw.throttler.ALL_PRODUCTS")
    product_packagenames = option(
        "PRODUCT_PACKAGENAMES", "antenna_tw.throttler.ALL_PRODUCT_PACKAGENAMES"
    )


@attr.s(frozen=True)
class StorageSettings:
    """Where crashes end up (SPEC.md section 5)."""

    crashstorage_class = option("CRASHSTORAGE_CLASS", "fs")
    fs_root = option("CRASHSTORAGE_FS_ROOT", "./antenna_crashes")
    access_key = option("CRASHSTORAGE_ACCESS_KEY", "", secret=True)
    secret_access_key = option("CRASHSTORAGE_SECRET_ACCESS_KEY", "", secret=True)
    region = option("CRASHSTORAGE_REGION", "us-west-2")
    endpoint_url = option("CRASHSTORAGE_ENDPOINT_URL", "")
    bucket_name = option("CRASHSTORAGE_BUCKET_NAME", "")


@attr.s(frozen=True)
class SpoolSettings:
    """The durable local queue and the crash movers that drain it."""

    spool_dir = option("SPOOL_DIR", "./antenna_spool")
    spool_fsync = option("SPOOL_FSYNC", False, parse_bool)
    spool_direct_io = option(
        "SPOOL_DIRECT_IO", True, parse_bool,
        doc="write dumps with O_DIRECT (falls back by itself where refused)")
    spool_max_bytes = option("SPOOL_MAX_BYTES", 10 * 1024 * 1024 * 1024, parse_bytes)
    spool_min_free_bytes = option("SPOOL_MIN_FREE_BYTES", 512 * 1024 * 1024, parse_bytes)
    spool_max_age = option("SPOOL_MAX_AGE", 600.0, parse_seconds)
    concurrent_crashmovers = option("CONCURRENT_CRASHMOVERS", 2, parse_positive_int)
    crashmover_retry_base_delay = option(
        "CRASHMOVER_RETRY_BASE_DELAY", 1.0, parse_seconds,
        doc="backoff after a crash's first failed save; doubles per failure")
    crashmover_retry_max_delay = option(
        "CRASHMOVER_RETRY_MAX_DELAY", 60.0, parse_seconds,
        doc="the longest wait between two tries to save a crash")
    shutdown_timeout = option("SHUTDOWN_TIMEOUT", 30.0, parse_seconds)


SETTINGS_CLASSES = {
    "app": AppSettings,
    "intake": IntakeSettings,
    "throttle": ThrottleSettings,
    "storage": StorageSettings,
    "spool": SpoolSettings,
}


@attr.s(frozen=True)
class Config:
    """Every component's settings, as read at start-up."""

    app = attr.ib()
    intake = attr.ib()
    throttle = attr.ib()
    storage = attr.ib()
    spool = attr.ib()

    def log_lines(self):
        """``KEY=value`` for every option, secrets masked, sorted by key."""
        lines = []
        for name in SETTINGS_CLASSES:
            settings = getattr(self, name)
            for field in attr.fields(type(settings)):
                value = getattr(settings, field.name)
                shown = "*****" if field.metadata["secret"] and value else value
                lines.append(f"{field.metadata['key']}={shown}")
        return sorted(lines)


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_env_file(path):
    """
    Read ``KEY=value`` lines; ``#`` starts a comment line; values may be quoted.

    A missing file or a line that is not an assignment is a ConfigError.
    """
    values = {}
    try:
        with open(path, encoding="utf-8") as env_file:
            lines = env_file.read().splitlines()
    except OSError as error:
        raise ConfigError(f"cannot read env file {path}: {error.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ConfigError(f"{path}:{number}: not a KEY=value line")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def _build(cls, source):
    kwargs = {}
    for field in attr.fields(cls):
        key = field.metadata["key"]
        if key not in source:
            continue
        raw = source[key]
        try:
            kwargs[field.name] = field.metadata["parser"](raw)
        except (TypeError, ValueError) as error:
            shown = "*****" if field.metadata["secret"] else repr(raw)
            raise ConfigError(f"{key}={shown} is invalid: {error}") from None
    return cls(**kwargs)


def load_config(environ=None, env_file=None):
    """
    Build a Config from an env file (``env_file``, else ``ANTENNA_ENV``) and
    the environment, which wins over the file.
    """
    environ = dict(os.environ if environ is None else environ)
    env_file = env_file or environ.get("ANTENNA_ENV")
    source = read_env_file(env_file) if env_file else {}
    source.update(environ)
    return Config(**{name: _build(cls, source) for name, cls in SETTINGS_CLASSES.items()})
