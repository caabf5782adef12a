"""
Trickling clients against the real ``twistd -n antenna`` process:
one process, started with descriptors soft 1,024 / hard 4,096
holds 1,200 connections that send a header line every two seconds, so
REQUEST_TIMEOUT (silence) never ends them. The process raises its soft limit
to the hard one, so a normal client still gets its crash ids and
``/__lbheartbeat__`` answers, and REQUEST_HEADER_TIMEOUT closes every
trickling connection. Figures are printed (run with ``-s``).
"""

import resource
import selectors
import socket
import sys
import threading
import time
import urllib.request

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import crash_id_from, minidump
from tests.system.test_gzip_bomb_memory import memory_kib

TRICKLERS = 1200
HEADER_TIMEOUT = 8.0
LINE_EVERY = 2.0


def _limit_descriptors():
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))


def open_files_limit(pid):
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return [int(field) for field in line.split()[3:5]]
    raise AssertionError("no Max open files line")


class Tricklers:
    """
    ``count`` connections, opened all at once, each sending a request line
    and then a header line every ``LINE_EVERY`` s; ``closed`` says when the
    server closed each (one thread watches them all).
    """

    def __init__(self, port, count):
        self.opened = {}
        self.closed = {}
        self.selector = selectors.DefaultSelector()
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            self.selector.register(sock, selectors.EVENT_WRITE)
        self.count = count
        self.stopping = threading.Event()
        self.all_open = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        line = 0
        next_line = time.monotonic() + LINE_EVERY
        while not self.stopping.is_set() and len(self.closed) < self.count:
            for key, events in self.selector.select(timeout=0.2):
                sock = key.fileobj
                if events & selectors.EVENT_WRITE:  # connected
                    self.opened[sock] = time.monotonic()
                    sock.send(b"POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    self.selector.modify(sock, selectors.EVENT_READ)
                    if len(self.opened) == self.count:
                        self.all_open.set()
                    continue
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if not data:
                    self.closed[sock] = time.monotonic()
                    self.selector.unregister(sock)
            if time.monotonic() >= next_line:
                line += 1
                for sock in self.opened:
                    if sock not in self.closed:
                        try:
                            sock.send(b"X-Trickle-%d: x\r\n" % line)
                        except OSError:
                            pass  # closed: the selector says when
                next_line += LINE_EVERY

    def wait(self, timeout):
        self.thread.join(timeout)
        self.stopping.set()
        self.thread.join()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        for sock in self.opened:
            sock.close()
        self.selector.close()


def test_1200_trickling_connections_neither_starve_clients_nor_stay(tmp_path, collectors):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"),
        "REQUEST_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    }, args=("--workers", "0"), preexec_fn=_limit_descriptors,
        # Twisted's default backlog (50) would hold most of 1,200 simultaneous
        # connects in SYN retries for seconds: not what this test is about.
        port_options=f":backlog={TRICKLERS + 100}")
    assert open_files_limit(collector.process.pid) == [4096, 4096]  # raised at start

    body, content_type = build_multipart({"ProductName": "Test"},
                                         {"upload_file_minidump": minidump()})
    idle_kib, _ = memory_kib(collector.process.pid)
    started = time.monotonic()
    tricklers = Tricklers(collector.port, TRICKLERS)
    assert tricklers.all_open.wait(HEADER_TIMEOUT / 2)
    connected = time.monotonic() - started

    statuses = []
    for _ in range(30):
        try:
            status, answer = post(collector.submit_url, body, content_type, timeout=10)
        except OSError:
            status = None
        else:
            crash_id_from(answer)
        statuses.append(status)
    with urllib.request.urlopen(collector.url + "/__lbheartbeat__", timeout=5) as answer:
        heartbeat = answer.status
    served = time.monotonic() - started
    busy_kib, _ = memory_kib(collector.process.pid)
    still_open = TRICKLERS - len(tricklers.closed)

    tricklers.wait(HEADER_TIMEOUT + 15)
    lifetimes = sorted(tricklers.closed[sock] - tricklers.opened[sock]
                       for sock in tricklers.closed)
    print(f"\n{TRICKLERS} tricklers connected in {connected:.1f} s; 30 crashes and a heartbeat "
          f"served {served:.1f} s after the first connection with {still_open} open; "
          f"{statuses.count(200)} of 30 crash ids; {len(lifetimes)} closed by the server after "
          f"{lifetimes[0]:.1f} to {lifetimes[-1]:.1f} s (REQUEST_HEADER_TIMEOUT "
          f"{HEADER_TIMEOUT:.0f} s); RSS {idle_kib / 1024:.0f} MiB before, "
          f"{busy_kib / 1024:.0f} MiB with them open "
          f"({(busy_kib - idle_kib) / TRICKLERS:.1f} KiB a connection)", file=sys.stderr)
    assert served < HEADER_TIMEOUT  # they were all open while the client was served
    assert statuses.count(200) >= 29
    assert heartbeat == 200
    assert len(lifetimes) == TRICKLERS
    assert HEADER_TIMEOUT - 0.5 < lifetimes[0] and lifetimes[-1] < HEADER_TIMEOUT + 5
    assert "Could not accept new connection" not in collector.output()
