#!/usr/bin/env python3
"""
A fast S3 stand-in for benchmarks: Debian's nginx-light taking path-style
``PUT /<bucket>/<key>`` to disk (``dav_methods PUT``), so what a benchmark
measures is the collector's own cost, not the S3 server's (moto costs more
CPU per PUT than the collector). Correctness is tested against moto, never
against this: it checks no signature, no Content-MD5 and no payload hash.

It answers what an S3 client of the collector asks for:

- ``HEAD /<bucket>`` (and ``/<bucket>/``): 200, the start-up check's and the
  heartbeat's HEAD of the bucket;
- ``PUT /<bucket>/<key>``: the body written to ``<prefix>/data/<bucket>/<key>``
  (parent directories created), 201 (new) or 204 (replaced);
- anything else: 405 in the bucket, 404 elsewhere.

Every PUT is logged to ``<prefix>/logs/puts.log`` as ``<status> <uri>``
(buffered, flushed every second), which ``PutLog`` reads incrementally to
count objects and raw crashes over time, and to empty the dumps already
counted (``truncate``) so that a long run does not fill the disk (their
inodes stay until the data folder is removed: deleting files while a run
writes slows ext4 down, see docs/performance.rst, *Method*).

Loopback only. Used by ``bench/run_bench.sh s3``; by hand::

    python3 bench/s3_standin.py --port 19400 --prefix /tmp/s3-standin   # Ctrl-C stops it
    CRASHSTORAGE_CLASS=s3 CRASHSTORAGE_ENDPOINT_URL=http://127.0.0.1:19400 \\
        CRASHSTORAGE_BUCKET_NAME=bench CRASHSTORAGE_ACCESS_KEY=x \\
        CRASHSTORAGE_SECRET_ACCESS_KEY=y .venv/bin/twistd -n antenna ...

Needs nginx with the dav module (Debian's ``nginx-light``); ``ensure_nginx``
installs it with apt-get when nginx is missing.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BUCKET = "bench"

CONF = """\
# The S3 stand-in of bench/s3_standin.py (generated; edit that file instead).
worker_processes {workers};
pid {prefix}/nginx.pid;
{user}
error_log {prefix}/logs/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    default_type application/octet-stream;
    log_format puts '$status $uri';
    access_log off;
    client_body_temp_path {prefix}/data/.tmp;  # same filesystem: PUT renames into place
    client_max_body_size 0;
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        root {prefix}/data;
        location = /{bucket} {{
            return 200;
        }}
        location = /{bucket}/ {{
            return 200;
        }}
        location /{bucket}/ {{
            access_log {prefix}/logs/puts.log puts buffer=256k flush=1s;
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            limit_except PUT {{
                deny all;
            }}
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


def ensure_nginx() -> str:
    """The nginx binary; Debian's nginx-light installed with apt-get when there is none."""
    found = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit("bench: nginx not found; apt-get install -y nginx-light")
    print("bench: installing nginx-light with apt-get", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "nginx-light"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    # Debian's package starts a system nginx on port 80: not ours, and not wanted.
    subprocess.run(["service", "nginx", "stop"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free when asked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class S3StandIn:
    """
    One nginx S3 stand-in in the foreground under ``prefix`` on
    127.0.0.1:``port`` (a free one when 0). ``start()`` waits until it
    listens; ``stop()`` stops it (SIGQUIT, then SIGKILL) and is safe to call
    twice. ``pid`` is the master's (its workers are its children).
    """

    def __init__(self, prefix: str | Path, port: int = 0, bucket: str = BUCKET,
                 workers: int = 1) -> None:
        self.prefix = Path(prefix).resolve()
        self.port = port or free_port()
        self.bucket = bucket
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``: CRASHSTORAGE_ENDPOINT_URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        """Where the objects are: ``data/<bucket>/<key>``."""
        return self.prefix / "data"

    @property
    def puts_log(self) -> Path:
        """The PUT log: one ``<status> <uri>`` line per PUT."""
        return self.prefix / "logs" / "puts.log"

    @property
    def pid(self) -> int:
        """The nginx master's pid."""
        assert self.process is not None
        return self.process.pid

    def collector_env(self) -> dict[str, str]:
        """The collector settings that store crashes here."""
        return {"CRASHSTORAGE_CLASS": "s3", "CRASHSTORAGE_ENDPOINT_URL": self.endpoint,
                "CRASHSTORAGE_BUCKET_NAME": self.bucket, "CRASHSTORAGE_REGION": "us-west-2",
                "CRASHSTORAGE_ACCESS_KEY": "bench-access-key",
                "CRASHSTORAGE_SECRET_ACCESS_KEY": "bench-secret-key"}

    def start(self, timeout: float = 15.0) -> S3StandIn:
        """Write the configuration, start nginx and wait until it listens."""
        nginx = ensure_nginx()
        if _listening(self.port):
            raise SystemExit(f"bench: port {self.port} is in use")
        for sub in ("logs", "data/.tmp", f"data/{self.bucket}"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        user = ""
        if os.geteuid() == 0:
            # A root master's workers run as nobody, who must own the data.
            group = "nogroup"
            user = f"user nobody {group};"
            for path in (self.data, self.data / ".tmp", self.data / self.bucket):
                os.chown(path, _uid("nobody"), -1)
        conf = self.prefix / "nginx.conf"
        conf.write_text(CONF.format(workers=self.workers, prefix=self.prefix, user=user,
                                    port=self.port, bucket=self.bucket))
        command = [nginx, "-p", f"{self.prefix}/", "-c", str(conf), "-e", "logs/error.log"]
        subprocess.run(command + ["-t", "-q"], check=True)
        with open(self.prefix / "logs" / "start.log", "ab") as log:
            self.process = subprocess.Popen(command + ["-g", "daemon off;"], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit("bench: the S3 stand-in exited:\n"
                                 + (self.prefix / "logs" / "error.log").read_text(
                                     errors="replace"))
            if _listening(self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise SystemExit("bench: the S3 stand-in did not listen")

    def stop(self) -> None:
        """Stop nginx (graceful, then SIGKILL after 10 s); its files stay."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def cpu_seconds(self) -> float:
        """CPU seconds of the master and its workers so far."""
        total = 0.0
        for pid in [self.pid] + _children(self.pid):
            try:
                with open(f"/proc/{pid}/stat") as fp:
                    fields = fp.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, ValueError, IndexError):
                pass
        return total / os.sysconf("SC_CLK_TCK")


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fp:
            return [int(x) for x in fp.read().split()]
    except OSError:
        return []


class PutLog:
    """
    Reads a stand-in's PUT log from where it last stopped: objects stored
    (2xx PUTs), raw crashes among them (complete crashes: the raw crash is
    PUT last), failed PUTs. The dumps it read of (``v1/<name>/<id>``) wait
    in ``dumps`` for ``empty_dumps``, which truncates them so that a long
    run keeps only inodes (separate, so a sampler can count on time and
    leave the truncating to a slower thread).
    """

    def __init__(self, standin: S3StandIn) -> None:
        self.path = standin.puts_log
        self.data = standin.data
        self.offset = 0
        self.objects = 0
        self.raw_crashes = 0
        self.failed = 0
        self.raw_ids: list[str] = []
        self.dumps: collections.deque[str] = collections.deque()  # thread-safe ends

    def read(self) -> int:
        """Read what was logged since the last call; the raw crashes so far."""
        try:
            with open(self.path, "rb") as fp:
                fp.seek(self.offset)
                chunk = fp.read()
        except FileNotFoundError:
            return self.raw_crashes
        end = chunk.rfind(b"\n") + 1  # a partial last line waits for the next read
        self.offset += end
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            status, _, uri = line.partition(" ")
            if not status.startswith("2"):
                self.failed += 1
                continue
            self.objects += 1
            if "/raw_crash/" in uri:
                self.raw_crashes += 1
                self.raw_ids.append(uri.rsplit("/", 1)[-1])
            elif "/dump_names/" not in uri:
                self.dumps.append(uri)
        return self.raw_crashes

    def empty_dumps(self) -> int:
        """Truncate the dumps read of so far; how many."""
        emptied = 0
        while self.dumps:
            uri = self.dumps.popleft()
            emptied += 1
            try:
                os.truncate(self.data / uri.lstrip("/"), 0)
            except OSError:
                pass
        return emptied


def main(argv: list[str] | None = None) -> int:
    """Run a stand-in in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--prefix", default="/tmp/antenna-tw-s3-standin")
    parser.add_argument("--bucket", default=BUCKET)
    parser.add_argument("--workers", type=int, default=1, help="nginx worker processes")
    args = parser.parse_args(argv)
    standin = S3StandIn(args.prefix, args.port, args.bucket, args.workers).start()
    print(f"S3 stand-in on {standin.endpoint}, bucket {standin.bucket!r}, data in "
          f"{standin.data}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while standin.process is not None and standin.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
