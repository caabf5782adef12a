"""SQS queues on the test moto server, created and read with botocore's own client."""

from __future__ import annotations

import uuid

import attr

from antenna_tw.config import PublishSettings, SqsSettings


def create_queue(server, name=None, keys=None):
    """A new standard queue on ``server``; ``(name, url)``."""
    name = name or f"crash-ids-{uuid.uuid4().hex[:12]}"
    url = server.client("sqs", keys=keys).create_queue(QueueName=name)["QueueUrl"]
    return name, url


def receive_all(server, queue_url, keys=None, idle_polls=1):
    """
    Every message body on the queue, read and deleted, in the order received;
    stops after ``idle_polls`` empty receives in a row.
    """
    client = server.client("sqs", keys=keys)
    bodies, idle = [], 0
    while idle < idle_polls:
        answer = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                        WaitTimeSeconds=0, VisibilityTimeout=300)
        messages = answer.get("Messages", [])
        if not messages:
            idle += 1
            continue
        idle = 0
        bodies.extend(message["Body"] for message in messages)
        client.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
            for index, message in enumerate(messages)])
    return bodies


def sqs_environ(server, queue_name, keys=None, **overrides):
    """Antenna's option names for the SQS publisher on ``server``."""
    keys = keys or server.keys
    environ = {
        "CRASHPUBLISH_CLASS": "antenna.ext.sqs.crashpublish.SQSCrashPublish",
        "CRASHPUBLISH_ENDPOINT_URL": server.endpoint,
        "CRASHPUBLISH_QUEUE_NAME": queue_name,
        "CRASHPUBLISH_REGION": "us-west-2",
        "CRASHPUBLISH_ACCESS_KEY": keys.access_key,
        "CRASHPUBLISH_SECRET_ACCESS_KEY": keys.secret_key,
    }
    environ.update({key: str(value) for key, value in overrides.items()})
    return environ


def publish_settings(server, queue_name, keys=None, **overrides):
    """PublishSettings for the SQS publisher on ``server``."""
    keys = keys or server.keys
    aws = dict(region="us-west-2", endpoint_url=server.endpoint,
               access_key=keys.access_key, secret_access_key=keys.secret_key)
    values = dict(crashpublish_class="sqs", queue_name=queue_name)
    for name, value in overrides.items():
        (aws if name in attr.fields_dict(SqsSettings) else values)[name] = value
    values["aws"] = SqsSettings(**aws)
    return PublishSettings(**values)
