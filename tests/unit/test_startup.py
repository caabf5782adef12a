"""
The start-up checks: a misconfiguration refuses the start, storage or a
publisher that does not answer does not (antenna_tw/startup.py).
"""

import pytest
from twisted.logger import LogLevel

from antenna_tw.logs import Logger
from antenna_tw.publisher import PublisherUnavailable, PublisherUnreachable
from antenna_tw.startup import start_up_check
from antenna_tw.storage import StorageUnavailable, StorageUnreachable


def logger():
    events = []
    return Logger(namespace="antenna.startup", observer=events.append), events


def raising(error):
    def verify():
        raise error
    return verify


@pytest.mark.parametrize("error", [
    StorageUnavailable("S3 bucket 'b' at http://s3: HEAD bucket answered 404 Not Found"),
    PublisherUnavailable("SQS queue 'q' at http://sqs: no such queue"),
])
def test_a_misconfiguration_goes_through_and_is_not_logged(error):
    log, events = logger()
    with pytest.raises(type(error)) as caught:
        start_up_check(raising(error), log)
    assert caught.value is error
    assert events == []


@pytest.mark.parametrize("error", [
    StorageUnreachable("S3 bucket 'b' at http://s3: no answer to HEAD bucket (refused)"),
    PublisherUnreachable("cannot connect to RabbitMQ at amqp://h: connection refused"),
])
def test_nothing_answering_is_one_warning_and_the_start_goes_on(error):
    log, events = logger()
    start_up_check(raising(error), log)
    [event] = events
    assert event["log_level"] is LogLevel.warn
    assert event["problem"] == str(error)
    assert "starting all the same" in event["log_format"]


def test_a_passing_check_says_nothing():
    log, events = logger()
    start_up_check(lambda: None, log)
    assert events == []
