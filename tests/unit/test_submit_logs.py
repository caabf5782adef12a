"""
The /submit fast path logs a route's unhandled errors through the project's
Logger with the event klein writes through ``twisted.python.log.err`` for
the same failure: same namespace, level, text, and no ``log_failure`` (so
Sentry sees neither).
"""

from twisted.logger import globalLogPublisher
from twisted.python import log as legacy_log
from twisted.python.failure import Failure

from antenna_tw import submit
from antenna_tw.logs import MozLogObserver, format_message


def captured(emit):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        emit()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return events


def test_unhandled_errors_are_logged_as_klein_logs_them():
    try:
        raise RuntimeError("rules blew up")
    except RuntimeError:
        failure = Failure()
    why = "Unhandled Error Processing Request."
    [legacy] = captured(lambda: legacy_log.err(failure, why))
    [ours] = captured(lambda: submit._log_unhandled(failure, why))
    for key in ("log_namespace", "log_level"):
        assert ours[key] == legacy[key]
    assert format_message(ours) == format_message(legacy)
    assert "log_failure" not in ours and "log_failure" not in legacy
    lines = []
    observer = MozLogObserver(lines.append, "host-id", "host", 1)
    observer(ours)
    observer(legacy)
    first, second = (line.split(", ", 1)[1] for line in lines)  # without the Timestamp
    assert first == second
    assert '"Type": "log_legacy"' in first and "rules blew up" in first
