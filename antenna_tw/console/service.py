"""
Where the console listens and what it reads, and the twistd service that
runs it (``CONSOLE_PORT``; docs/console.rst, *Where it runs*).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Sequence
from typing import Any

import attr
from twisted.application.service import IService, IServiceCollection, MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import ILogObserver
from twisted.python.threadpool import ThreadPool

from antenna_tw.config import Config, ConsoleSettings, PublishSettings, StorageSettings
from antenna_tw.console.crashes import FSCrashes, ICrashFinder, NoStorage
from antenna_tw.console.node import INodeSource, LocalNode, publish_state
from antenna_tw.logs import Logger

LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


class ConsoleRefused(ValueError):
    """CONSOLE_PORT cannot be used as given; the message is one line."""


def console_description(settings: ConsoleSettings, port: Any,
                        public_ports: Sequence[Any]) -> str:
    """
    The description the console listens on: ``port`` is CONSOLE_PORT as the
    collector parses its ``--port`` (``antenna_tw.workers.parse_port`` with
    ``loopback``: an address, or a ``unix:`` or ``systemd:`` port), or, for
    a kind only Twisted's endpoint plugins know, the description itself.
    ConsoleRefused when it is the port of one of ``public_ports`` (the
    ``/submit`` ports, parsed the same way), or listens beyond loopback
    without SECRET_CONSOLE_TOKEN.
    """
    given, token = settings.console_port, settings.secret_console_token
    interface = getattr(port, "interface", None)
    if interface is not None:  # tcp:, tcp6:, ssl:
        for public in public_ports:
            if port.port != 0 and port.port == getattr(public, "port", None):
                raise ConsoleRefused(f"CONSOLE_PORT={given} is the /submit port "
                                     f"({public.description}): the console needs a port of "
                                     "its own")
        if not _loopback(interface) and not token:
            raise ConsoleRefused(
                f"CONSOLE_PORT={given} listens on {interface or 'every interface'}, beyond "
                "loopback, and SECRET_CONSOLE_TOKEN is empty: set a token or listen on "
                "127.0.0.1")
    elif getattr(port, "address", None) is None and not token:  # not unix:
        raise ConsoleRefused(f"CONSOLE_PORT={given}: only tcp:, tcp6:, ssl: and unix: "
                             "consoles may run without SECRET_CONSOLE_TOKEN")
    return port if isinstance(port, str) else str(port.description)


def _loopback(interface: str) -> bool:
    if interface.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def crash_finder(storage: StorageSettings, publish: PublishSettings, reactor: Any,
                 threadpool: ThreadPool, backend: str | None) -> ICrashFinder:
    """
    What reads storage for the console: ``backend`` is the built-in storage
    (``fs``, ``s3``; footprint.builtin_storage), anything else is not read.
    """
    published = publish.crashpublish_class != "none"
    if backend == "fs":
        return FSCrashes(storage.fs_root, reactor, threadpool, published=published)
    if backend == "s3":
        from antenna_tw.console.s3 import S3Crashes
        from antenna_tw.ext.s3.client import build_connection

        return S3Crashes(build_connection(storage, reactor, threadpool, concurrency=4),
                         storage.raw_crash_layout, published=published)
    return NoStorage()


def console_threadpool() -> ThreadPool:
    """The console's own pool: its disk reads never wait behind the crash movers'."""
    return ThreadPool(minthreads=1, maxthreads=4, name="antenna-console")


@attr.s(frozen=True)
class ConsolePort:
    """Where the console listens: ``endpoint()`` is Twisted's, ``description`` names it."""

    description: str = attr.ib()
    endpoint: Callable[[], IStreamServerEndpoint] = attr.ib()


@attr.s
class ConsoleService(Service):
    """
    Listens on ``listen_on`` with the console's site while running; starts and
    stops its thread pool. A port that cannot be opened fails the start
    (twistd stops).
    """

    reactor: Any = attr.ib()
    listen_on: ConsolePort = attr.ib()
    resource: Any = attr.ib()
    threadpool: ThreadPool = attr.ib()
    closing: list[Any] = attr.ib(factory=list)  # things with close() -> Deferred, at stop
    log = Logger(namespace="antenna.console")

    def __attrs_post_init__(self) -> None:
        self._port: Any = None

    def startService(self) -> None:
        """Start the pool, then listen (raising if the port cannot be opened)."""
        from antenna_tw.console.web import QuietSite

        super().startService()
        self.threadpool.start()
        site = QuietSite(self.resource)
        site.noisy = False
        site.displayTracebacks = False
        failed: list[Any] = []
        try:
            listening = self.listen_on.endpoint().listen(site)
        except Exception:
            listening = defer.fail()
        listening.addCallbacks(lambda port: setattr(self, "_port", port), failed.append)
        if failed:
            self.threadpool.stop()
            failed[0].raiseException()
        self.log.info("console listening on {port}", port=self.listen_on.description)

    def stopService(self) -> defer.Deferred[None]:
        """Stop listening, close storage connections, stop the pool."""
        super().stopService()
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            await port.stopListening()
        for thing in self.closing:
            await thing.close()
        self.threadpool.stop()


def node_console(config: Config, port: ConsolePort, node: INodeSource, reactor: Any,
                 threadpool: ThreadPool, backend: str | None) -> ConsoleService:
    """
    The console of the ``--workers`` parent: ``node`` reads the workers'
    shards; storage (``backend``: ``fs``, ``s3``, ``noop`` or None for a
    class of your own) is read, and its health checked, by the parent itself.
    """
    from antenna_tw.storage import storage_class

    storage = (storage_class(config.storage.crashstorage_class).from_settings(
        config.storage, reactor, threadpool) if backend is not None else UncheckedStorage())
    finder = crash_finder(config.storage, config.publish, reactor, threadpool, backend)
    service = build_console_service(config.console, port, node, finder, storage,
                                    reactor, threadpool)
    if backend == "s3":
        service.closing.append(storage)
    return service


def process_console(config: Config, port: ConsolePort, collector: Any,
                    reactor: Any, backend: str | None) -> ConsoleService:
    """The console of a single process (``--workers 0``): ``collector``'s own memory."""
    mover, admission = collector.mover, collector.admission
    node = LocalNode(
        collector.figures, collector.spool.directory,
        lambda: (mover.queue_length(), mover.oldest_age(), admission.used_bytes(),
                 mover.retrying()),
        lambda: publish_state(collector.publish_queue), os.getpid())
    pool = console_threadpool()
    finder = crash_finder(config.storage, config.publish, reactor, pool, backend)
    return build_console_service(config.console, port, node, finder,
                                 collector.storage, reactor, pool)


@attr.s
class UncheckedStorage:
    """A storage class of your own, which the console does not check."""

    name = "custom"

    def check_health(self) -> defer.Deferred[list[str]]:
        """Nothing known: the workers' retrying count says whether saves fail."""
        return defer.succeed([])


def build_console_service(settings: ConsoleSettings, port: ConsolePort, node: INodeSource,
                          finder: ICrashFinder, storage: Any, reactor: Any,
                          threadpool: ThreadPool) -> ConsoleService:
    """The console's service: its routes over ``node``, ``finder`` and ``storage``."""
    from antenna_tw.console.minidump import summarize
    from antenna_tw.console.web import Console, Credential

    console = Console(node, finder, storage, reactor, threadpool,
                      Credential(settings.secret_console_token),
                      recent_limit=settings.console_recent_crashes, summarize=summarize)
    closing = [finder] if hasattr(finder, "close") else []
    return ConsoleService(reactor, port, console.resource(), threadpool, closing)


class ServiceBeside(MultiService):
    """The node's service (the collector, or the ``--workers`` parent) with the console."""

    def __init__(self, main: IService, console: ConsoleService,
                 log_observer: ILogObserver | None) -> None:
        super().__init__()
        self.log_observer = log_observer
        main.setServiceParent(self)
        console.setServiceParent(self)

    def setServiceParent(self, parent: IServiceCollection) -> None:
        """Joins ``parent``, first giving twistd the log observer, as the main service would."""
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)
