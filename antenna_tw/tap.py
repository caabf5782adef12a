"""``twistd antenna``: command-line options and the service maker."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO, cast

from twisted.application.service import IService
from twisted.python import usage

from antenna_tw import __version__
from antenna_tw.config import ConfigError, load_config
from antenna_tw.logs import Destination, Logger, make_observer, twistd_destination
from antenna_tw.memory import keep_freed_memory
from antenna_tw.prometheus import MULTIPROC_DIR, private_directory
from antenna_tw.prometheus import wanted as prometheus_wanted
from antenna_tw.publisher import PublisherUnavailable, publisher_class
from antenna_tw.sentry import with_sentry
from antenna_tw.startup import start_up_check
from antenna_tw.storage import StorageUnavailable, storage_class
from antenna_tw.workers import (
    EveryPortEndpoint,
    PortError,
    UnknownPortKind,
    Worker,
    WorkerSupervisor,
    builtin_storage,
    check_shareable,
    console_shards,
    forbid_pyopenssl,
    open_listeners,
    parse_port,
    publisher_checks_without_tls,
    publisher_needs_tls,
    socket_activation,
    storage_needs_tls,
    usable_cpus,
    without_pyopenssl,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IStreamServerEndpoint
    from twisted.logger import ILogObserver

    from antenna_tw.config import Config, ConsoleSettings
    from antenna_tw.console.service import ConsolePort
    from antenna_tw.workers import Port, SharedPort

# What this module imports is imported by every `twistd antenna` process,
# the supervising parent included, before the reactor: nothing here may
# import the reactor, twisted.internet.endpoints (it loads pyOpenSSL) or the
# web stack. See antenna_tw/workers/footprint.py.


DEFAULT_PORT = "tcp:8000:interface=127.0.0.1"


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
        ["env", "e", None, "env file with KEY=value settings (the environment wins)"],
        ["workers", "w", None,
         "worker processes sharing the port (0: serve in this process; default: one "
         "per CPU this process may use, after its affinity and cgroup quota)", _workers],
        ["worker-index", None, None, "internal: this process is worker N", int],
        ["parent-pid", None, None, "internal: the supervising parent's pid", int],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["port"] = []

    def opt_port(self, description: str) -> None:
        """
        strports description of a listening port; repeat it for several
        (e.g. HTTP and HTTPS) [default: tcp:8000:interface=127.0.0.1]
        """
        self["port"].append(description)

    opt_p = opt_port

    def postOptions(self) -> None:
        if self["workers"] is None:
            self["workers"] = usable_cpus()
        if not self["port"]:
            self["port"] = [DEFAULT_PORT]


def _ports(options: usage.Options) -> list[Port | str]:
    """
    Every ``--port``, parsed once, up front (PortError, one line, if one is
    bad or, with workers, cannot be shared); with ``--workers 0`` a kind
    this collector does not know stays a string, for twistd's endpoint
    plugins.
    """
    ports: list[Port | str] = []
    for description in options["port"]:
        try:
            port = parse_port(description)
            ports.append(check_shareable(port) if options["workers"] > 0 else port)
        except UnknownPortKind as error:
            if options["workers"] > 0:
                raise PortError(description, f"{error.reason} (--workers 0 serves the kinds "
                                "of Twisted's endpoint plugins too)") from None
            ports.append(description)
    return ports


def _worker_args(options: usage.Options,
                 destination: Destination | None = None) -> Callable[[int], list[str]]:
    # A worker logs to syslog itself, or to its stdout: the parent's, or a
    # pipe to the parent, which writes its lines to the log file.
    logging = [] if destination is None or destination.syslog is None else [
        "--syslog", "--prefix", str(_twistd_options(options).get("prefix") or "twisted")]

    def args(index: int) -> list[str]:
        argv = ["-n", *logging, "--pidfile=", "antenna"]
        for description in options["port"]:
            argv += ["--port", description]
        argv += ["--workers", str(options["workers"]), "--worker-index", str(index),
                "--parent-pid", str(os.getpid())]
        if options["env"]:
            argv += ["--env", options["env"]]
        return argv
    return args


def _twistd_options(options: usage.Options) -> dict[str, object]:
    """twistd's own options (``--logfile``, ``--syslog``...); none when run outside twistd."""
    parent = getattr(options, "parent", None)
    return dict(parent) if parent is not None else {}


def _supervisor(options: usage.Options, config: Config, observer: ILogObserver,
                ports: list[SharedPort], activation: Mapping[str, str],
                destination: Destination) -> WorkerSupervisor:
    """
    The parent of ``--workers N``: it checks what it can, then only
    supervises. It never serves HTTP nor speaks TLS, so it imports neither
    the web stack nor pyOpenSSL. The start-up checks of our storage classes
    need no pyOpenSSL either (S3's uses http.client and the standard
    library's ``ssl``); another storage class is checked outside the block.
    Then it opens the listening sockets that every worker serves, one per
    ``--port``, with the plain ``socket`` module (Twisted's endpoints would
    load pyOpenSSL), or takes those systemd passed it.
    """
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
        reactor, options["workers"], _worker_args(options, destination),
        stop_timeout=config.spool.shutdown_timeout + 15, log_observer=observer,
        listeners=open_listeners(ports, activation), metrics_dir=metrics_dir,
        relay=None if destination.to_stdout else destination.relay)


def console_port(settings: ConsoleSettings, ports: Sequence[Port | str],
                 activation: Mapping[str, str]) -> ConsolePort:
    """
    Where CONSOLE_PORT listens: parsed as ``--port`` is (``parse_port``, a
    kind only Twisted's endpoint plugins know left to them), naming
    loopback unless it names an interface, and refused (ConsoleRefused,
    one line) when ``parse_port`` or the console (``ports``: the ``/submit``
    ports) refuses it.
    """
    from antenna_tw.console.service import ConsolePort, ConsoleRefused, console_description

    given = settings.console_port
    parsed: Port | str
    try:
        parsed = parse_port(given, loopback=True)
    except UnknownPortKind:
        parsed = given
    except PortError as error:
        raise ConsoleRefused(f"CONSOLE_PORT={given}: {error.reason}") from None
    description = console_description(settings, parsed, ports)

    def endpoint() -> IStreamServerEndpoint:
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        if isinstance(parsed, str):
            return serverFromString(reactor, parsed)
        return parsed.endpoint(reactor, activation)

    return ConsolePort(description, endpoint)


def _with_console(options: usage.Options, config: Config, main: IService,
                  observer: ILogObserver, listen_on: ConsolePort | None,
                  collector: Any = None) -> IService:
    """
    ``main`` with the console beside it, listening on ``listen_on``
    (``console_port``) when CONSOLE_PORT is set. The
    ``--workers`` parent (``collector`` None) serves it from the workers'
    shard files; a single process (``collector``) from its own memory.
    """
    if listen_on is None:
        return main
    from twisted.internet import reactor

    from antenna_tw.console.service import (
        ServiceBeside,
        console_threadpool,
        node_console,
        process_console,
    )

    if collector is None:
        pool = console_threadpool()
        node = console_shards(config.spool.spool_dir, options["workers"], reactor, pool)
        console = node_console(config, listen_on, node, reactor, pool,
                               builtin_storage(config.storage))
    else:
        console = process_console(config, listen_on, collector, reactor,
                                  builtin_storage(config.storage))
    return ServiceBeside(main, console, observer)


def makeService(options: usage.Options, environ: Mapping[str, str] | None = None,
                stream: TextIO | None = None) -> IService:
    """Build the collector (or the worker supervisor); a bad option exits with one line."""
    stream = stream or sys.stdout  # captured before twistd redirects stdout
    index = options["worker-index"]
    # Before anything imports twisted.internet.endpoints, which takes them out of os.environ.
    activation = socket_activation(os.environ)
    try:
        ports = _ports(options)
        config = load_config(environ, options["env"])
        # twistd's --logfile and --syslog: where twistd would write its own lines.
        destination = twistd_destination(_twistd_options(options) or None, stream)
        observer = with_sentry(
            make_observer(destination.stream, config.app.logging_level, config.app.host_id,
                          config.app.logging_repeat_interval, config.app.logging_format,
                          destination.syslog),
            config.app.secret_sentry_dsn, config.app.host_id, __version__)
        log = Logger(namespace="antenna.config", observer=observer)
        listen_on = None
        if index is None:  # once, by the process the operator started
            for warning in config.warnings:
                log.warn("{warning}", warning=warning)
            if config.console.console_port:  # refused before anything listens
                listen_on = console_port(config.console, ports, activation)
        if options["workers"] > 0 and index is None:
            shared = cast("list[SharedPort]", ports)  # _ports checked them
            supervisor = _with_console(
                options, config,
                _supervisor(options, config, observer, shared, activation, destination), observer,
                listen_on)
            log.info("{summary}", summary=config.summary())  # once it can start
            return supervisor
        # The processes that take crashes (not a supervising parent).
        keep_freed_memory(config.app.memory_keep_bytes)
        endpoint: IStreamServerEndpoint
        if index is not None:
            # A worker serves the parent's sockets; it needs TLS for an
            # ssl: port and for the storage's and the publisher's own
            # connections.
            if not (storage_needs_tls(config.storage) or publisher_needs_tls(config.publish)
                    or any(port.tls for port in cast("list[Port]", ports))):
                forbid_pyopenssl()
            from twisted.internet import reactor

            worker = Worker(index, options["workers"], options["parent-pid"],
                            config.spool.spool_dir)
            worker.start()
            # Each worker gets its shard and its share of the size limits.
            config = worker.configure(config)
            log.info("worker {index} of {count}: spool shard {shard}, SPOOL_MAX_BYTES "
                     "{spool_max_bytes} and MAX_INFLIGHT_BYTES {inflight} (its share)",
                     index=index, count=options["workers"], shard=config.spool.spool_dir,
                     spool_max_bytes=config.spool.spool_max_bytes,
                     inflight=config.intake.max_inflight_bytes)
            endpoint = worker.endpoint(reactor, cast("list[Port]", ports))
        else:
            # One process: Twisted's endpoints, and its plugins for other kinds.
            from twisted.internet import reactor
            from twisted.internet.endpoints import serverFromString

            endpoints = [serverFromString(reactor, port) if isinstance(port, str)
                         else port.endpoint(reactor, activation) for port in ports]
            endpoint = endpoints[0] if len(endpoints) == 1 else EveryPortEndpoint(endpoints)
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
    service = CollectorService(collector, endpoint, " ".join(options["port"]), entries,
                               observer)
    if index is not None:
        return service  # a worker: its parent serves the console
    try:
        node = _with_console(options, config, service, observer, listen_on, collector)
    except ValueError as error:
        raise SystemExit(f"antenna: cannot start: {error}") from None
    log.info("{summary}", summary=config.summary())  # once it can start
    return node
