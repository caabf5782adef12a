"""
A real S3-compatible server for the tests: ``moto_server`` in a subprocess
on a free loopback port, read and prepared with botocore's own S3 client
(never with the code under test).

Fixtures (registered in tests/conftest.py):

- ``moto``: one server for the whole session, signatures not checked.
- ``moto_auth``: a second server that checks signatures: an IAM user and
  key are created through moto's IAM API, then moto's
  ``INITIAL_NO_AUTH_ACTION_COUNT`` is set to 0 (``/moto-api/reset-auth``)
  so every later request must be signed by a known key.
- ``s3_bucket``: a fresh bucket on ``moto`` for one test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import attr
import botocore.config
import botocore.session
import pytest

REGION = "us-west-2"
# moto accepts any key while it does not check signatures.
TEST_ACCESS_KEY = "AKIATESTTESTTESTTEST"
TEST_SECRET_KEY = "moto-test-secret-do-not-log-0123456789"

# Exactly what docs/s3.rst asks operators to grant, plus moto's name for the
# HEAD bucket action (real S3 checks s3:ListBucket for it).
COLLECTOR_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:HeadBucket"],
         "Resource": "arn:aws:s3:::*"},
        {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": "arn:aws:s3:::*/*"},
    ],
}
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:*", "iam:*", "sqs:*"], "Resource": "*"}],
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moto_server_command():
    """The moto_server installed beside this Python (the project's venv)."""
    candidate = os.path.join(os.path.dirname(sys.executable), "moto_server")
    return [candidate] if os.path.exists(candidate) else ["moto_server"]


@attr.s
class Keys:
    access_key = attr.ib()
    secret_key = attr.ib(repr=False)


@attr.s
class MotoServer:
    """A running ``moto_server``; ``client()`` is an independent botocore S3 client."""

    process = attr.ib()
    port = attr.ib()
    log_path = attr.ib()
    keys = attr.ib(default=Keys(TEST_ACCESS_KEY, TEST_SECRET_KEY))
    # One botocore session and one client per (service, keys): a new session
    # loads the service models again (about 55 ms of CPU a client), and the
    # tests poll the bucket and the queue many times a second.
    _session = attr.ib(factory=botocore.session.get_session, repr=False)
    _clients = attr.ib(factory=dict, repr=False)
    _clients_lock = attr.ib(factory=threading.Lock, repr=False)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, log_dir, timeout=30.0, port=None, new_session=False):
        """
        Start it and wait until it answers. ``new_session``: out of the
        terminal's process group, so a Ctrl-C meant for others leaves it running.
        """
        port = port or free_port()
        env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true",
                   AWS_ACCESS_KEY_ID=TEST_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=TEST_SECRET_KEY)
        log_path = os.path.join(log_dir, f"moto-{port}.log")
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                moto_server_command() + ["-H", "127.0.0.1", "-p", str(port)],
                stdout=log_file, stderr=subprocess.STDOUT, env=env,
                start_new_session=new_session)
        server = cls(process, port, log_path)
        server.wait_ready(timeout)
        return server

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited {self.process.returncode}; "
                                   f"see {self.log_path}")
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/data.json", timeout=1):
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not answer within {timeout} s")

    def pause(self):
        """SIGSTOP: the server hangs (connections are accepted by the kernel, not answered)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def stop(self):
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, service="s3", keys=None):
        """botocore's own client for this server (path-style addressing), made once per keys."""
        keys = keys or self.keys
        wanted = (service, keys.access_key, keys.secret_key)
        with self._clients_lock:  # clients are thread-safe, their session is not
            if wanted not in self._clients:
                self._clients[wanted] = self._session.create_client(
                    service, region_name=REGION, endpoint_url=self.endpoint,
                    aws_access_key_id=keys.access_key, aws_secret_access_key=keys.secret_key,
                    config=botocore.config.Config(s3={"addressing_style": "path"},
                                                  retries={"max_attempts": 1}))
            return self._clients[wanted]

    def create_bucket(self, name=None):
        name = name or f"crashes-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        return name

    def objects(self, bucket):
        """``{key: bytes}`` of every object in the bucket (read 8 at a time)."""
        client = self.client()

        def read(key):
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()

        keys = self.keys_in(bucket)
        with ThreadPoolExecutor(8) as pool:
            return dict(zip(keys, pool.map(read, keys), strict=True))

    def keys_in(self, bucket, prefix=""):
        client = self.client()
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                       Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def create_user(self, name, policy):
        """An IAM user with an inline ``policy``; its new access key."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy",
                            PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])

    def require_signatures(self):
        """From now on moto checks every request's signature and IAM policy."""
        request = urllib.request.Request(self.endpoint + "/moto-api/reset-auth",
                                         data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """A moto S3 server for the session; signatures are not checked."""
    server = MotoServer.start(str(tmp_path_factory.mktemp("moto")))
    yield server
    server.stop()


@attr.s
class AuthServer:
    """A signature-checking moto with a bucket and two users' keys."""

    server = attr.ib()
    bucket = attr.ib()
    collector_keys = attr.ib()
    admin_keys = attr.ib()


@pytest.fixture(scope="session")
def moto_auth(tmp_path_factory):
    """A moto S3 server that checks signatures, with a bucket and IAM users."""
    server = MotoServer.start(str(tmp_path_factory.mktemp("moto-auth")))
    try:
        bucket = server.create_bucket()
        admin = server.create_user("admin", ADMIN_POLICY)
        collector = server.create_user("collector", COLLECTOR_POLICY)
        server.keys = admin
        server.require_signatures()
        yield AuthServer(server, bucket, collector, admin)
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto):
    """A new, empty bucket on the session's moto server."""
    return moto.create_bucket()
