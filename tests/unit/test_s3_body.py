"""The S3 client's request bodies: bytes written whole, in one call."""

import pytest
from twisted.web.iweb import IBodyProducer

from antenna_tw.ext.s3.client import BytesProducer, body_producer


class Consumer:
    def __init__(self):
        self.writes = []

    def write(self, data):
        self.writes.append(data)


def test_bytes_are_written_in_one_call_and_done_at_once():
    body = b"\x00" * 400_000
    producer = body_producer(body)
    assert isinstance(producer, BytesProducer) and IBodyProducer.providedBy(producer)
    assert producer.length == len(body)
    consumer = Consumer()
    done = producer.startProducing(consumer)
    assert consumer.writes == [body] and consumer.writes[0] is body
    assert done.called
    producer.stopProducing()


def test_other_data_is_left_to_treq():
    class Custom:
        pass

    producer = BytesProducer(b"x")
    assert body_producer(producer) is producer  # already a producer
    with pytest.raises(TypeError):  # treq's own adaptation: nothing for this
        body_producer(Custom())
