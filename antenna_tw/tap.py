"""``twistd antenna``: command-line options and the service maker."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from twisted.application.service import IService
from twisted.python import usage

from antenna_tw import __version__
from antenna_tw.config import ConfigError, load_config
from antenna_tw.logs import Logger, make_observer
from antenna_tw.prometheus import MULTIPROC_DIR, private_directory
from antenna_tw.prometheus import wanted as prometheus_wanted
from antenna_tw.publisher import PublisherUnavailable, publisher_class
from antenna_tw.sentry import with_sentry
from antenna_tw.startup import start_up_check
from antenna_tw.storage import StorageUnavailable, storage_class
from antenna_tw.workers import (
    Worker,
    WorkerSupervisor,
    builtin_storage,
    check_port,
    console_shards,
    forbid_pyopenssl,
    open_listener,
    publisher_checks_without_tls,
    publisher_needs_tls,
    storage_needs_tls,
    usable_cpus,
    without_pyopenssl,
)

if TYPE_CHECKING:
    from twisted.logger import ILogObserver

    from antenna_tw.config import Config

# What this module imports is imported by every `twistd antenna` process,
# the supervising parent included, before the reactor: nothing here may
# import the reactor, twisted.internet.endpoints (it loads pyOpenSSL) or the
# web stack. See antenna_tw/workers/footprint.py.


def _workers(value: str) -> int:
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
        ["workers", "w", None,
         "worker processes sharing the port (0: serve in this process; default: one "
         "per CPU this process may use, after its affinity and cgroup quota)", _workers],
        ["worker-index", None, None, "internal: this process is worker N", int],
        ["parent-pid", None, None, "internal: the supervising parent's pid", int],
    ]

    def postOptions(self) -> None:
        if self["workers"] is None:
            self["workers"] = usable_cpus()


def _worker_args(options: usage.Options) -> Callable[[int], list[str]]:
    def args(index: int) -> list[str]:
        argv = ["-n", "--pidfile=", "antenna", "--port", options["port"],
                "--workers", str(options["workers"]), "--worker-index", str(index),
                "--parent-pid", str(os.getpid())]
        if options["env"]:
            argv += ["--env", options["env"]]
        return argv
    return args


def _supervisor(options: usage.Options, config: Config,
                observer: ILogObserver) -> WorkerSupervisor:
    """
    The parent of ``--workers N``: it checks what it can, then only
    supervises. It never serves HTTP nor speaks TLS, so it imports neither
    the web stack nor pyOpenSSL. The start-up checks of our storage classes
    need no pyOpenSSL either (S3's uses http.client and the standard
    library's ``ssl``); another storage class is checked outside the block.
    Then it opens the one listening socket that every worker serves, with
    the plain ``socket`` module (Twisted's endpoints would load pyOpenSSL).
    """
    check_port(options["port"])
    storage = config.storage
    publish = config.publish
    # Only the parent checks: its workers, restarted or not, never wait for
    # storage. What does not answer is a warning, not a refusal (startup.py).
    log = Logger(namespace="antenna.startup", observer=observer)
    with without_pyopenssl():
        from twisted.internet import reactor

        if builtin_storage(storage):
            start_up_check(storage_class(storage.crashstorage_class).from_settings(
                storage, reactor, None).verify, log)
        if publisher_checks_without_tls(publish):
            start_up_check(publisher_class(publish.crashpublish_class).from_settings(
                publish, storage, reactor, None).verify, log)
    if not builtin_storage(storage):
        start_up_check(storage_class(storage.crashstorage_class).from_settings(
            storage, reactor, None).verify, log)
    if not publisher_checks_without_tls(publish):
        start_up_check(publisher_class(publish.crashpublish_class).from_settings(
            publish, storage, reactor, None).verify, log)
    # The workers' Prometheus files, added up by whichever answers /metrics.
    metrics_dir = (private_directory(reactor) if prometheus_wanted(config.app.metrics_class)
                   else None)
    return WorkerSupervisor(
        reactor, options["workers"], _worker_args(options),
        stop_timeout=config.spool.shutdown_timeout + 15, log_observer=observer,
        listener=open_listener(options["port"]), metrics_dir=metrics_dir)


def _with_console(options: usage.Options, config: Config, main: IService,
                  observer: ILogObserver, collector: Any = None) -> IService:
    """
    ``main`` with the console beside it when CONSOLE_PORT is set. The
    ``--workers`` parent (``collector`` None) serves it from the workers'
    shard files; a single process (``collector``) from its own memory.
    """
    if not config.console.console_port:
        return main
    from twisted.internet import reactor

    from antenna_tw.console.service import (
        ServiceBeside,
        console_description,
        console_threadpool,
        node_console,
        process_console,
    )

    description = console_description(config.console, options["port"])
    if collector is None:
        pool = console_threadpool()
        node = console_shards(config.spool.spool_dir, options["workers"], reactor, pool)
        console = node_console(config, description, node, reactor, pool,
                               builtin_storage(config.storage))
    else:
        console = process_console(config, description, collector, reactor,
                                  builtin_storage(config.storage))
    return ServiceBeside(main, console, observer)


def makeService(options: usage.Options, environ: Mapping[str, str] | None = None,
                stream: TextIO | None = None) -> IService:
    """Build the collector (or the worker supervisor); a bad option exits with one line."""
    stream = stream or sys.stdout  # captured before twistd redirects stdout
    index = options["worker-index"]
    try:
        config = load_config(environ, options["env"])
        observer = with_sentry(
            make_observer(stream, config.app.logging_level, config.app.host_id,
                          config.app.logging_repeat_interval),
            config.app.secret_sentry_dsn, config.app.host_id, __version__)
        if index is None:  # once, by the process the operator started
            log = Logger(namespace="antenna.config", observer=observer)
            for warning in config.warnings:
                log.warn("{warning}", warning=warning)
            if config.console.console_port:  # refused before anything listens
                from antenna_tw.console.service import console_description

                console_description(config.console, options["port"])
        if options["workers"] > 0 and index is None:
            return _with_console(options, config, _supervisor(options, config, observer),
                                 observer)
        if index is not None:
            # A worker serves the parent's plain TCP socket; it needs TLS
            # only for the storage's and the publisher's own connections.
            if not (storage_needs_tls(config.storage)
                    or publisher_needs_tls(config.publish)):
                forbid_pyopenssl()
            from twisted.internet import reactor

            worker = Worker(index, options["workers"], options["parent-pid"],
                            config.spool.spool_dir)
            worker.start()
            # Each worker gets its shard and its share of the size limits.
            config = worker.configure(config)
            endpoint = worker.endpoint(reactor)
        else:
            # One process, any strports description (ssl: included).
            from twisted.internet import reactor
            from twisted.internet.endpoints import serverFromString

            endpoint = serverFromString(reactor, options["port"])
            worker = None
            if prometheus_wanted(config.app.metrics_class):
                # Set before build_collector imports prometheus_client.
                os.environ[MULTIPROC_DIR] = private_directory(reactor)
        from antenna_tw.app import StartupError, build_collector
        from antenna_tw.intake.connections import raise_descriptor_limit

        raise_descriptor_limit()  # this process serves: connections, then files (MAX_CONNECTIONS)
        from antenna_tw.service import CollectorService

        try:
            collector = build_collector(config, reactor, worker=worker)
            # A worker skips the storage and publisher checks: its parent
            # ran them, and a restarted worker must serve at once.
            entries = collector.prepare(check=worker is None)
        except StartupError as error:
            raise ConfigError(str(error)) from None
    except (ConfigError, StorageUnavailable, PublisherUnavailable, ValueError,
            OSError) as error:
        raise SystemExit(f"antenna: cannot start: {error}") from None
    service = CollectorService(collector, endpoint, options["port"], entries, observer)
    if index is not None:
        return service  # a worker: its parent serves the console
    try:
        return _with_console(options, config, service, observer, collector)
    except ValueError as error:
        raise SystemExit(f"antenna: cannot start: {error}") from None
