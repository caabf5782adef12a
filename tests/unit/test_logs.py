"""
The mozlog observer writes exactly the line ``json.dumps`` made of the
record before it built lines by hand, and its level filter passes exactly
what twisted's ``FilteringLogObserver`` with a ``LogLevelFilterPredicate``
passed.
"""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    formatEvent,
)
from twisted.logger._flatten import flattenEvent
from twisted.python.failure import Failure

from antenna_tw import logs
from antenna_tw.logs import (
    LEVELS,
    SEVERITY,
    LevelFilter,
    MozLogObserver,
    format_message,
    make_observer,
)

ALL_LEVELS = list(LogLevel.iterconstants())


def reference_line(observer, event):
    """The line as the observer wrote it with json.dumps and formatEvent."""
    level = event.get("log_level", LogLevel.info)
    fields = {"host_id": observer.host_id or observer.hostname, "msg": formatEvent(event)}
    failure = event.get("log_failure")
    if failure is not None:
        fields["error"] = repr(failure.value)
        fields["traceback"] = failure.getTraceback()
    record = {
        "Timestamp": int(event.get("log_time") * 1e9),
        "Type": event.get("log_namespace") or "antenna",
        "Logger": "antenna",
        "Hostname": observer.hostname,
        "EnvVersion": "2.0",
        "Severity": SEVERITY.get(level, 6),
        "Pid": observer.pid,
        "Fields": fields,
    }
    return json.dumps(record, default=repr) + "\n"


def observed(observer_args, event):
    lines = []
    MozLogObserver(lines.append, *observer_args)(dict(event))
    return lines


def emitted(logger_namespace, level, log_format, **kwargs):
    """The event a Logger emits."""
    events = []
    Logger(namespace=logger_namespace, observer=events.append).emit(level, log_format, **kwargs)
    return events[0]


class Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr")

    __str__ = __format__ = __repr__


FORMATS = [
    "{crash_id}: matched by {rule}; returned {result}",
    "{crash_id} saved",
    "no fields at all",
    "{value!r} and {value!s} and {value:>12}",
    "{value.__class__.__name__}",  # twisted wraps values: "PotentialCallWrapper"
    "{value[0]}",
    "{value:{width.real}}",
    "{value:{width}} {value:>{width}.3}",
    "{oldest:.0f} s old",
    "{{literal braces}} {value}",
    "{missing}",
    "{value()}",  # twisted's call syntax
    "{0}",
    "{}",
    "{",
    "}",
    "{value!x}",
    "{value:{width}}",
    "",
    None,
]


@pytest.mark.parametrize("log_format", FORMATS)
@pytest.mark.parametrize("value", ["text", 12, 1.5, None, ["a", "b"], {"k": "v"},
                                   lambda: "called", Unprintable(),
                                   "caf\u00e9 \u2603 \"q\"\n\t\x00"])
def test_lines_are_what_json_dumps_made(log_format, value):
    event = emitted("antenna_tw.submit.SubmitHandler", LogLevel.info, log_format,
                    crash_id="c0ffee", rule="accept_everything", result="ACCEPT",
                    value=value, width=7, oldest=12.34)
    observer = MozLogObserver(None, "host-id", "host.name", 4242)
    lines = observed(("host-id", "host.name", 4242), event)
    assert lines == [reference_line(observer, event)]
    assert format_message(event) == formatEvent(event)
    json.loads(lines[0])


texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from(
    ["\ud800", "\x00", "\u2028", '"', "\\", "{", "}"]))


@given(namespace=texts, message=texts, host_id=texts, hostname=texts,
       level=st.sampled_from(ALL_LEVELS), log_time=st.floats(0, 4e9),
       pid=st.integers(0, 2**22))
def test_any_text_makes_the_same_line(namespace, message, host_id, hostname, level,
                                      log_time, pid):
    event = emitted(namespace, level, "{message} ({namespace})", message=message,
                    namespace=namespace)
    event["log_time"] = log_time
    observer = MozLogObserver(None, host_id, hostname, pid)
    assert observed((host_id, hostname, pid), event) == [reference_line(observer, event)]


@pytest.mark.parametrize("namespace", [None, "", 12, ("a", "b")])
def test_odd_namespaces_make_the_same_line(namespace):
    event = emitted("x", LogLevel.warn, "{value}", value="v")
    event["log_namespace"] = namespace
    observer = MozLogObserver(None, "", "host", 1)
    assert observed(("", "host", 1), event) == [reference_line(observer, event)]


def test_failures_keep_error_and_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        failure = Failure()
    event = emitted("antenna_tw.crashmover.CrashMover", LogLevel.critical,
                    "{crash_id}: could not read spool entry", crash_id="c0ffee",
                    log_failure=failure)
    observer = MozLogObserver(None, "", "host", 1)
    [line] = observed(("", "host", 1), event)
    assert line == reference_line(observer, event)
    fields = json.loads(line)["Fields"]
    assert fields["error"] == "ValueError('boom')"
    assert "ValueError: boom" in fields["traceback"]


def test_a_flattened_event_formats_as_twisted_does():
    event = emitted("x", LogLevel.info, "{value}", value="v")
    flattenEvent(event)
    event["value"] = "changed after flattening"
    assert format_message(event) == formatEvent(event) == "v"


@pytest.mark.parametrize("threshold", sorted(LEVELS))
def test_level_filter_passes_what_twisted_passed(threshold):
    events = []
    for level in ALL_LEVELS + [None]:
        for namespace in ["antenna", None]:
            event = {"log_format": "x", "log_time": 1.0}
            if level is not None:
                event["log_level"] = level
            if namespace is not None:
                event["log_namespace"] = namespace
            events.append(event)
    ours, twisteds = [], []
    ours_filter = LevelFilter(ours.append, LEVELS[threshold])
    twisted_filter = FilteringLogObserver(
        twisteds.append, [LogLevelFilterPredicate(defaultLogLevel=LEVELS[threshold])])
    for event in events:
        ours_filter(event)
        twisted_filter(event)
    assert ours == twisteds
    assert len(ours) == len([level for level in ALL_LEVELS if level >= LEVELS[threshold]])


def test_level_filter_keeps_the_trace():
    trace = []
    seen = []
    LevelFilter(seen.append, LogLevel.info)(
        {"log_level": LogLevel.warn, "log_namespace": "x", "log_trace": trace})
    assert len(seen) == 1 and trace and trace[0][1] == seen.append


def test_make_observer_writes_one_line_per_event_at_or_above_the_level(tmp_path):
    path = tmp_path / "log"
    with open(path, "w") as stream:
        observer = make_observer(stream, "INFO", "")
        log = Logger(namespace="antenna.test", observer=observer)
        log.debug("hidden {n}", n=1)
        log.info("shown {n}", n=2)
        log.warn("shown {n}", n=3)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [record["Fields"]["msg"] for record in records] == ["shown 2", "shown 3"]
    assert [record["Severity"] for record in records] == [6, 4]
    assert {record["Type"] for record in records} == {"antenna.test"}


class Handler:
    twisted_log = Logger(namespace="antenna.test")
    our_log = logs.Logger(namespace="antenna.test")


@pytest.mark.parametrize("level", ALL_LEVELS)
def test_our_logger_emits_what_twisteds_does(level):
    handler = Handler()
    theirs, ours = [], []
    twisted_log, our_log = handler.twisted_log, handler.our_log
    twisted_log.observer, our_log.observer = theirs.append, ours.append
    twisted_log.emit(level, "{crash_id} saved", crash_id="c0ffee")
    our_log.emit(level, "{crash_id} saved", crash_id="c0ffee")
    [their_event], [our_event] = theirs, ours
    assert list(our_event) == list(their_event)  # the same keys, in the same order
    # The one difference: ours keeps the namespace it was given.
    assert their_event["log_namespace"] == "tests.unit.test_logs.Handler"
    assert our_event["log_namespace"] == "antenna.test"
    for key in ("log_logger", "log_time", "log_namespace"):
        del their_event[key], our_event[key]
    assert our_event == their_event
    assert our_event["log_source"] is handler and type(our_log) is logs.Logger


def test_our_logger_keeps_the_trace_and_refuses_bad_levels():
    events = []
    log = logs.Logger(namespace="antenna.test", observer=events.append)
    trace = []
    log.info("traced", log_trace=trace)
    assert trace == [(log, events.append)]
    log.emit("loud", "not a level")
    assert events[-1]["log_format"] == "Got invalid log level {invalidLevel!r} in {logger}.emit()."
    assert events[-1]["log_level"] == LogLevel.critical


def test_a_namespace_given_to_a_class_attribute_logger_is_kept():
    from antenna_tw.logs import Logger as OurLogger

    class Named:
        log = OurLogger(namespace="antenna.somewhere")

    class Unnamed:
        log = OurLogger()

    thing = Named()
    assert (thing.log.namespace, thing.log.source) == ("antenna.somewhere", thing)
    assert (Named.log.namespace, Named.log.source) == ("antenna.somewhere", Named)
    # Without a namespace it behaves as twisted's: the class's path.
    assert Unnamed().log.namespace == f"{__name__}.Unnamed"
