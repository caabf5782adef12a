"""``twistd antenna``: command-line options and the service maker."""

from __future__ import annotations

import os
import sys

import attr
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from antenna_tw.config import ConfigError, load_config
from antenna_tw.logs import make_observer
from antenna_tw.reuseport import ReusePortEndpoint, parse_tcp_description
from antenna_tw.storage import StorageUnavailable, storage_class
from antenna_tw.workers import (
    WorkerSupervisor,
    adopt_orphan_shards,
    die_with_parent,
    shard_directory,
)


def _workers(value):
    count = int(value)
    if count < 0:
        raise ValueError("--workers cannot be negative")
    return count


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Breakpad/Crashpad crash report collector. Settings come from the "
        "environment and from the env file named by --env or ANTENNA_ENV."
    )
    optParameters = [
        ["port", "p", "tcp:8000:interface=127.0.0.1",
         "strports description of the listening port"],
        ["env", "e", None, "env file with KEY=value settings (the environment wins)"],
        ["workers", "w", os.cpu_count() or 1,
         "worker processes sharing the port (0: serve in this process)", _workers],
        ["worker-index", None, None, "internal: this process is worker N", int],
        ["parent-pid", None, None, "internal: the supervising parent's pid", int],
    ]


def _worker_args(options):
    def args(index):
        argv = ["-n", "--pidfile=", "antenna", "--port", options["port"],
                "--workers", str(options["workers"]), "--worker-index", str(index),
                "--parent-pid", str(os.getpid())]
        if options["env"]:
            argv += ["--env", options["env"]]
        return argv
    return args


def makeService(options, environ=None, stream=None):
    """Build the collector (or the worker supervisor); a bad option exits with one line."""
    from twisted.internet import reactor

    stream = stream or sys.stdout  # captured before twistd redirects stdout
    index = options["worker-index"]
    try:
        config = load_config(environ, options["env"])
        observer = make_observer(stream, config.app.logging_level, config.app.host_id)
        if options["workers"] > 0 and index is None:
            # The parent only supervises: it checks what it can and stays
            # small (no web stack imported here).
            parse_tcp_description(options["port"])
            storage_class(config.storage.crashstorage_class).from_settings(
                config.storage, reactor, None).verify()
            return WorkerSupervisor(
                reactor, options["workers"], _worker_args(options),
                stop_timeout=config.spool.shutdown_timeout + 15, log_observer=observer)
        if index is not None:
            die_with_parent(options["parent-pid"])
            spool_dir = config.spool.spool_dir
            adopt_orphan_shards(spool_dir, index, options["workers"])
            # Each worker gets its shard and its share of the spool's size limit.
            config = attr.evolve(config, spool=attr.evolve(
                config.spool,
                spool_dir=shard_directory(spool_dir, index),
                spool_max_bytes=config.spool.spool_max_bytes // options["workers"]))
            endpoint = ReusePortEndpoint.from_description(reactor, options["port"])
        else:
            endpoint = serverFromString(reactor, options["port"])
        from antenna_tw.app import StartupError, build_collector
        from antenna_tw.service import CollectorService

        try:
            collector = build_collector(config, reactor)
            entries = collector.prepare()
        except StartupError as error:
            raise ConfigError(str(error)) from None
    except (ConfigError, StorageUnavailable, ValueError, OSError) as error:
        raise SystemExit(f"antenna: cannot start: {error}") from None
    return CollectorService(collector, endpoint, options["port"], entries, observer)
