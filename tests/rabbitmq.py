"""
A real RabbitMQ broker for the tests: Debian's ``rabbitmq-server`` in a
subprocess, on free loopback ports, with its node directory (Mnesia
database, logs, Erlang cookie) in a scratch directory, so it shares
nothing with a system instance and leaves nothing behind. It is read and
prepared with pika's blocking client (never with the code under test).

Fixtures (registered in tests/conftest.py):

- ``rabbitmq``: one broker for the whole session; a test that stops or
  restarts it gets it running again before the next test uses it.
- ``amqp_queue``: a fresh, empty queue name on that broker for one test.

A machine without ``rabbitmq-server`` skips the tests that use them, with
the command that installs it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import uuid

import attr
import pika
import pytest

from tests.s3server import free_port
from tests.tls import make_certificates

INSTALL_HINT = ("rabbitmq-server is not installed; install it with "
                "`apt-get install -y rabbitmq-server` (Debian/Ubuntu) to run the RabbitMQ tests")

# The Debian package's start script that runs the node as the calling user
# (/usr/sbin/rabbitmq-server would switch to the rabbitmq user when root).
DEBIAN_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
DEBIAN_CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
DEBIAN_EPMD = "/usr/lib/erlang/bin/epmd"


def server_command():
    """The rabbitmq-server start script, or None when there is none."""
    if os.path.exists(DEBIAN_SERVER):
        return DEBIAN_SERVER
    return shutil.which("rabbitmq-server")


def require_rabbitmq():
    command = server_command()
    if command is None:
        pytest.skip(INSTALL_HINT)
    return command


def session_members(session_id):
    """Pids of the processes in session ``session_id`` (Linux /proc)."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session_id:  # stat field 6: the session id
                members.append(int(name))
    return members


def alive(pid):
    """True while ``pid`` exists and is not a zombie (a zombie has let go of everything)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def distinct_free_ports(count):
    ports = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


# Listeners on loopback only, the guest user (loopback-only by default) kept,
# no plugins (no management listener), and a disk alarm that cannot fire on a
# nearly full CI disk: a blocked publisher would look like a collector bug.
# The TLS listener (amqps) has a certificate for localhost and 127.0.0.1 from
# a CA made at test time (tests/tls.py); it asks clients for none.
CONFIG = """\
listeners.tcp.1 = 127.0.0.1:{port}
listeners.ssl.1 = 127.0.0.1:{tls_port}
ssl_options.cacertfile = {tls.ca}
ssl_options.certfile = {tls.cert}
ssl_options.keyfile = {tls.key}
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
disk_free_limit.absolute = 1
log.console = true
log.console.level = warning
log.file = false
"""


@attr.s
class RabbitMQServer:
    """A broker node of its own; ``stop``/``start`` keep its database (durable queues)."""

    command = attr.ib()
    directory = attr.ib()
    port = attr.ib()
    dist_port = attr.ib()
    epmd_port = attr.ib()
    nodename = attr.ib()
    tls_port = attr.ib()
    tls = attr.ib()  # tests.tls.Certificates: tls.ca is the CA a client must trust
    process = attr.ib(default=None)
    starts = attr.ib(default=0)

    @classmethod
    def create(cls, directory):
        command = require_rabbitmq()
        os.makedirs(directory, exist_ok=True)
        port, dist_port, epmd_port, tls_port = distinct_free_ports(4)
        nodename = f"antenna-test-{uuid.uuid4().hex[:8]}@localhost"
        tls_directory = os.path.join(directory, "tls")
        os.makedirs(tls_directory, exist_ok=True)
        tls = make_certificates(pathlib.Path(tls_directory))
        server = cls(command, str(directory), port, dist_port, epmd_port, nodename, tls_port,
                     tls)
        with open(server.path("rabbitmq.conf"), "w") as config:
            config.write(CONFIG.format(port=port, tls_port=tls_port, tls=tls))
        with open(server.path("enabled_plugins"), "w") as plugins:
            plugins.write("[].\n")
        return server

    def path(self, name):
        return os.path.join(self.directory, name)

    @property
    def url(self):
        """An AMQP URL for the guest user and the default virtual host."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def url_with(self, user="guest", password="guest", vhost="%2F", port=None):
        return f"amqp://{user}:{password}@127.0.0.1:{port or self.port}/{vhost}"

    def amqps_url(self, host="localhost"):
        """An amqps URL of the TLS listener (its certificate names localhost and 127.0.0.1)."""
        return f"amqps://guest:guest@{host}:{self.tls_port}/%2F"

    def environ(self):
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=self.directory,  # the Erlang cookie goes here
            RABBITMQ_CONF_ENV_FILE=self.path("rabbitmq-env.conf"),  # absent: not /etc's
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            RABBITMQ_CONFIG_FILE=self.path("rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=self.path("advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=self.path("enabled_plugins"),
            RABBITMQ_MNESIA_BASE=self.path("mnesia"),
            RABBITMQ_LOG_BASE=self.path("log"),
            RABBITMQ_PID_FILE=self.path("rabbitmq.pid"),
        )
        return env

    def start(self, timeout=60.0):
        """Start the node (again) and wait until it takes AMQP connections."""
        assert not self.running(), "already running"
        self.starts += 1
        log = open(self.path(f"server-{self.starts}.log"), "wb")
        with log:
            # Its own session: a hard kill reaches the Erlang VM and its helpers.
            self.process = subprocess.Popen(
                [self.command], cwd=self.directory, env=self.environ(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.wait_ready(timeout)
        return self

    def running(self):
        return self.process is not None and self.process.poll() is None

    def output(self):
        with open(self.path(f"server-{self.starts}.log"), "rb") as log:
            return log.read().decode("utf-8", "replace")[-3000:]

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited {self.process.returncode}: "
                                   f"{self.output()}")
            if self.accepts_amqp():
                return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"rabbitmq-server did not take AMQP within {timeout} s: "
                           f"{self.output()}")

    def accepts_amqp(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
            with self.connection():
                return True
        except (OSError, pika.exceptions.AMQPError):
            return False

    def stop(self, timeout=60.0):
        """A clean stop (SIGTERM: the start script stops the node and waits for it)."""
        if not self.running():
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self, timeout=30.0):
        """
        SIGKILL to the node and everything it started in its session; returns
        once the Erlang VM itself is gone (the start script dies first, and a
        VM still exiting could confirm a message or hold the node's files).
        """
        if self.process is None:
            return
        members = session_members(self.process.pid)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        deadline = time.monotonic() + timeout
        while any(alive(pid) for pid in members):
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server processes {members} outlived SIGKILL")
            time.sleep(0.02)

    def pause(self):
        """SIGSTOP: connections stay open and nothing answers (a hung broker)."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self):
        os.killpg(self.process.pid, signal.SIGCONT)

    def restart(self, timeout=60.0):
        self.stop()
        return self.start(timeout)

    def close(self):
        """Stop the node and its epmd (a daemon outside the node's session)."""
        self.stop()
        epmd = DEBIAN_EPMD if os.path.exists(DEBIAN_EPMD) else shutil.which("epmd")
        if epmd:
            subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=10, check=False)

    def rabbitmqctl(self, *args, timeout=60.0):
        """Run ``rabbitmqctl`` against this node (a few seconds: it starts an Erlang VM)."""
        ctl = DEBIAN_CTL if os.path.exists(DEBIAN_CTL) else shutil.which("rabbitmqctl")
        result = subprocess.run([ctl, "-n", self.nodename, *args], env=self.environ(),
                                cwd=self.directory, capture_output=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stdout!r} "
                               f"{result.stderr!r}")
        return result.stdout.decode()

    def add_user(self, user, password, configure, write, read, vhost="/"):
        """A user with these permission patterns on ``vhost``."""
        self.rabbitmqctl("add_user", user, password)
        self.rabbitmqctl("set_permissions", "-p", vhost, user, configure, write, read)

    # -- the test's own client (pika's blocking connection) ---------------

    def connection(self):
        parameters = pika.URLParameters(self.url)
        parameters.socket_timeout = 5
        parameters.blocked_connection_timeout = 5
        parameters.connection_attempts = 1
        return pika.BlockingConnection(parameters)

    def declare_queue(self, name=None, arguments=None):
        """A durable queue (a fresh name by default); its name."""
        name = name or f"crashes-{uuid.uuid4().hex[:12]}"
        with self.connection() as connection:
            connection.channel().queue_declare(name, durable=True, arguments=arguments)
        return name

    def message_count(self, queue):
        with self.connection() as connection:
            return connection.channel().queue_declare(
                queue, passive=True).method.message_count

    def take_all(self, queue):
        """Every message now in ``queue``, removed from it: ``[(body str, properties)]``."""
        messages = []
        with self.connection() as connection:
            channel = connection.channel()
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return messages
                messages.append((body.decode("utf-8"), properties))

    def bodies(self, queue):
        return [body for body, _properties in self.take_all(queue)]


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory):
    require_rabbitmq()
    server = RabbitMQServer.create(tmp_path_factory.mktemp("rabbitmq"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def rabbitmq(rabbitmq_server):
    """The session's broker, running (a test before may have stopped it)."""
    if not rabbitmq_server.running():
        rabbitmq_server.start()
    return rabbitmq_server


@pytest.fixture
def amqp_queue(rabbitmq):
    """A fresh durable queue's name on the session's broker."""
    return rabbitmq.declare_queue()
