"""
``make run-s3``: the collector against a local S3, in one command.

Starts ``moto_server`` (a development dependency) on a free loopback port,
creates the bucket, then runs ``twistd -n antenna`` in the foreground with
S3 storage pointed at it; every other argument goes to ``twistd antenna``
(``--port``, ``--workers``, ``--env``). Ctrl-C or SIGTERM stops the
collector as SIGTERM would (it drains to S3 for ``SHUTDOWN_TIMEOUT``), then
moto; moto stops too when the collector exits by itself. moto keeps what it
stores in memory, and its log in a temporary directory: both are gone when
it stops; the spool stays.

    .venv/bin/python scripts/run_s3.py [--bucket NAME] [twistd antenna options]

Reuses the test suite's moto helper (tests/s3server.py); the collector
itself knows nothing of it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.s3server import REGION, MotoServer  # noqa: E402

TWISTD = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "twistd")


def main(argv: list[str]) -> int:
    """Run moto and the collector; the collector's exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--bucket", default="antenna-crashes", help="bucket to create")
    options, antenna_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="antenna-moto-") as log_dir:
        return run(options.bucket, antenna_args, log_dir)


def run(bucket: str, antenna_args: list[str], log_dir: str) -> int:
    """moto with its log in ``log_dir`` (removed after), then the collector."""
    server = MotoServer.start(log_dir, new_session=True)
    try:
        server.create_bucket(bucket)
        print(f"run-s3: moto_server on {server.endpoint}, bucket {bucket}, "
              f"log {server.log_path}", flush=True)
        env = dict(os.environ, CRASHSTORAGE_CLASS="s3", CRASHSTORAGE_ENDPOINT_URL=server.endpoint,
                   CRASHSTORAGE_BUCKET_NAME=bucket, CRASHSTORAGE_REGION=REGION,
                   CRASHSTORAGE_ACCESS_KEY=server.keys.access_key,
                   CRASHSTORAGE_SECRET_ACCESS_KEY=server.keys.secret_key,
                   AWS_EC2_METADATA_DISABLED="true")
        # Its own session: the terminal's Ctrl-C reaches this script only,
        # which passes one SIGTERM on (two would stop twistd twice).
        blocked = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)  # until the handler can pass them on
        collector = subprocess.Popen([TWISTD, "-n", "--pidfile=", "antenna", *antenna_args],
                                     env=env, start_new_session=True,
                                     preexec_fn=lambda: signal.pthread_sigmask(
                                         signal.SIG_UNBLOCK, blocked))

        def stop(signum: int, frame: object) -> None:
            if collector.poll() is None:
                collector.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        status = collector.wait()
    finally:
        server.stop()
        print("run-s3: moto_server stopped", flush=True)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
