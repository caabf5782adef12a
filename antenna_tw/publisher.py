"""
The crash publisher interface, its no-op, and the choice of publisher by name.

Once a crash is stored, its id is published so that the processors learn of
it (Antenna's ``CRASHPUBLISH_CLASS``). A publisher takes up to
``batch_size`` ids at a time and answers for each one: an id counts as
published only when the queue confirmed it (an SQS success entry, a broker's
publisher confirm); the caller retries the ones it names as not published,
so an id is never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import Attribute, Interface, implementer

from antenna_tw.config import PublishSettings, StorageSettings
from antenna_tw.storage import contract_problem
from antenna_tw.throttler import load_dotted


class PublisherUnavailable(Exception):
    """Cannot publish; the message is one line for the operator."""


class PublisherUnreachable(PublisherUnavailable):
    """
    The queue or broker did not answer the start-up check (refused, timed
    out, a server error): the collector starts all the same and publishes
    once it answers (``antenna_tw.startup``).
    """


class PublishFailed(Exception):
    """
    Some ids of a ``publish()`` call were not confirmed: ``crash_ids`` names
    exactly those (the others were published), ``reason`` says why in one line.
    """

    def __init__(self, crash_ids: Sequence[str], reason: str) -> None:
        super().__init__(crash_ids, reason)
        self.crash_ids = tuple(crash_ids)
        self.reason = reason

    def __str__(self) -> str:
        return f"{len(self.crash_ids)} crash id(s) not published: {self.reason}"


class ICrashPublisher(Interface):
    """
    Where the ids of stored crashes are published.

    Publishers are built with ``Class.from_settings(publish_settings,
    storage_settings, reactor, threadpool)``.
    """

    name = Attribute("Short name for logs and the heartbeat.")
    batch_size = Attribute("How many ids one publish() call may take (SQS: 10).")
    health_ttl = Attribute("Seconds the heartbeat may reuse a check_health answer (0: none).")

    def verify() -> None:
        """
        Check at start-up that ids can be published. Runs before the reactor
        starts, so it may block; raise PublisherUnavailable with one line on
        a definitive misconfiguration (no such queue, bad credentials,
        refused authentication), PublisherUnreachable when nothing answered
        (refused connection, timeout, a server error: the start goes on).
        """

    def publish(crash_ids: Sequence[str]) -> Deferred[None]:
        """
        Publish these ids (at most ``batch_size`` of them). Fires when every
        id is confirmed; fails with PublishFailed naming exactly the ids not
        confirmed.
        """

    def check_health() -> Deferred[list[str]]:
        """Error strings, empty when healthy; never hangs (bounded by a timeout)."""

    def close() -> Deferred[None]:
        """Let go of connections at shutdown."""


@implementer(ICrashPublisher)
class NoOpPublisher:
    """
    ``CRASHPUBLISH_CLASS=none``: publishes nothing. The crash movers do not
    use a publisher at all then (``is_noop``); this one is there so code that
    holds "a publisher" need not test for None.
    """

    name = "none"
    batch_size = 10
    health_ttl = 0.0

    @classmethod
    def from_settings(cls, publish_settings: PublishSettings, storage_settings: StorageSettings,
                      reactor: Any = None, threadpool: Any = None) -> NoOpPublisher:
        """The no-op publisher; it reads no settings."""
        return cls()

    def verify(self) -> None:
        """Nothing to check."""

    def publish(self, crash_ids: Sequence[str]) -> Deferred[None]:
        """Confirm every id at once."""
        return succeed(None)

    def check_health(self) -> Deferred[list[str]]:
        """Always healthy."""
        return succeed([])

    def close(self) -> Deferred[None]:
        """Nothing to let go of."""
        return succeed(None)


# CRASHPUBLISH_CLASS's values (config.parse_crashpublish_class has already
# turned Antenna's class paths into these) and the classes they name;
# imported only when chosen, so an unused publisher's libraries stay unloaded.
PUBLISHER_CLASSES = {
    "none": "antenna_tw.publisher.NoOpPublisher",
    "sqs": "antenna_tw.ext.sqs.SQSCrashPublisher",
    "rabbitmq": "antenna_tw.ext.rabbitmq.RabbitMQCrashPublisher",
}


def publisher_class(name: str) -> Any:
    """The class for ``CRASHPUBLISH_CLASS``: ``none``, ``sqs``, ``rabbitmq`` or a dotted path."""
    return load_dotted(PUBLISHER_CLASSES.get(name, name))


def check_publisher(publisher: object) -> None:
    """PublisherUnavailable unless ``publisher`` keeps ``ICrashPublisher``."""
    problem = contract_problem(publisher, [ICrashPublisher])
    if problem is not None:
        raise PublisherUnavailable(problem)


def is_noop(publisher: object) -> bool:
    """True for a publisher that publishes nothing, which the crash movers skip."""
    return isinstance(publisher, NoOpPublisher)
