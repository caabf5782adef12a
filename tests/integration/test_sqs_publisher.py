"""
The SQS publisher against a real ``moto_server``: the start-up check
(GetQueueUrl and Antenna's ``test`` message), SendMessageBatch of up to ten
ids, what it says when the queue is missing, the server is gone or the
credentials are refused, and the heartbeat's check. The queue is read back
with botocore's own client, never with the code under test.
"""

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool

from antenna_tw.config import StorageSettings
from antenna_tw.ext.sqs import SQSCrashPublisher
from antenna_tw.publisher import (
    PublisherUnavailable,
    PublisherUnreachable,
    PublishFailed,
    publisher_class,
)
from tests.helpers import in_thread
from tests.s3server import Keys
from tests.sqs_helpers import create_queue, publish_settings, receive_all

IDS = [f"de1a{index:04x}-0d1c-4f2a-9d7e-3c5b1a{index % 2}60504" for index in range(23)]


@pytest.fixture(scope="module")
def threadpool():
    pool = ThreadPool(minthreads=1, maxthreads=2, name="test-sqs")
    pool.start()
    yield pool
    pool.stop()


@pytest_twisted.async_yield_fixture
async def publishers(threadpool):
    built = []

    def make(settings):
        publisher = publisher_class("sqs").from_settings(
            settings, StorageSettings(), reactor, threadpool)
        built.append(publisher)
        return publisher

    yield make
    for publisher in built:
        await publisher.close()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sqs_is_the_class_chosen():
    assert publisher_class("sqs") is SQSCrashPublisher
    assert SQSCrashPublisher.batch_size == 10


@pytest_twisted.ensureDeferred
async def test_start_up_resolves_the_queue_and_sends_antennas_test_message(moto, publishers):
    name, url = create_queue(moto)
    publisher = publishers(publish_settings(moto, name))
    publisher.verify()
    assert publisher.queue_url == url
    assert await in_thread(receive_all, moto, url) == ["test"]


@pytest_twisted.ensureDeferred
async def test_the_test_message_can_be_turned_off(moto, publishers):
    name, url = create_queue(moto)
    publisher = publishers(publish_settings(moto, name, verify_message=False))
    publisher.verify()
    assert await in_thread(receive_all, moto, url) == []


@pytest_twisted.ensureDeferred
async def test_ids_go_out_in_batches_of_ten(moto, publishers):
    name, url = create_queue(moto)
    publisher = publishers(publish_settings(moto, name, verify_message=False))
    publisher.verify()
    for start in range(0, len(IDS), 10):
        await publisher.publish(IDS[start:start + 10])
    assert sorted(await in_thread(receive_all, moto, url)) == sorted(IDS)
    with pytest.raises(ValueError):
        await publisher.publish(IDS[:11])


@pytest_twisted.ensureDeferred
async def test_publish_resolves_the_queue_without_the_start_up_check(moto, publishers):
    name, url = create_queue(moto)
    publisher = publishers(publish_settings(moto, name))
    await publisher.publish(IDS[:3])
    assert publisher.queue_url == url
    assert sorted(await in_thread(receive_all, moto, url)) == sorted(IDS[:3])


def test_a_missing_queue_refuses_the_start_in_one_line(moto, threadpool):
    publisher = SQSCrashPublisher.from_settings(
        publish_settings(moto, "no-such-queue"), StorageSettings(), reactor, threadpool)
    with pytest.raises(PublisherUnavailable) as caught:
        publisher.verify()
    assert not isinstance(caught.value, PublisherUnreachable)  # refuses the start
    assert str(caught.value) == (
        f"SQS queue 'no-such-queue' at {moto.endpoint}: no such queue (SQS GetQueueUrl "
        "answered 400 QueueDoesNotExist: The specified queue does not exist.)")


def test_an_unreachable_endpoint_is_one_line_and_does_not_refuse_the_start(threadpool):
    settings = publish_settings(
        type("Server", (), {"endpoint": f"http://127.0.0.1:{closed_port()}",
                            "keys": Keys("AKIATESTTESTTESTTEST", "secret")})(), "q")
    publisher = SQSCrashPublisher.from_settings(settings, StorageSettings(), reactor,
                                                threadpool)
    with pytest.raises(PublisherUnreachable) as caught:
        publisher.verify()
    message = str(caught.value)
    assert message.startswith(f"SQS queue 'q' at {settings.aws.endpoint_url}: SQS GetQueueUrl: "
                              "no answer (")
    assert "\n" not in message


def test_settings_that_cannot_work_are_one_line(moto):
    with pytest.raises(ValueError) as caught:
        SQSCrashPublisher.from_settings(publish_settings(moto, ""), StorageSettings(),
                                        reactor, None)
    assert str(caught.value) == "CRASHPUBLISH_QUEUE_NAME is required for SQS publishing"
    with pytest.raises(ValueError) as caught:
        SQSCrashPublisher.from_settings(publish_settings(moto, "q", secret_access_key=""),
                                        StorageSettings(), reactor, None)
    assert str(caught.value) == (
        "CRASHPUBLISH_ACCESS_KEY and CRASHPUBLISH_SECRET_ACCESS_KEY go together: set both, "
        "or neither to use the AWS credential chain")


@pytest_twisted.ensureDeferred
async def test_nothing_answering_fails_every_id(publishers):
    server = type("Server", (), {"endpoint": f"http://127.0.0.1:{closed_port()}",
                                 "keys": Keys("AKIATESTTESTTESTTEST", "secret")})()
    publisher = publishers(publish_settings(server, "q"))
    publisher.queue_url = f"{server.endpoint}/123456789012/q"
    with pytest.raises(PublishFailed) as caught:
        await publisher.publish(IDS[:4])
    assert caught.value.crash_ids == tuple(IDS[:4])
    assert "no answer" in caught.value.reason
    [error] = await publisher.check_health()
    assert error.startswith("SQS queue 'q' at http://127.0.0.1:")


@pytest_twisted.ensureDeferred
async def test_a_paused_server_times_out_and_fails_every_id(moto, publishers):
    name, _ = create_queue(moto)
    publisher = publishers(publish_settings(moto, name))
    publisher.verify()
    publisher.timeouts.base = 0.5
    moto.pause()
    try:
        with pytest.raises(PublishFailed) as caught:
            await publisher.publish(IDS[:2])
    finally:
        moto.resume()
    assert caught.value.crash_ids == tuple(IDS[:2])
    assert "no answer" in caught.value.reason


@pytest_twisted.ensureDeferred
async def test_the_heartbeat_check(moto, publishers):
    name, url = create_queue(moto)
    publisher = publishers(publish_settings(moto, name))
    publisher.health_ttl = 0
    assert await publisher.check_health() == []
    await in_thread(moto.client("sqs").delete_queue, QueueUrl=url)
    [error] = await publisher.check_health()
    assert error.startswith(f"SQS queue {name!r} at {moto.endpoint}: no such queue")


@pytest_twisted.ensureDeferred
async def test_the_documented_permissions_are_enough_and_bad_keys_are_refused(
        moto_auth, publishers):
    server = moto_auth.server
    name, url = create_queue(server)
    # AWS authorizes SendMessageBatch as sqs:SendMessage (batch actions have no
    # permission of their own); moto checks it under its own name.
    keys = server.create_user("publisher", {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
            "sqs:GetQueueUrl", "sqs:SendMessage", "sqs:SendMessageBatch"]}]})
    publisher = publishers(publish_settings(server, name, keys=keys))
    publisher.verify()
    await publisher.publish(IDS[:10])
    assert sorted(await in_thread(receive_all, server, url)) == sorted(["test"] + IDS[:10])

    wrong = Keys(keys.access_key, keys.secret_key[:-4] + "XXXX")
    refused = publishers(publish_settings(server, name, keys=wrong))
    with pytest.raises(PublisherUnavailable) as caught:
        refused.verify()
    assert not isinstance(caught.value, PublisherUnreachable)  # refuses the start
    message = str(caught.value)
    assert message.startswith(f"SQS queue {name!r} at {server.endpoint}: credentials refused")
    assert wrong.secret_key not in message
    with pytest.raises(PublishFailed) as failed:
        await refused.publish(IDS[:2])
    assert failed.value.crash_ids == tuple(IDS[:2])
    assert "403" in failed.value.reason


@pytest_twisted.ensureDeferred
async def test_an_xml_error_is_read_for_its_code(moto_auth, publishers):
    server = moto_auth.server
    name, _ = create_queue(server)
    keys = server.create_user("nobatch", {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Resource": "*",
                       "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"]}]})
    publisher = publishers(publish_settings(server, name, keys=keys))
    publisher.verify()
    with pytest.raises(PublishFailed) as failed:
        await publisher.publish(IDS[:2])
    assert failed.value.reason == (
        "SQS SendMessageBatch answered 403 AccessDenied: User: "
        "arn:aws:iam::123456789012:user/nobatch is not authorized to perform: "
        "sqs:SendMessageBatch")
