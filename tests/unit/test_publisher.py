"""The publisher contract: its exceptions, the no-op publisher and the choice by name."""

import pytest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from antenna_tw import publisher
from antenna_tw.config import load_config
from antenna_tw.publisher import (
    ICrashPublisher,
    NoOpPublisher,
    PublisherUnavailable,
    PublishFailed,
    check_publisher,
    is_noop,
    publisher_class,
)
from antenna_tw.throttler import RuleError


def test_publish_failed_names_the_ids_not_published():
    failure = PublishFailed(["a", "b"], "queue said no")
    assert failure.crash_ids == ("a", "b")
    assert failure.reason == "queue said no"
    assert str(failure) == "2 crash id(s) not published: queue said no"


def test_the_noop_publisher_keeps_the_contract():
    config = load_config({})
    noop = publisher_class(config.publish.crashpublish_class).from_settings(
        config.publish, config.storage, None, None)
    assert isinstance(noop, NoOpPublisher)
    assert verifyObject(ICrashPublisher, noop)
    assert is_noop(noop)
    noop.verify()
    assert noop.batch_size >= 1
    assert noop.publish(["x"]).result is None
    assert noop.check_health().result == []
    assert noop.close().result is None


def test_names_choose_classes():
    assert publisher.PUBLISHER_CLASSES["sqs"] == "antenna_tw.ext.sqs.SQSCrashPublisher"
    assert publisher.PUBLISHER_CLASSES["rabbitmq"] == \
        "antenna_tw.ext.rabbitmq.RabbitMQCrashPublisher"
    assert publisher_class("antenna_tw.publisher.NoOpPublisher") is NoOpPublisher


def test_a_class_that_does_not_import_is_one_line():
    with pytest.raises(RuleError) as caught:
        publisher_class("no_such_package.Publisher")
    assert "\n" not in str(caught.value)


def test_a_real_publisher_is_not_noop():
    class Other:
        pass

    assert not is_noop(Other())


@implementer(ICrashPublisher)
class Hollow:
    """Says it is a publisher and has nothing of one."""


def test_a_publisher_that_breaks_the_contract_is_refused_in_one_line():
    check_publisher(NoOpPublisher())
    with pytest.raises(PublisherUnavailable) as caught:
        check_publisher(Hollow())
    message = str(caught.value)
    assert message.startswith("Hollow is not usable as ICrashPublisher: ")
    assert "ICrashPublisher.health_ttl attribute was not provided" in message
    assert "\n" not in message
