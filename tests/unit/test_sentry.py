"""The Sentry observer: which logged events become Sentry events."""

import pytest
from twisted.logger import LogLevel

from antenna_tw.config import ConfigError
from antenna_tw.logs import Logger
from antenna_tw.sentry import SentryObserver, with_sentry


class RecordingClient:
    options = {"an": "option"}

    def __init__(self):
        self.events = []

    def capture_event(self, event, hint=None):
        self.events.append(event)


def event_from_exception(exc_info, client_options):
    assert client_options == RecordingClient.options
    return {"type": exc_info[0].__name__, "value": str(exc_info[1])}, {"exc_info": exc_info}


def test_failures_at_error_or_critical_are_sent_and_nothing_else():
    client = RecordingClient()
    observer = SentryObserver(client, event_from_exception)
    log = Logger(namespace="antenna.test", observer=observer)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.failure("unhandled error")  # critical
        log.failure("read failed", level=LogLevel.error)
        log.failure("expected", level=LogLevel.warn)
    log.error("no failure attached")
    log.info("fine")
    assert client.events == [{"type": "RuntimeError", "value": "boom"}] * 2


def test_without_a_dsn_the_observer_is_left_as_it_is():
    def observer(event):
        pass

    assert with_sentry(observer, "", "host", "1.0") is observer


def test_a_bad_dsn_stops_start_up_without_showing_it():
    with pytest.raises(ConfigError) as error:
        with_sentry(lambda event: None, "not-a-dsn-secretvalue", "host", "1.0")
    assert "secretvalue" not in str(error.value)
