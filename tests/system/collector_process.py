"""The real ``twistd -n antenna`` process, for system tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import attr

from tests.s3server import free_port

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


@attr.s
class CollectorProcess:
    """A collector running as its own process, logs in files under ``directory``."""

    process = attr.ib()
    port = attr.ib()
    directory = attr.ib()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def submit_url(self):
        return self.url + "/submit"

    @classmethod
    def spawn(cls, directory, environ, args=()):
        """Start it; it may still be starting (or failing) when this returns."""
        port = free_port()
        env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true",
                   SPOOL_DIR=str(directory / "spool"), BASEDIR=str(directory),
                   METRICS_CLASS="none", SPOOL_MIN_FREE_BYTES="0")
        env.update(environ)
        with open(directory / "stdout", "wb") as out, open(directory / "stderr", "wb") as err:
            process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "antenna",
                 "--port", f"tcp:{port}:interface=127.0.0.1", *args],
                cwd=directory, env=env, stdout=out, stderr=err)
        return cls(process, port, directory)

    @classmethod
    def start(cls, directory, environ, timeout=20.0, args=()):
        collector = cls.spawn(directory, environ, args)
        collector.wait_listening(timeout)
        return collector

    def wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"collector exited {self.process.returncode}: "
                                     f"{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/__lbheartbeat__", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("collector did not listen in time")

    def heartbeat(self, timeout=15.0):
        """``(status, body)`` of /__heartbeat__."""
        try:
            with urllib.request.urlopen(self.url + "/__heartbeat__", timeout=timeout) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def output(self):
        """Everything it wrote, stdout then stderr."""
        return ((self.directory / "stdout").read_text(errors="replace")
                + (self.directory / "stderr").read_text(errors="replace"))

    def wait_exit(self, timeout=30.0):
        return self.process.wait(timeout)

    def stop(self, timeout=30.0):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
