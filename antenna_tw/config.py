"""
Settings from environment variables and an env file, validated at start-up.

Each component gets one frozen attrs class whose fields name the environment
variable they come from; the names are Mozilla Antenna's, so an Antenna env
file keeps working. Every field says what it does (``doc``), and
docs/configuration.rst is generated from these declarations, so this module
is the one place an option is described. ``load_config`` reads them all, so
a bad value stops start-up with one line that names the option, before
anything listens or writes.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

import attr

from antenna_tw.units import parse_bool, parse_bytes, parse_seconds


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message is one line."""


T = TypeVar("T")


@overload
def option(key: str, default: str, *, secret: bool = False, doc: str = "",
           type_name: str | None = None, aliases: Mapping[str, str] | None = None,
           alternates: Iterable[str] = ()) -> str: ...
@overload
def option(key: str, default: T, parser: Callable[[str], T], *, secret: bool = False,
           doc: str = "", type_name: str | None = None,
           aliases: Mapping[str, str] | None = None, alternates: Iterable[str] = ()) -> T: ...
def option(key: str, default: Any, parser: Callable[[str], Any] = str, *, secret: bool = False,
           doc: str = "", type_name: str | None = None,
           aliases: Mapping[str, str] | None = None, alternates: Iterable[str] = ()) -> Any:
    """
    The attrs field of an option read from the environment variable ``key``:
    ``name: int = option("KEY", 1, int, doc=...)`` in a settings class
    (``auto_attribs``: mypy's attrs plugin takes the field's type from the
    annotation, and the overloads check the default and the parser against it).

    ``parser`` turns the variable's text into the value; ``secret`` masks
    it in logs (and keeps it out of the repr); ``doc`` says what the option
    does (the option reference shows it), written as a triple-quoted block
    under the call, its lines joined into one; ``type_name`` names the shape of a
    string option (a path, a URL) where the parser alone would only say
    "string"; ``aliases`` maps the other values accepted for it (Antenna's
    class paths) to what they mean; ``alternates`` are the other names it is
    read from (Antenna's names of 2021 to today), after ``key``, in their order.
    """
    return attr.ib(default=default, repr=not secret, metadata={
        "key": key, "parser": parser, "secret": secret, "doc": prose(doc),
        "type_name": type_name,
        "aliases": dict(aliases or {}), "alternates": tuple(alternates)})


def prose(text: str) -> str:
    """A doc written as an indented block in the code, as one line (reST joins lines alike)."""
    return " ".join(text.split())


def group(cls: type[T]) -> T:
    """The attrs field of a group of options: those of the settings class ``cls``."""
    return attr.ib(factory=cls, metadata={"group": cls})


def parse_positive_int(value: str) -> int:
    """An integer, at least 1."""
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def parse_count(value: str) -> int:
    """An integer, at least 0."""
    number = int(value)
    if number < 0:
        raise ValueError("cannot be negative")
    return number


def parse_log_level(value: str) -> str:
    """A log level's name, upper case; ``WARN`` is ``WARNING``."""
    level = value.strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _lower_choice(value: str, choices: tuple[str, ...]) -> str:
    """``value`` in lower case, if it is one of ``choices``."""
    chosen = value.strip().lower()
    if chosen not in choices:
        raise ValueError("must be " + " or ".join(choices))
    return chosen


def parse_log_format(value: str) -> str:
    """``mozlog`` or ``text``, in any letter case."""
    return _lower_choice(value, ("mozlog", "text"))


def parse_positive_float(value: str) -> float:
    """A number above 0."""
    number = float(value)
    if not number > 0:
        raise ValueError("must be above 0")
    return number


# Antenna's storage and publisher classes that antenna-tw does not have:
# naming one stops start-up instead of saving somewhere else.
MISSING_STORAGE_CLASSES = {
    "antenna.ext.gcs.crashstorage.GcsCrashStorage":
        "Antenna's Google Cloud Storage, which antenna-tw does not have; use s3 or fs",
}
# Antenna's publisher classes that antenna-tw does not have.
MISSING_PUBLISHER_CLASSES = {
    "antenna.ext.pubsub.crashpublish.PubSubCrashPublish":
        "Antenna's Google Cloud Pub/Sub, which antenna-tw does not have; use sqs or rabbitmq",
}
CRASHPUBLISH_CLASS_ALIASES = {
    "": "none",
    "antenna.ext.crashpublish_base.NoOpCrashPublish": "none",
    "antenna.ext.sqs.crashpublish.SQSCrashPublish": "sqs",
}


def parse_storage_class(value: str) -> str:
    """The storage class as given, unless it is one of Antenna's that we do not have."""
    if value in MISSING_STORAGE_CLASSES:
        raise ValueError(MISSING_STORAGE_CLASSES[value])
    return value


def parse_raw_crash_layout(value: str) -> str:
    """``v2`` or ``v1``, in any letter case."""
    return _lower_choice(value, ("v2", "v1"))


def parse_crashpublish_class(value: str) -> str:
    """``none``, ``sqs``, ``rabbitmq`` (Antenna's class paths read as these) or a dotted path."""
    value = value.strip()
    if value in MISSING_PUBLISHER_CLASSES:
        raise ValueError(MISSING_PUBLISHER_CLASSES[value])
    value = CRASHPUBLISH_CLASS_ALIASES.get(value, value)
    if value.lower() == "none":
        return "none"
    if value.lower() in ("sqs", "rabbitmq"):
        value = value.lower()
    elif "." not in value:
        raise ValueError("must be none, sqs, rabbitmq or the dotted path of a publisher class")
    return value


AMQP_SCHEMES = ("amqp", "amqps")


def parse_amqp_url(value: str) -> str:
    """An ``amqp://`` or ``amqps://`` URL with a host (pika reads the rest)."""
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in AMQP_SCHEMES or not parts.hostname:
        raise ValueError("must be amqp://user:password@host:port/vhost (or amqps://)")
    if "ssl_options" in urllib.parse.parse_qs(parts.query):
        # Only pika's blocking start-up check would read it, not the
        # publisher's Twisted connection.
        raise ValueError("its ssl_options query option is not read; name the broker's CA "
                         "with CRASHPUBLISH_AMQP_CA_FILE")
    return value.strip()


def parse_port_description(value: str) -> str:
    """A strports description, or empty; only its kind is checked here (``tcp:``, ``tcp6:``...)."""
    value = value.strip()
    if value and ":" not in value:
        raise ValueError("must be a strports description such as tcp:8001:interface=127.0.0.1")
    return value


# What each parser accepts, in the words of the option reference.
PARSER_TYPES: dict[Callable[[str], Any], str] = {
    str: "string",
    int: "integer",
    parse_positive_int: "integer, at least 1",
    parse_count: "integer, at least 0",
    parse_bool: "boolean: true/false, yes/no, on/off or 1/0",
    parse_bytes: "size in bytes: 26214400, 25m or 25MiB",
    parse_seconds: "duration in seconds: 60, 1.5, 500ms or 10m",
    parse_log_level: "log level: DEBUG, INFO, WARNING (or WARN), ERROR or CRITICAL",
    parse_log_format: "``mozlog`` or ``text``",
    parse_positive_float: "number, above 0",
    parse_raw_crash_layout: "``v2`` or ``v1``",
    parse_crashpublish_class: "``none`` (or empty), ``sqs``, ``rabbitmq`` or a dotted path",
    parse_port_description: "strports description (e.g. ``tcp:8001``), or empty",
}


def type_name(field: attr.Attribute[Any]) -> str:
    """The readable type of an option field; KeyError for a parser nobody described."""
    metadata = field.metadata
    return metadata["type_name"] or PARSER_TYPES[metadata["parser"]]


# Antenna's class paths, read as ours: antenna_tw.storage.STORAGE_ALIASES and
# metrics_class_names below are built from these two tables;
# antenna_tw.throttler.ANTENNA_ALIASES does the reading for the third
# (tests/unit/test_docs.py keeps it in step).
STORAGE_CLASS_ALIASES = {
    "antenna.ext.fs.crashstorage.FSCrashStorage": "fs",
    "antenna.ext.s3.crashstorage.S3CrashStorage": "s3",
    "antenna.ext.crashstorage_base.NoOpCrashStorage": "noop",
}
METRICS_CLASS_ALIASES = {
    "antenna.metrics.DogStatsdMetrics": "statsd",
    "markus.backends.datadog.DatadogMetrics": "statsd",
    "datadog": "statsd",
    "dogstatsd": "statsd",
    "antenna.metrics.LoggingMetrics": "logging",
    "markus.backends.logging.LoggingMetrics": "logging",
    "null": "none",
}


def metrics_class_names(value: str) -> list[str]:
    """METRICS_CLASS's backend names, lowercased, Antenna's spellings read as ours."""
    aliases = {name.lower(): short for name, short in METRICS_CLASS_ALIASES.items()}
    names = [name.strip().lower() for name in value.split(",")]
    return [aliases.get(name, name or "none") for name in names]
THROTTLER_ALIASES = {"antenna.throttler.<NAME>": "antenna_tw.throttler.<NAME>"}


@attr.s(frozen=True, auto_attribs=True)
class AppSettings:
    """Process-wide settings: identity, logging, metrics and error reporting."""

    basedir: str = option(
        "BASEDIR", ".", type_name="directory path",
        doc="""
        Directory holding ``version.json``, which ``GET /__version__`` answers (``{}`` when the
        file is missing).
        """)
    logging_level: str = option(
        "LOGGING_LEVEL", "INFO", parse_log_level,
        doc="""
        Lowest level of the log lines written (to stdout, or where twistd's ``--logfile`` or
        ``--syslog`` says).
        """)
    logging_format: str = option(
        "LOGGING_FORMAT", "mozlog", parse_log_format,
        doc="""
        How each log line is written: ``mozlog`` (one JSON object per line, as Antenna writes) or
        ``text`` (``TIME LEVEL LOGGER CRASH_ID CLIENT MESSAGE``, with ``-`` for a crash id or
        client address the line has not; the Logs section of the architecture page has the details
        and an example).
        """)
    logging_refusals_per_second: float = option(
        "LOGGING_REFUSALS_PER_SECOND", 50.0, parse_positive_float,
        doc="""
        Each process logs at most this many lines a second (in bursts of as many) for uploads it
        refuses (``Discarded=`` answers, 413 and busy answers, each with the client's address and
        the reason); past it, they are only counted, in a warning logged once per
        :envvar:`LOGGING_REPEAT_INTERVAL`, so a flood of hostile requests costs a bounded log
        volume.
        """)
    logging_repeat_interval: float = option(
        "LOGGING_REPEAT_INTERVAL", 60.0, parse_seconds,
        doc="""
        A failure that repeats (a spool write refused by a full disk, a connection refused for lack
        of file descriptors) is logged at once, then at most once per this many seconds with how
        many times it happened meanwhile; a failure with a traceback reaches Sentry as often as it
        is logged.
        """)
    memory_keep_bytes: int = option(
        "MEMORY_KEEP_BYTES", 16 * 1024 * 1024, parse_bytes,
        doc="""
        Freed memory each process keeps for reuse (per malloc arena) instead of handing it back to
        the kernel, with blocks up to 8 MiB served from the heap: glibc's trim and mmap thresholds,
        set at start. Uploads' buffers are then reused instead of faulted in afresh (0-0.2 page
        faults per 400 KB crash instead of 7-19, a steadier p99); the resident memory stays near
        its peak instead of falling back after a burst. 0 leaves glibc's defaults; a
        ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_MMAP_THRESHOLD_`` in the environment wins over it;
        other C libraries ignore it.
        """)
    host_id: str = option(
        "HOST_ID", "",
        doc="""
        Name put into every log line (``Fields.host_id``) and given to Sentry as the server name;
        empty means the machine's hostname.
        """)
    secret_sentry_dsn: str = option(
        "SECRET_SENTRY_DSN", "", secret=True, type_name="Sentry DSN (a URL)",
        doc="""
        Every failure logged at error or critical level (an unhandled error in a request, an
        unreadable spool entry, a worker that died) is sent to this Sentry project, from the Sentry
        client's own thread, with up to 2 s at shutdown for what is still queued. Empty turns
        Sentry off; a value that is not a DSN stops start-up.
        """)
    metrics_class: str = option(
        "METRICS_CLASS", "logging", type_name="comma-separated list of names",
        aliases=METRICS_CLASS_ALIASES,
        doc="""
        Where metrics go: any of ``statsd`` (statsd/DogStatsd packets over UDP), ``prometheus``
        (``GET /metrics`` on the collector's port, for the whole node; :doc:`metrics`), ``logging``
        (debug log lines) and ``none``, in any letter case; an empty value means ``none``.
        """)
    statsd_host: str = option(
        "STATSD_HOST", "localhost", type_name="host name or address",
        doc="""
        Host of the statsd/DogStatsd daemon when :envvar:`METRICS_CLASS` includes ``statsd``;
        looked up once at start-up, and a name that does not resolve stops start-up.
        """)
    statsd_port: int = option(
        "STATSD_PORT", 8125, int,
        doc="""
        UDP port of the statsd/DogStatsd daemon.
        """)
    statsd_namespace: str = option(
        "STATSD_NAMESPACE", "",
        doc="""
        Prefix put before every metric name, joined with a dot; empty means none.
        """)
    config_strict: bool = option(
        "CONFIG_STRICT", False, parse_bool,
        doc="""
        What start-up does with an unknown name that looks like one of the collector's (it begins
        with the first word of an option's name, such as ``CRASHSTORAGE_`` or ``SPOOL_``, or is
        nearly an option's name; the section on unknown names at the top of this page has the
        rule): false logs a warning naming the nearest option, true refuses to start with that
        line.
        """)


@attr.s(frozen=True, auto_attribs=True)
class IntakeSettings:
    """How ``/submit`` reads, limits and answers an upload."""

    dump_field: str = option(
        "DUMP_FIELD", "upload_file_minidump", alternates=("BREAKPAD_DUMP_FIELD",),
        doc="""
        Read for compatibility with Antenna's env files and otherwise unused: every file part of an
        upload is kept as a dump under its own field name.
        """)
    dump_id_prefix: str = option(
        "DUMP_ID_PREFIX", "bp-",
        doc="""
        Put before the crash id in the answer to an accepted crash (``CrashID=bp-<id>``); storage
        uses the bare id.
        """)
    max_payload_size: int = option(
        "MAX_PAYLOAD_SIZE", 25 * 1024 * 1024, parse_bytes,
        doc="""
        Largest request body on the wire, judged from Content-Length or by counting chunked bytes
        as they arrive; a larger upload is answered 413 ``Discarded=too_large`` at once.
        """)
    max_decompressed_size: int = option(
        "MAX_DECOMPRESSED_SIZE", 100 * 1024 * 1024, parse_bytes,
        doc="""
        Largest body after gunzip or inflate (an uncompressed body counts as it is); inflating
        stops as soon as it is passed and the upload is answered 413 ``Discarded=too_large``. A
        request never holds more than this.
        """)
    max_parts: int = option(
        "MAX_PARTS", 256, parse_positive_int,
        doc="""
        Most multipart parts in one upload; one more makes it a broken upload, answered 400
        ``Discarded=malformed_invalid_payload_structure``.
        """)
    request_timeout: float = option(
        "REQUEST_TIMEOUT", 60.0, parse_seconds,
        doc="""
        How long a connection may stay silent, in the headers or mid-body, before it is closed and
        nothing of it kept; ``0`` turns the timeout off.
        """)
    header_timeout: float = option(
        "REQUEST_HEADER_TIMEOUT", 15.0, parse_seconds,
        doc="""
        How long a client may take to send a request's line and headers, counted from the
        connection (or from the first byte of a later request on it), however steadily it sends;
        past it the connection is closed. ``0`` turns it off.
        """)
    min_body_rate: int = option(
        "REQUEST_MIN_BODY_RATE", 1024, parse_bytes,
        doc="""
        Bytes per second a request's body must average, counted from the end of its headers once
        :envvar:`REQUEST_BODY_GRACE` has passed; a slower body's connection is closed and nothing
        of it kept. ``0`` turns the check off.
        """)
    body_rate_grace: float = option(
        "REQUEST_BODY_GRACE", 20.0, parse_seconds,
        doc="""
        Seconds a body may take before :envvar:`REQUEST_MIN_BODY_RATE` is checked.
        """)
    max_connections: int = option(
        "MAX_CONNECTIONS", 0, parse_count,
        doc="""
        Connections one process serves at once; a connection past it is answered 503
        ``Discarded=busy`` with ``Retry-After`` and closed. ``0`` (the default) takes the process's
        descriptor limit (its soft limit, raised to the hard limit at start) less an eighth of it,
        at least 64, kept for spool, storage and log files.
        """)
    max_inflight_bytes: int = option(
        "MAX_INFLIGHT_BYTES", 1024 * 1024 * 1024, parse_bytes,
        doc="""
        Bytes all the uploads being received may hold at once, split evenly between the workers.
        The upload that takes the total past it while others hold bytes too is answered 503
        ``Discarded=busy`` with ``Retry-After`` at once; a lone upload is bounded by
        :envvar:`MAX_DECOMPRESSED_SIZE` alone.
        """)
    stage_submitter_bearer_token: str = option(
        "STAGE_SUBMITTER_BEARER_TOKEN", "", secret=True,
        alternates=("BREAKPAD_STAGE_SUBMITTER_BEARER_TOKEN",),
        doc="""
        A client sending ``Authorization: Bearer <token>`` with this token may choose its crash's
        id with a ``uuid`` field. Empty means nobody may: a ``uuid`` is then answered 401
        ``Discarded=unauthorized_uuid``.
        """)


@attr.s(frozen=True, auto_attribs=True)
class ThrottleSettings:
    """Which throttle rules decide what is kept, and which products they know."""

    throttle_rules: str = option(
        "THROTTLE_RULES", "antenna_tw.throttler.ACCEPT_ALL",
        type_name="dotted path to a Python attribute", aliases=THROTTLER_ALIASES,
        alternates=("BREAKPAD_THROTTLER_RULES",),
        doc="""
        The list of throttle rules that decides, crash by crash, what is kept; imported once at
        start-up, and a path that does not import or a rule that is not valid stops start-up.
        ``antenna_tw.throttler.MOZILLA_RULES`` is Mozilla's set.
        """)
    products: str = option(
        "PRODUCTS", "antenna_tw.throttler.ALL_PRODUCTS",
        type_name="dotted path to a Python attribute", aliases=THROTTLER_ALIASES,
        alternates=("BREAKPAD_THROTTLER_PRODUCTS",),
        doc="""
        The list of product names the rules may check against (``throttler.products``); the default
        is an empty list.
        """)
    product_packagenames: str = option(
        "PRODUCT_PACKAGENAMES", "antenna_tw.throttler.ALL_PRODUCT_PACKAGENAMES",
        type_name="dotted path to a Python attribute", aliases=THROTTLER_ALIASES,
        alternates=("BREAKPAD_THROTTLER_PRODUCT_PACKAGENAMES",),
        doc="""
        A mapping of product name to the Android package names accepted for it
        (``throttler.product_packagenames``); the default is an empty mapping.
        """)


@attr.s(frozen=True, auto_attribs=True)
class AwsSettings:
    """
    How one AWS service is reached: its region, an endpoint of your own, the
    key pair. Declared once; ``aws_settings`` names its options for a service
    (``{prefix}`` is ``CRASHSTORAGE_`` for S3, ``CRASHPUBLISH_`` for SQS).
    """

    region: str = option(
        "{prefix}REGION", "us-west-2", type_name="AWS region name",
        alternates=("CRASHMOVER_{prefix}REGION", "S3_REGION"),
        doc="""
        Region of the {service} {thing}, used to sign requests and to name the AWS endpoint.
        """)
    endpoint_url: str = option(
        "{prefix}ENDPOINT_URL", "", type_name="http(s) URL",
        alternates=("CRASHMOVER_{prefix}ENDPOINT_URL", "S3_ENDPOINT_URL"),
        doc="""
        Base URL of a {service}-compatible server ({servers}); empty means AWS.
        """)
    access_key: str = option(
        "{prefix}ACCESS_KEY", "", secret=True, alternates=("CRASHMOVER_{prefix}ACCESS_KEY",),
        doc="""
        {service} access key id, set together with :envvar:`{prefix}SECRET_ACCESS_KEY`; with both
        empty, credentials come from botocore's chain (``AWS_ACCESS_KEY_ID``, ``~/.aws``, a
        container or instance role). One set without the other stops start-up.
        """)
    secret_access_key: str = option(
        "{prefix}SECRET_ACCESS_KEY", "", secret=True,
        alternates=("CRASHMOVER_{prefix}SECRET_ACCESS_KEY",),
        doc="""
        {service} secret access key, the pair of :envvar:`{prefix}ACCESS_KEY`.
        """)

    @property
    def key_names(self) -> tuple[str, str]:
        """The names of the key pair's two options, for messages."""
        fields = attr.fields(type(self))
        return fields.access_key.metadata["key"], fields.secret_access_key.metadata["key"]


def aws_settings(prefix: str, service: str, thing: str, servers: str) -> type[AwsSettings]:
    """
    AwsSettings whose options are named and documented for one service: its
    option names begin with ``prefix``; ``thing`` is what it holds (bucket,
    queue) and ``servers`` the compatible servers named in the docs.
    """
    words = {"prefix": prefix, "service": service, "thing": thing, "servers": servers}
    these = {
        field.name: attr.ib(default=field.default, repr=field.repr, metadata={
            **field.metadata,
            "key": field.metadata["key"].format(**words),
            "alternates": tuple(name.format(**words) for name in field.metadata["alternates"]),
            "doc": field.metadata["doc"].format(**words),
        })
        for field in attr.fields(AwsSettings)
    }
    named = type(f"{service}Settings", (AwsSettings,), {
        "__doc__": f"How {service} is reached: options ``{prefix}*``."})
    return attr.s(these=these, frozen=True)(named)


S3Settings = aws_settings("CRASHSTORAGE_", "S3", "bucket", "MinIO, LocalStack, moto")
SqsSettings = aws_settings("CRASHPUBLISH_", "SQS", "queue", "LocalStack, moto")


@attr.s(frozen=True, auto_attribs=True)
class StorageSettings:
    """Where the crash movers save crashes: a directory, an S3 bucket, or a class of your own."""

    crashstorage_class: str = option(
        "CRASHSTORAGE_CLASS", "fs", parse_storage_class, type_name="name or dotted path to a class",
        aliases=STORAGE_CLASS_ALIASES, alternates=("CRASHMOVER_CRASHSTORAGE_CLASS",),
        doc="""
        ``fs`` saves crashes under :envvar:`CRASHSTORAGE_FS_ROOT`, ``s3`` to the bucket
        :envvar:`CRASHSTORAGE_BUCKET_NAME`, ``noop`` nowhere; any other value is the dotted path of
        a storage class of your own. Antenna's ``antenna.ext.gcs.crashstorage.GcsCrashStorage``
        stops start-up: there is no Google Cloud Storage here.
        """)
    fs_root: str = option(
        "CRASHSTORAGE_FS_ROOT", "./antenna_crashes", type_name="directory path",
        alternates=("CRASHMOVER_CRASHSTORAGE_FS_ROOT",),
        doc="""
        Root directory of ``fs`` storage; each crash goes under ``<root>/<YYYYMMDD>/``.
        """)
    aws: AwsSettings = group(S3Settings)
    bucket_name: str = option(
        "CRASHSTORAGE_BUCKET_NAME", "", alternates=("CRASHMOVER_CRASHSTORAGE_BUCKET_NAME",),
        doc="""
        The S3 bucket crashes are saved to; required with ``s3`` storage, and checked with a HEAD
        request before the port opens.
        """)
    raw_crash_layout: str = option(
        "CRASHSTORAGE_RAW_CRASH_LAYOUT", "v2", parse_raw_crash_layout,
        doc="""
        Where S3 storage writes the raw crash: ``v2`` at ``v2/raw_crash/<first 3 characters of
        id>/<YYYYMMDD>/<id>``; ``v1`` at ``v1/raw_crash/<YYYYMMDD>/<id>``, where Antenna wrote it
        from 2022 to 2024, for processors that read it there. Dumps and dump names are at the same
        keys either way (:doc:`s3`).
        """)


@attr.s(frozen=True, auto_attribs=True)
class SpoolSettings:
    """The durable local queue holding every accepted crash, and the crash movers draining it."""

    spool_dir: str = option(
        "SPOOL_DIR", "./antenna_spool", type_name="directory path",
        doc="""
        Directory where every accepted crash is written before it is answered, and waits until it
        is stored (with workers, one shard ``worker-<i>`` each); put it on a volume that outlives
        the machine.
        """)
    spool_fsync: bool = option(
        "SPOOL_FSYNC", False, parse_bool,
        doc="""
        fsync each spool entry and its directory before answering, so an answered crash survives a
        power loss; each answer then waits for the disk's flush (about 1 ms on the development VM,
        see :doc:`spool`).
        """)
    spool_direct_io: bool = option(
        "SPOOL_DIRECT_IO", True, parse_bool,
        doc="""
        Write dumps with ``O_DIRECT``, past the page cache; where the filesystem refuses it (tmpfs,
        some network filesystems) the process falls back to ordinary writes by itself.
        """)
    spool_max_bytes: int = option(
        "SPOOL_MAX_BYTES", 10 * 1024 * 1024 * 1024, parse_bytes,
        doc="""
        Most bytes the spool may hold, split evenly between the workers; past its share a worker
        answers ``/submit`` with 503 ``Discarded=busy`` and ``Retry-After``.
        """)
    spool_min_free_bytes: int = option(
        "SPOOL_MIN_FREE_BYTES", 512 * 1024 * 1024, parse_bytes,
        doc="""
        Free space the spool's filesystem must keep; below it ``/submit`` answers 503
        ``Discarded=busy`` (not split: the workers share the disk).
        """)
    spool_max_age: float = option(
        "SPOOL_MAX_AGE", 600.0, parse_seconds,
        doc="""
        ``/__heartbeat__`` answers 503 with a ``crashmover`` error when the oldest crash not yet
        stored has waited longer than this.
        """)
    concurrent_crashmovers: int = option(
        "CONCURRENT_CRASHMOVERS", 0, parse_count,
        alternates=("CRASHMOVER_CONCURRENT_CRASHMOVERS",),
        doc="""
        Crashes each process saves to storage at once; with S3, also its number of persistent
        connections. 0 (the default) picks by storage: 2 for storage that stores spooled files in
        a thread (the filesystem: each mover moves up to 16 crashes a thread-pool job), 64 for
        storage that saves on the reactor (S3: each mover mostly waits for the network). See
        :doc:`performance`.
        """)
    crashmover_handoff_bytes: int = option(
        "CRASHMOVER_HANDOFF_BYTES", 32 * 1024 * 1024, parse_bytes,
        doc="""
        Bytes of accepted crashes each process keeps in memory after spooling them, for storage
        that sends them from memory (S3): the crash movers save those without reading the spool
        back. Past it, crashes are read back from the spool; crashes found at start-up always are.
        0 reads every crash back. The filesystem storage links the spool's files into place and
        keeps none. See :doc:`spool`.
        """)
    crashmover_retry_base_delay: float = option(
        "CRASHMOVER_RETRY_BASE_DELAY", 1.0, parse_seconds,
        doc="""
        Wait after a crash's first failed save; it doubles with each failure in a row up to
        :envvar:`CRASHMOVER_RETRY_MAX_DELAY`, jittered. A crash is never dropped.
        """)
    crashmover_retry_max_delay: float = option(
        "CRASHMOVER_RETRY_MAX_DELAY", 60.0, parse_seconds,
        doc="""
        Longest wait between two tries to save one crash, and about how often storage is probed
        while it is down.
        """)
    shutdown_timeout: float = option(
        "SHUTDOWN_TIMEOUT", 30.0, parse_seconds,
        doc="""
        How long the crash movers may go on saving after SIGTERM; what is not stored by then stays
        in the spool for the next start.
        """)
    graceful_timeout: float = option(
        "GRACEFUL_TIMEOUT", 5.0, parse_seconds,
        doc="""
        How long the requests in progress at SIGTERM (an upload still arriving; gunicorn names it
        ``graceful_timeout``) may take to finish: the port is closed, each is answered as usual and
        its connection closed; one still arriving after it is answered 503 ``Discarded=busy``.
        Counted within :envvar:`SHUTDOWN_TIMEOUT` (at most all of it). See :doc:`spool`.
        """)


@attr.s(frozen=True, auto_attribs=True)
class PublishSettings:
    """Where the id of each stored crash is published, for the processors to pick it up."""

    crashpublish_class: str = option(
        "CRASHPUBLISH_CLASS", "none", parse_crashpublish_class,
        aliases={path: short for path, short in CRASHPUBLISH_CLASS_ALIASES.items() if path},
        alternates=("CRASHMOVER_CRASHPUBLISH_CLASS",),
        doc="""
        ``none`` publishes nothing; ``sqs`` sends each stored crash's id to the SQS queue
        :envvar:`CRASHPUBLISH_QUEUE_NAME`; ``rabbitmq`` publishes it to a RabbitMQ queue; any other
        value is the dotted path of a publisher class of your own. Antenna's Pub/Sub publisher
        stops start-up: there is no Pub/Sub here. See :doc:`publishing`.
        """)
    accepted_only: bool = option(
        "CRASHPUBLISH_ACCEPTED_ONLY", False, parse_bool,
        doc="""
        false publishes every stored crash, as Antenna does; true publishes only those the throttle
        rules accepted (``ACCEPT``, the id's throttle digit 0), not the deferred ones, as the 2018
        pipeline did.
        """)
    # SQS (antenna_tw/ext/sqs.py)
    queue_name: str = option(
        "CRASHPUBLISH_QUEUE_NAME", "", alternates=("CRASHMOVER_CRASHPUBLISH_QUEUE_NAME",),
        doc="""
        Name of the SQS queue crash ids are sent to; required with ``sqs``, and resolved with
        ``GetQueueUrl`` before the port opens.
        """)
    aws: AwsSettings = group(SqsSettings)
    verify_message: bool = option(
        "CRASHPUBLISH_VERIFY_MESSAGE", True, parse_bool,
        doc="""
        Send Antenna's start-up verification message, the body ``test`` (which Socorro's processor
        ignores), to the queue before the port opens; false sends nothing at start.
        """)
    # RabbitMQ (antenna_tw/ext/rabbitmq.py)
    amqp_url: str = option(
        "CRASHPUBLISH_AMQP_URL", "amqp://guest:guest@localhost:5672/%2F", parse_amqp_url,
        secret=True, type_name="AMQP URL",
        doc="""
        The RabbitMQ broker of ``rabbitmq``, with user, password and virtual host:
        ``amqp://user:password@host:5672/vhost`` (``%2F`` is the virtual host ``/``; ``amqps://``
        for TLS, see :envvar:`CRASHPUBLISH_AMQP_CA_FILE`; pika's query options such as
        ``?heartbeat=30`` apply, but for ``ssl_options``). A secret: the option log
        masks it, and errors show it with the password masked. Checked before the port opens by
        connecting and declaring the queue. The default is RabbitMQ's own ``guest`` user on this
        machine, ``amqp://guest:guest@localhost:5672/%2F``.
        """)
    amqp_ca_file: str = option(
        "CRASHPUBLISH_AMQP_CA_FILE", "", type_name="file path",
        doc="""
        With an ``amqps://`` :envvar:`CRASHPUBLISH_AMQP_URL`: a PEM file of the certificate
        authorities the broker's certificate must chain to, in place of the system's store (for a
        broker with a certificate of a private CA); read at start. Empty trusts the system's store,
        as OpenSSL finds it (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` apply), which managed brokers'
        certificates chain to. Either way the certificate must name the URL's host.
        """)
    amqp_queue: str = option(
        "CRASHPUBLISH_AMQP_QUEUE", "socorro.normal",
        doc="""
        The queue crash ids go to with ``rabbitmq``; declared durable on every connection (see
        :envvar:`CRASHPUBLISH_AMQP_DECLARE_QUEUE`). ``socorro.normal`` is the queue Socorro's
        processor reads.
        """)
    amqp_exchange: str = option(
        "CRASHPUBLISH_AMQP_EXCHANGE", "",
        doc="""
        Exchange crash ids are published to; empty means the default exchange, which routes by
        queue name. A named exchange must exist (checked at start) and route the routing key to a
        queue: an id that reaches no queue is returned by the broker and published again later,
        never counted as published.
        """)
    amqp_routing_key: str = option(
        "CRASHPUBLISH_AMQP_ROUTING_KEY", "",
        doc="""
        Routing key of every message; empty means :envvar:`CRASHPUBLISH_AMQP_QUEUE`.
        """)
    amqp_declare_queue: bool = option(
        "CRASHPUBLISH_AMQP_DECLARE_QUEUE", True, parse_bool,
        doc="""
        true declares :envvar:`CRASHPUBLISH_AMQP_QUEUE` as a durable classic queue (creating it if
        missing); false only checks that it exists, for a queue its owner declared otherwise (a
        quorum queue, a queue with arguments), which a durable declare would be refused for.
        """)
    amqp_timeout: float = option(
        "CRASHPUBLISH_AMQP_TIMEOUT", 10.0, parse_seconds,
        doc="""
        Longest wait for a connection to the broker, for its confirms of one batch of ids, and for
        the ``/__heartbeat__`` check; past it the connection is dropped and the unconfirmed ids are
        published again.
        """)


@attr.s(frozen=True, auto_attribs=True)
class ConsoleSettings:
    """The crash console: pages and a JSON API about this node and its crashes (:doc:`console`)."""

    console_port: str = option(
        "CONSOLE_PORT", "", parse_port_description,
        doc="""
        Where the console listens, as a strports description of its own, never the ``/submit``
        port, read as ``--port`` is: ``tcp:8001`` listens on 127.0.0.1 unless it names an
        ``interface``. Empty (the
        default) turns the console off. A console on an interface other than loopback without
        :envvar:`SECRET_CONSOLE_TOKEN` stops start-up. With ``--workers N`` the supervising parent
        serves it.
        """)
    secret_console_token: str = option(
        "SECRET_CONSOLE_TOKEN", "", secret=True,
        doc="""
        The console's credential: its pages ask for it once and keep a signed login cookie, its API
        takes ``Authorization: Bearer <token>``. Empty lets anyone who can reach a loopback console
        in.
        """)
    console_recent_crashes: int = option(
        "CONSOLE_RECENT_CRASHES", 500, parse_positive_int,
        doc="""
        How many of the newest crashes the console's recent list shows.
        """)


@attr.s(frozen=True, auto_attribs=True)
class Config:
    """Every component's settings, as read at start-up: one group of options each."""

    app: AppSettings = group(AppSettings)
    intake: IntakeSettings = group(IntakeSettings)
    throttle: ThrottleSettings = group(ThrottleSettings)
    storage: StorageSettings = group(StorageSettings)
    spool: SpoolSettings = group(SpoolSettings)
    publish: PublishSettings = group(PublishSettings)
    console: ConsoleSettings = group(ConsoleSettings)
    # One line per unknown name that looks like an option (unknown_name_messages).
    warnings: tuple[str, ...] = ()

    def value_of(self, path: str) -> Any:
        """The value of the option at ``path`` (``storage.aws.region``), from ``all_options``."""
        value: Any = self
        for name in path.split("."):
            value = getattr(value, name)
        return value

    def summary(self) -> str:
        """
        The options in one line, for the start-up log: those not at their
        defaults as ``KEY=value`` (secrets masked, a value with a space or
        quote in JSON quotes), sorted by key, then how many are at their
        defaults (listed in docs/configuration.rst).
        """
        changed = []
        defaults = 0
        for path, field in all_options():
            value = self.value_of(path)
            if value == field.default:
                defaults += 1
                continue
            shown = "*****" if field.metadata["secret"] and value else str(value)
            if not shown or any(char in shown for char in " \"'\\") or not shown.isprintable():
                shown = json.dumps(shown)
            changed.append(f"{field.metadata['key']}={shown}")
        return (f"configuration: {' '.join(sorted(changed)) or 'all defaults'}"
                f" ({len(changed)} set, {defaults} at their defaults)")



# Config's groups by name, in its order (the option reference's sections).
SETTINGS_CLASSES: dict[str, type[attr.AttrsInstance]] = {
    field.name: field.metadata["group"] for field in attr.fields(Config)
    if "group" in field.metadata
}

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_env_file(path: str) -> dict[str, str]:
    """
    Read ``KEY=value`` lines; ``#`` starts a comment line; values may be quoted.

    A missing file or a line that is not an assignment is a ConfigError.
    """
    values: dict[str, str] = {}
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


def option_names(field: attr.Attribute[Any]) -> tuple[str, ...]:
    """The names an option is read from: its own, then its alternates in order."""
    return (field.metadata["key"], *field.metadata["alternates"])


def fields_of(cls: type[attr.AttrsInstance]) -> list[attr.Attribute[Any]]:
    """The option fields of a settings class, those of its groups (``aws``) included."""
    return [field for _, field in _options_of(cls, "")]


def _options_of(cls: type[attr.AttrsInstance],
                prefix: str) -> list[tuple[str, attr.Attribute[Any]]]:
    options = []
    for field in attr.fields(cls):
        path = prefix + field.name
        if "group" in field.metadata:
            options += _options_of(field.metadata["group"], path + ".")
        else:
            options.append((path, field))
    return options


def all_options() -> list[tuple[str, attr.Attribute[Any]]]:
    """Every option as ``(path in Config, field)``: ``("storage.aws.region", <field>)``."""
    return [option for name, cls in SETTINGS_CLASSES.items()
            for option in _options_of(cls, name + ".")]


def all_fields() -> list[attr.Attribute[Any]]:
    """Every option's field, of every settings class."""
    return [field for _, field in all_options()]


def known_names() -> set[str]:
    """Every name an option is read from, alternates included."""
    return {name for field in all_fields() for name in option_names(field)}


def collector_prefixes() -> set[str]:
    """
    The first word (up to and including the first ``_``) of every name an
    option is read from; a one-word name (``BASEDIR``) gives none.
    """
    return {name.split("_", 1)[0] + "_" for name in known_names() if "_" in name}


# Antenna's names (of any year) that antenna-tw knowingly does not read,
# with why; an unknown name among them gets this instead of a guess.
ANTENNA_ONLY_NAMES = {
    "CRASHMOVER_MAX_ATTEMPTS": "a failed save is retried until it succeeds",
    "CRASHMOVER_RETRY_SLEEP_SECONDS": "see CRASHMOVER_RETRY_BASE_DELAY",
    "CRASHSTORAGE_CONNECTION_CLASS": "the S3 connection is built in",
    "CRASHMOVER_CRASHSTORAGE_CONNECTION_CLASS": "the S3 connection is built in",
}
ANTENNA_ONLY_NAMES.update(
    (prefix + pubsub, "Pub/Sub's: antenna-tw does not publish to Pub/Sub")
    for pubsub in ("PROJECT_ID", "TOPIC_NAME", "SERVICE_ACCOUNT_FILE", "TIMEOUT")
    for prefix in ("CRASHPUBLISH_", "CRASHMOVER_CRASHPUBLISH_"))


# How alike (difflib's ratio) a name without a collector prefix must be to
# an option's name to count as a misspelling of it.
NEAR_MISS = 0.85


def unknown_name_messages(source: Iterable[str]) -> list[str]:
    """
    One line for each name in ``source`` that no option reads and that
    either begins like the collector's names (``collector_prefixes``) or is
    a near miss of one of them (``NEAR_MISS``: ``CONCURENT_CRASHMOVERS``).
    Only names are shown, never values.
    """
    known = sorted(known_names())
    prefixes = tuple(collector_prefixes())
    messages = []
    for name in sorted(set(source).difference(known)):
        if not (name.startswith(prefixes)
                or difflib.get_close_matches(name, known, n=1, cutoff=NEAR_MISS)):
            continue
        if name in ANTENNA_ONLY_NAMES:
            messages.append(f"`{name}` is Antenna's and not an option of antenna-tw "
                            f"({ANTENNA_ONLY_NAMES[name]})")
            continue
        nearest = difflib.get_close_matches(name, known, n=1)
        message = f"`{name}` is not an option"
        if nearest:
            message += f"; did you mean `{nearest[0]}`?"
        messages.append(message)
    return messages


def _build(cls: type[attr.AttrsInstance], source: Mapping[str, str]) -> Any:
    kwargs = {}
    for field in attr.fields(cls):
        if "group" in field.metadata:
            kwargs[field.name] = _build(field.metadata["group"], source)
            continue
        secret = field.metadata["secret"]
        given = [(name, source[name]) for name in option_names(field) if name in source]
        if not given:
            continue
        key, raw = given[0]
        for other, value in given[1:]:
            if value != raw:
                shown = "" if secret else f" ({raw!r} and {value!r})"
                raise ConfigError(f"{key} and {other} are both set, to different values"
                                  f"{shown}: keep one")
        try:
            kwargs[field.name] = field.metadata["parser"](raw)
        except (TypeError, ValueError) as error:
            shown = "*****" if secret else repr(raw)
            raise ConfigError(f"{key}={shown} is invalid: {error}") from None
    return cls(**kwargs)


def load_config(environ: Mapping[str, str] | None = None,
                env_file: str | None = None) -> Config:
    """
    Build a Config from an env file (``env_file``, else ``ANTENNA_ENV``) and
    the environment, which wins over the file.

    Each option is read from its own name, else from its first alternate
    that is set; two of its names set to different values stop start-up.
    Names that look like the collector's but are no option's are in
    ``Config.warnings``, or stop start-up with ``CONFIG_STRICT``.
    """
    environ = dict(os.environ if environ is None else environ)
    env_file = env_file or environ.get("ANTENNA_ENV")
    source = read_env_file(env_file) if env_file else {}
    source.update(environ)
    settings = {name: _build(cls, source) for name, cls in SETTINGS_CLASSES.items()}
    warnings = unknown_name_messages(source)
    if warnings and settings["app"].config_strict:
        more = f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""
        raise ConfigError(f"{warnings[0]}{more}; CONFIG_STRICT is on")
    return Config(**settings, warnings=tuple(warnings))
