#!/usr/bin/env python3
"""
CPU per S3 request of the collector's HTTP client, alone: the PUTs of a
400 KB crash (dump_names and the dump together, then the raw crash) against
the nginx stand-in (``bench/s3_standin.py``), two at a time on kept-alive
connections, no signing, in one process. Variants, alternated round by round:

- ``agent``: Twisted's ``Agent`` on a persistent ``HTTPConnectionPool``, the
  body written whole by a producer (the S3 client before 2026-12-04);
- ``wire``: ``antenna_tw.ext.s3.wire.ConnectionPool`` with Twisted's send
  limit (128 KiB per reactor turn);
- ``wire-4m``: the same, 4 MiB per turn (``build_connection``'s setting).

Loopback only; run under the bench lock::

    flock /work/bench.lock .venv/bin/python bench/s3_client_micro.py --rounds 5 --crashes 1000

Prints one line per round (CPU µs per crash, user and system) and the
medians per variant.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import warnings
import shutil
from pathlib import Path

from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_standin import S3StandIn  # noqa: E402

from antenna_tw.ext.s3.wire import ConnectionPool  # noqa: E402

HEADERS = {"X-Amz-Date": "20261204T000000Z",
           "X-Amz-Content-SHA256": "0" * 64,
           "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261204/us-west-2/s3/"
                            "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
                            "Signature=" + "0" * 64}
DUMP = bytes(range(256)) * 1600  # 409,600 bytes
NAMES = b'["upload_file_minidump"]'
RAW = b'{"ProductName": "Firefox", "Version": "140.0"}' * 40


@implementer(IBodyProducer)
class Body:
    def __init__(self, body):
        self.body, self.length = body, len(body)

    def startProducing(self, consumer):  # noqa: N802
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self):  # noqa: N802
        pass

    def resumeProducing(self):  # noqa: N802
        pass

    def stopProducing(self):  # noqa: N802
        pass


class AgentClient:
    def __init__(self, reactor):
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 3
        self.agent = Agent(reactor, pool=self.pool)

    async def put(self, url, body):
        # readBody warns of the pool's transport wrapper (no abortConnection): noise here.
        warnings.simplefilter("ignore", DeprecationWarning)
        response = await self.agent.request(
            b"PUT", url.encode("ascii"),
            Headers({name: [value] for name, value in HEADERS.items()}), Body(body))
        await readBody(response)
        assert response.code < 300, response.code

    def close(self):
        return self.pool.closeCachedConnections()


class WireClient:
    def __init__(self, reactor, send_limit):
        self.pool = ConnectionPool(reactor, max_idle=3, send_limit=send_limit)

    async def put(self, url, body):
        answer = await self.pool.request("PUT", url, body, dict(HEADERS))
        assert answer.status < 300, answer.status

    def close(self):
        return self.pool.close()


def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def one_round(client, endpoint, crashes):
    base = f"{endpoint}/bench/v1"
    for number in range(20):  # connections open, caches warm
        await client.put(f"{base}/warm/{number}", DUMP)
    user0, system0 = cpu()
    for number in range(crashes):
        await defer.gatherResults([
            defer.ensureDeferred(client.put(f"{base}/dump_names/{number}", NAMES)),
            defer.ensureDeferred(client.put(f"{base}/dump/{number}", DUMP))])
        await client.put(f"{base}/raw_crash/{number}", RAW)
    user1, system1 = cpu()
    await client.close()
    return (user1 - user0) / crashes * 1e6, (system1 - system0) / crashes * 1e6


async def main(reactor, args):
    results = {name: [] for name in args.variants}
    prefix = Path(args.scratch)
    shutil.rmtree(prefix, ignore_errors=True)
    prefix.mkdir(parents=True)
    prefix.chmod(0o755)  # nginx's workers run as nobody
    standin = S3StandIn(prefix).start()
    try:
        for round_number in range(args.rounds):
            for name in args.variants:
                client = (AgentClient(reactor) if name == "agent" else
                          WireClient(reactor, 4 * 1024 * 1024 if name == "wire-4m" else 0))
                user, system = await one_round(client, standin.endpoint, args.crashes)
                results[name].append((user, system))
                print(f"round {round_number + 1} {name}: {user + system:.0f} µs per crash "
                      f"(user {user:.0f}, system {system:.0f})", flush=True)
    finally:
        standin.stop()
        shutil.rmtree(prefix, ignore_errors=True)
    print()
    first = args.variants[0]
    for name in args.variants:
        totals = [user + system for user, system in results[name]]
        ratios = [total / (user + system) for total, (user, system)
                  in zip(totals, results[first], strict=True)]
        print(f"{name}: median {statistics.median(totals):.0f} µs per crash "
              f"(user {statistics.median(u for u, _ in results[name]):.0f}, system "
              f"{statistics.median(s for _, s in results[name]):.0f}); against {first} "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crashes", type=int, default=1000)
    parser.add_argument("--scratch", default="/tmp/s3-client-micro",
                        help="the stand-in's folder (wiped)")
    parser.add_argument("--variants", nargs="+", default=["agent", "wire", "wire-4m"])
    from twisted.internet import task
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args())))
