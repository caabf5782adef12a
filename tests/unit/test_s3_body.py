"""The S3 client's requests on an Agent: bodies written whole, in one call."""

from twisted.internet import defer
from twisted.web.iweb import IBodyProducer

from antenna_tw.ext.s3.client import AgentHTTP, AgentResponse, BytesProducer


class Consumer:
    def __init__(self):
        self.writes = []

    def write(self, data):
        self.writes.append(data)


class StubAgent:
    def __init__(self):
        self.requests = []

    def request(self, method, uri, headers=None, bodyProducer=None):  # noqa: N803 - IAgent's
        self.requests.append((method, uri, headers, bodyProducer))
        return defer.succeed("a response")


def test_bytes_are_written_in_one_call_and_done_at_once():
    body = b"\x00" * 400_000
    producer = BytesProducer(body)
    assert IBodyProducer.providedBy(producer) and producer.length == len(body)
    consumer = Consumer()
    done = producer.startProducing(consumer)
    assert consumer.writes == [body] and consumer.writes[0] is body
    assert done.called


def test_requests_go_to_the_agent_as_given():
    agent = StubAgent()
    answers = []
    AgentHTTP(agent).request("PUT", "http://127.0.0.1:9/crashes/v1/dump/a%20b", data=b"dump",
                             headers={"X-Amz-Date": ["20261203T000000Z"]}).addBoth(answers.append)
    [(method, uri, headers, producer)] = agent.requests
    assert (method, uri) == (b"PUT", b"http://127.0.0.1:9/crashes/v1/dump/a%20b")
    assert headers.getRawHeaders("x-amz-date") == ["20261203T000000Z"]
    assert producer.body == b"dump"
    assert isinstance(answers[0], AgentResponse) and answers[0].response == "a response"
    AgentHTTP(agent).request("HEAD", "http://127.0.0.1:9/crashes")
    assert agent.requests[-1][3] is None  # no body, no Content-Length
