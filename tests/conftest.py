import os

import pytest
import pytest_twisted
from twisted.logger import formatEvent, globalLogPublisher
from hypothesis import HealthCheck, settings

from tests.helpers import start_collector, stop_collector, test_environ
from tests.s3server import moto, moto_auth, s3_bucket  # noqa: F401  (S3 fixtures)
from tests.rabbitmq import amqp_queue, rabbitmq, rabbitmq_server  # noqa: F401  (AMQP fixtures)
from tests.browser import browser  # noqa: F401  (headless Chromium)

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest_twisted.async_yield_fixture
async def collector(tmp_path):
    """A collector with default settings on a loopback port, files under tmp_path."""
    running = await start_collector(tmp_path)
    yield running
    await stop_collector(running)


@pytest_twisted.async_yield_fixture
async def collector_with(tmp_path):
    """Start collectors with extra settings: ``await collector_with(KEY=value)``."""
    started = []

    async def start(**overrides):
        running = await start_collector(tmp_path, test_environ(tmp_path, **overrides))
        started.append(running)
        return running

    yield start
    for running in started:
        await stop_collector(running)


# Hypothesis: the same examples on every run and machine (CI must be stable),
# no example database on disk, no per-example deadline on a busy CI machine.
settings.register_profile(
    "antenna", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("antenna")


@pytest.fixture
def log_messages():
    """Every log message (metrics included: they are debug log lines) while the test runs."""
    messages = []

    def observe(event):
        messages.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield messages
    globalLogPublisher.removeObserver(observe)
