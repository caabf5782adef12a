"""
Every metric the collector emits: its name (without ``STATSD_NAMESPACE``),
type, tag names and meaning. Call sites use the constants below; the docs'
metrics page is rendered from ``METRICS``; ``check`` is what a checked
``Metrics`` (tests) runs on each emitted metric.

The names are Antenna's statsd names, so dashboards keep working.
"""

from __future__ import annotations

from collections.abc import Iterable

import attr

TYPES = ("incr", "gauge", "timing", "histogram")


def _tag_names(tags: Iterable[str]) -> tuple[str, ...]:
    # A named converter: attrs' mypy plugin types the field's argument from it.
    return tuple(tags)


@attr.s(frozen=True, slots=True)
class MetricSpec:
    """One metric: ``tags`` are the tag names every emission carries."""

    name: str = attr.ib()
    type: str = attr.ib(validator=attr.validators.in_(TYPES))
    doc: str = attr.ib(default="")
    tags: tuple[str, ...] = attr.ib(default=(), converter=_tag_names)


INCOMING_CRASH = "breakpad_resource.incoming_crash"
MALFORMED = "breakpad_resource.malformed"
UNAUTHORIZED_UUID = "breakpad_resource.unauthorized_uuid"
THROTTLE_RULE = "breakpad_resource.throttle_rule"
THROTTLE = "breakpad_resource.throttle"
BUSY = "breakpad_resource.busy"
ON_POST_TIME = "breakpad_resource.on_post.time"
SAVE_QUEUE_SIZE = "breakpad_resource.save_queue_size"
SAVE_CRASH_COUNT = "breakpad_resource.save_crash.count"
SAVE_CRASH_EXCEPTION_COUNT = "breakpad_resource.save_crash_exception.count"
CRASH_SAVE_TIME = "breakpad_resource.crash_save.time"
CRASH_HANDLING_TIME = "breakpad_resource.crash_handling.time"
PUBLISH_CRASH_COUNT = "breakpad_resource.publish_crash.count"
PUBLISH_CRASH_EXCEPTION_COUNT = "breakpad_resource.publish_crash_exception.count"
CRASH_PUBLISH_TIME = "breakpad_resource.crash_publish.time"
PUBLISH_QUEUE_SIZE = "breakpad_resource.publish_queue_size"
HEALTH_LBHEARTBEAT_COUNT = "health.lbheartbeat.count"
HEALTH_HEARTBEAT_COUNT = "health.heartbeat.count"
HEALTH_VERSION_COUNT = "health.version.count"
HEALTH_BROKEN_COUNT = "health.broken.count"

# In the order the docs list them: intake, throttling, saving, publishing, health.
METRICS = (
    MetricSpec(INCOMING_CRASH, "incr", "A crash report was parsed, before throttling."),
    MetricSpec(MALFORMED, "incr",
               "An upload was refused (400; 401 for ``unauthorized_uuid``, 413 for "
               "``too_large``); ``reason`` is its ``Discarded=`` reason without "
               "``malformed_``, as Antenna's, e.g. ``no_content_type``, ``bad_gzip`` "
               "(:doc:`intake`).",
               tags=("reason",)),
    MetricSpec(UNAUTHORIZED_UUID, "incr",
               "An upload carried a ``uuid`` field without a valid bearer token (401; "
               "also counted as ``malformed``)."),
    MetricSpec(THROTTLE_RULE, "incr",
               "The throttle rule that decided a crash; ``rule`` is its name.",
               tags=("rule",)),
    MetricSpec(THROTTLE, "incr",
               "The throttle result of a crash: ``result`` is ``accept``, ``defer``, "
               "``reject`` or ``fakeaccept``.",
               tags=("result",)),
    MetricSpec(BUSY, "incr",
               "An upload was answered 503 ``Discarded=busy`` (spool full or uploads in "
               "flight over their memory limit)."),
    MetricSpec(ON_POST_TIME, "timing",
               "Milliseconds in the ``/submit`` handler, parsed request to answer."),
    MetricSpec(SAVE_QUEUE_SIZE, "gauge",
               "Crashes accepted but not yet stored, at each change and at each heartbeat."),
    MetricSpec(SAVE_CRASH_COUNT, "incr", "A crash was stored."),
    MetricSpec(SAVE_CRASH_EXCEPTION_COUNT, "incr",
               "A save failed; the crash stays in the spool and is retried."),
    MetricSpec(CRASH_SAVE_TIME, "timing",
               "Milliseconds of one successful move: read from the spool (with S3, often "
               "handed over in memory instead), save, delete."),
    MetricSpec(CRASH_HANDLING_TIME, "timing",
               "Milliseconds from accepted to stored, retries included."),
    MetricSpec(PUBLISH_CRASH_COUNT, "incr",
               "Crash ids published (counted by the number confirmed in one publish call), "
               "with :envvar:`CRASHPUBLISH_CLASS` set (:doc:`publishing`)."),
    MetricSpec(PUBLISH_CRASH_EXCEPTION_COUNT, "incr",
               "A publish call left ids unpublished; they stay in the spool and are retried."),
    MetricSpec(CRASH_PUBLISH_TIME, "timing",
               "Milliseconds of one publish call (up to the publisher's batch of ids), "
               "failed ones included."),
    MetricSpec(PUBLISH_QUEUE_SIZE, "gauge",
               "Stored crashes whose ids are not yet published, at each change and at each "
               "heartbeat."),
    MetricSpec(HEALTH_LBHEARTBEAT_COUNT, "incr", "A ``GET /__lbheartbeat__``."),
    MetricSpec(HEALTH_HEARTBEAT_COUNT, "incr", "A ``GET /__heartbeat__``."),
    MetricSpec(HEALTH_VERSION_COUNT, "incr", "A ``GET /__version__``."),
    MetricSpec(HEALTH_BROKEN_COUNT, "incr", "A ``GET /__broken__``."),
)

REGISTRY = {spec.name: spec for spec in METRICS}
assert len(REGISTRY) == len(METRICS), "a metric is registered twice"


class UnregisteredMetric(ValueError):
    """A metric that is not in the registry, or not as registered."""


def check(stat_type: str, name: str, tags: Iterable[str] | None = None) -> None:
    """Raise UnregisteredMetric unless ``name`` is registered with this type and tag names."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise UnregisteredMetric(f"metric {name!r} is not in antenna_tw.metricnames")
    if stat_type != spec.type:
        raise UnregisteredMetric(
            f"metric {name!r} is registered as {spec.type}, emitted as {stat_type}")
    keys = sorted(tag.partition(":")[0] for tag in tags or ())
    if keys != sorted(spec.tags):
        raise UnregisteredMetric(
            f"metric {name!r} has tags {list(spec.tags)}, emitted with {keys}")
