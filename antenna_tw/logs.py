"""twisted.logger events rendered as mozlog JSON lines (SPEC.md section 8)."""

from __future__ import annotations

import json
import os
import socket
import time

import attr
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from zope.interface import implementer

SEVERITY = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}

LEVELS = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
    "CRITICAL": LogLevel.critical,
}


@implementer(ILogObserver)
@attr.s
class MozLogObserver:
    """Writes each event as one mozlog JSON object on its own line."""

    write = attr.ib()
    host_id = attr.ib(default="")
    hostname = attr.ib(default=attr.Factory(socket.gethostname))
    pid = attr.ib(default=attr.Factory(os.getpid))

    def __call__(self, event):
        level = event.get("log_level", LogLevel.info)
        fields = {"host_id": self.host_id or self.hostname, "msg": formatEvent(event)}
        failure = event.get("log_failure")
        if failure is not None:
            fields["error"] = repr(failure.value)
            fields["traceback"] = failure.getTraceback()
        record = {
            "Timestamp": int(event.get("log_time", time.time()) * 1e9),
            "Type": event.get("log_namespace") or "antenna",
            "Logger": "antenna",
            "Hostname": self.hostname,
            "EnvVersion": "2.0",
            "Severity": SEVERITY.get(level, 6),
            "Pid": self.pid,
            "Fields": fields,
        }
        self.write(json.dumps(record, default=repr) + "\n")


def make_observer(stream, level_name, host_id):
    """
    A filtered mozlog observer writing to ``stream``: one unbuffered write
    per line, so lines reach the log even if the process is killed.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None

    if fd is None:
        def write(line):
            stream.write(line)
            stream.flush()
    else:
        stream.flush()

        def write(line):
            data = line.encode("utf-8")
            while data:
                data = data[os.write(fd, data):]

    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level_name])
    return FilteringLogObserver(MozLogObserver(write, host_id), [predicate])
