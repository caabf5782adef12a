"""Helpers shared by the tests: configs, a listening collector, raw HTTP."""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import zlib

import attr
from twisted.internet import defer, protocol, reactor, task, threads
from twisted.python.failure import Failure
from zope.interface import implementer, implementer_only

from antenna_tw.app import build_collector
from antenna_tw.config import load_config
from antenna_tw.ext.fs import FSCrashStorage
from antenna_tw.storage import ICrashStorage, StorageUnreachable

# Real dumps and captured uploads, kept in the repository (tests/data/README.md).
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
MINIDUMPS = os.path.join(DATA, "minidumps")
CAPTURES = os.path.join(DATA, "captures")


def minidump(name="linux-mini.dmp"):
    with open(os.path.join(MINIDUMPS, name), "rb") as dump_file:
        return dump_file.read()


def test_environ(tmp_path, **overrides):
    """Environment for a collector whose files all live under ``tmp_path``."""
    environ = {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"),
        "SPOOL_DIR": str(tmp_path / "spool"),
        "METRICS_CLASS": "none",
        "BASEDIR": str(tmp_path),
        "SPOOL_MIN_FREE_BYTES": "0",
        "SHUTDOWN_TIMEOUT": "2",
    }
    environ.update({key: str(value) for key, value in overrides.items()})
    return environ


@attr.s
class RunningCollector:
    """A collector listening on a loopback port in this test's reactor."""

    collector = attr.ib()
    port = attr.ib()
    tmp_path = attr.ib()

    @property
    def port_number(self):
        return self.port.getHost().port

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port_number}"

    @property
    def submit_url(self):
        return self.url + "/submit"

    @property
    def fs_root(self):
        return self.collector.storage.root

    def stored_ids(self):
        """Ids whose raw crash is in FS storage (the crash-complete marker)."""
        return sorted(
            os.path.basename(path)[: -len(".json")]
            for path in glob.glob(os.path.join(self.fs_root, "*", "raw_crash", "*.json"))
        )

    def stored(self, crash_id):
        """(raw_crash, dump_names, {name: bytes}) of a stored crash."""
        day = os.path.join(self.fs_root, "20" + crash_id[-6:])
        with open(os.path.join(day, "raw_crash", crash_id + ".json"), "rb") as f:
            raw_crash = json.loads(f.read())
        with open(os.path.join(day, "dump_names", crash_id + ".json"), "rb") as f:
            dump_names = json.loads(f.read())
        dumps = {}
        for name in dump_names:
            with open(os.path.join(day, name, crash_id), "rb") as f:
                dumps[name] = f.read()
        return raw_crash, dump_names, dumps

    async def wait_stored(self, crash_id, timeout=10.0):
        """Wait until the crash's raw crash is stored."""
        path = os.path.join(self.fs_root, "20" + crash_id[-6:], "raw_crash", crash_id + ".json")
        waited = 0.0
        while not os.path.exists(path):
            if waited > timeout:
                raise AssertionError(f"{crash_id} not stored after {timeout} s")
            await task.deferLater(reactor, 0.02, lambda: None)
            waited += 0.02
        return self.stored(crash_id)

    async def wait_idle(self, timeout=10.0):
        """Wait until the crash movers have stored everything queued."""
        waited = 0.0
        while self.collector.mover.queue_length():
            if waited > timeout:
                raise AssertionError("crash movers did not drain")
            await task.deferLater(reactor, 0.02, lambda: None)
            waited += 0.02


async def start_collector(tmp_path, environ=None, **build_kwargs):
    config = load_config(environ if environ is not None else test_environ(tmp_path), None)
    collector = build_collector(config, reactor, **build_kwargs)
    entries = collector.prepare()
    collector.start(entries)
    port = reactor.listenTCP(0, collector.site, interface="127.0.0.1")
    return RunningCollector(collector, port, tmp_path)


async def stop_collector(running):
    await running.port.stopListening()
    await running.collector.stop()  # closes the storage too


def _read_response(sock):
    """Read one HTTP response (Content-Length framed) from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        rest += piece
    return status, headers, rest[:length]


def raw_exchange(port, request_bytes, timeout=20.0, half_close=False):
    """
    Blocking: send bytes, read one response. Run it in a thread.

    ``half_close`` shuts down the sending side after the bytes, as a client
    that has nothing more to send may do.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request_bytes)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return _read_response(sock)


def open_and_send(port, data):
    """Blocking: connect and send the first part of a request; return the open socket."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(data)
    return sock


async def inflight_at_least(site, clock, count):
    """Wait (up to 4 s) until the site's uploads hold at least ``count`` bytes."""
    for _ in range(200):
        if site.admission.inflight_bytes >= count:
            return
        await task.deferLater(clock, 0.02, lambda: None)
    raise AssertionError(site.admission.inflight_bytes)


def raw_request(port, request_bytes, **kwargs):
    """A Deferred of (status, headers, body) for raw bytes sent to ``port``."""
    return threads.deferToThread(raw_exchange, port, request_bytes, **kwargs)


def in_thread(function, *args, **kwargs):
    """Run a blocking client call off the reactor thread (the server runs on it)."""
    return defer.ensureDeferred(threads.deferToThread(function, *args, **kwargs))


def http_request(body, headers, *, path="/submit", method="POST", chunked=False,
                 chunk_size=65536, chunk_extension=b"", version=b"HTTP/1.1"):
    """Raw request bytes; ``headers`` is a list of (name, value) sent as given."""
    head = [b"%s %s %s" % (method.encode(), path.encode(), version), b"Host: 127.0.0.1"]
    for name, value in headers:
        head.append(f"{name}: {value}".encode("latin-1"))
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
        pieces = []
        for start in range(0, len(body), chunk_size):
            piece = body[start:start + chunk_size]
            pieces.append(b"%x%s\r\n%s\r\n" % (len(piece), chunk_extension, piece))
        payload = b"".join(pieces) + b"0\r\n\r\n"
    else:
        if not any(name.lower() == "content-length" for name, _ in headers):
            head.append(b"Content-Length: %d" % len(body))
        payload = body
    return b"\r\n".join(head) + b"\r\n\r\n" + payload


@implementer(ICrashStorage)
class NeverStorage:
    """A storage backend that never finishes a save (for backlog tests)."""

    name = "never"
    health_ttl = 0.0

    @classmethod
    def from_settings(cls, settings, reactor, threadpool, concurrency=None):
        return cls()

    def verify(self):
        pass

    def save_crash(self, crash):
        return defer.Deferred()

    def check_health(self):
        return defer.succeed([])

    def close(self):
        return defer.succeed(None)


class StubbornStorage(NeverStorage):
    """
    Storage that misbehaves at shutdown: a save shrugs off its cancellation
    (as a request retried after being cancelled would) and ``close`` never
    fires. The stop must end by its deadline all the same.
    """

    name = "stubborn"

    def save_crash(self, crash):
        async def save():
            while True:
                try:
                    await task.deferLater(reactor, 3600, lambda: None)
                except defer.CancelledError:
                    continue
        return defer.ensureDeferred(save())

    def close(self):
        return defer.Deferred()


class UnreachableStorage(NeverStorage):
    """Storage whose start-up check finds nothing answering; ``checks`` counts the checks."""

    name = "unreachable"
    checks = 0

    def verify(self):
        type(self).checks += 1
        raise StorageUnreachable("storage at http://127.0.0.1:9: no answer (Connection refused)")


@implementer_only(ICrashStorage)  # not IFileCrashStorage: the movers go through save_crash
class SlowFSStorage(FSCrashStorage):
    """
    Filesystem storage that takes ``seconds`` per save: it waits on the
    reactor's clock (never sleeping in the reactor thread), then saves.
    """

    seconds = 2.0
    name = "slow-fs"

    @classmethod
    def from_settings(cls, settings, reactor, threadpool, concurrency=None):
        return cls(settings.fs_root, reactor, threadpool)

    def save_crash(self, crash):
        waited = task.deferLater(self.reactor, self.seconds, lambda: None)
        return waited.addCallback(lambda _: threads.deferToThreadPool(
            self.reactor, self.threadpool, FSCrashStorage.save_crash_blocking, self, crash))


class QuickSlowFSStorage(SlowFSStorage):
    """SlowFSStorage at 0.3 s per save."""

    seconds = 0.3


def gzip_bomb(inflated_mib, boundary="bomb"):
    """A gzipped multipart body whose dump is ``inflated_mib`` MiB of zeros: about 1 KB per MiB."""
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    pieces = [squeezer.compress(
        b'--%s\r\nContent-Disposition: form-data; name="ProductName"\r\n\r\nTest\r\n'
        b'--%s\r\nContent-Disposition: form-data; name="upload_file_minidump"; '
        b'filename="bomb.dmp"\r\nContent-Type: application/octet-stream\r\n\r\n'
        % (boundary.encode(), boundary.encode()))]
    zeros = bytes(1 << 20)
    pieces += [squeezer.compress(zeros) for _ in range(inflated_mib)]
    pieces += [squeezer.compress(b"\r\n--%s--\r\n" % boundary.encode()), squeezer.flush()]
    return b"".join(pieces)


def normalized(answer):
    """An HTTP answer without what differs between two identical requests."""
    answer = re.sub(rb"\r\nDate: [^\r]*", b"", answer)
    return re.sub(rb"CrashID=bp-[0-9a-f-]{36}", b"CrashID=bp-<id>", answer)


def crash_id_from(answer):
    """The id in a ``CrashID=bp-<id>\\n`` answer; AssertionError for anything else."""
    text = answer.decode("utf-8") if isinstance(answer, bytes) else answer
    assert text.startswith("CrashID=bp-") and text.endswith("\n"), text
    return text[len("CrashID=bp-"):-1]


def multipart_body(parts, boundary="b0und", preamble=b"", epilogue=b""):
    """
    A multipart body from ``(headers, data)`` pairs, headers a list of
    ``"Name: value"`` strings, sent exactly as given.
    """
    marker = b"--" + boundary.encode("latin-1")
    body = [preamble]
    for headers, data in parts:
        head = b"".join(h.encode("latin-1") + b"\r\n" for h in headers)
        body.append(marker + b"\r\n" + head + b"\r\n" + data + b"\r\n")
    body.append(marker + b"--\r\n" + epilogue)
    return b"".join(body)


def text_part(name, value, ctype="text/plain; charset=utf-8"):
    headers = [f'Content-Disposition: form-data; name="{name}"']
    if ctype:
        headers.append(f"Content-Type: {ctype}")
    return headers, value if isinstance(value, bytes) else value.encode("utf-8")


def dump_part(name, data, ctype="application/octet-stream", filename=None):
    headers = [f'Content-Disposition: form-data; name="{name}"; '
               f'filename="{filename or name + ".dmp"}"']
    if ctype:
        headers.append(f"Content-Type: {ctype}")
    return headers, data


PACKET = re.compile(r"^(?P<name>[^:]+):(?P<value>[^|]+)\|(?P<kind>[a-z]+)(?:\|#(?P<tags>.*))?$")


class StatsdListener(protocol.DatagramProtocol):
    """Keeps every statsd line it receives."""

    def __init__(self):
        self.lines = []

    def datagramReceived(self, data, address):
        self.lines.extend(line for line in data.decode().splitlines() if line)

    def metrics(self):
        """``{name: [(kind, value, tags)]}`` of the lines so far."""
        found = {}
        for line in self.lines:
            match = PACKET.match(line)
            assert match, line
            found.setdefault(match["name"], []).append(
                (match["kind"], match["value"], match["tags"]))
        return found


class ImmediateReactor(task.Clock):
    """A Clock whose callFromThread runs at once (with ImmediatePool)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


@attr.s
class ImmediatePool:
    """Runs each 'thread-pool' job at once and counts the jobs."""

    jobs = attr.ib(default=0)

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        self.jobs += 1
        _run_job(on_result, f, args, kwargs)


def _run_job(on_result, f, args, kwargs):
    try:
        result = f(*args, **kwargs)
    except BaseException:
        on_result(False, Failure())
    else:
        on_result(True, result)


@attr.s
class ManualPool:
    """Holds each 'thread-pool' job until the test runs it (``run_next``, ``run_all``)."""

    waiting = attr.ib(factory=list)
    jobs = attr.ib(default=0)

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        self.waiting.append((on_result, f, args, kwargs))

    def run_next(self):
        self.jobs += 1
        _run_job(*self.waiting.pop(0))

    def run_all(self):
        while self.waiting:
            self.run_next()
