"""
Publish crash ids to RabbitMQ (AMQP 0-9-1), the queue Socorro's processor reads.

Built on pika's Twisted adapter (``TwistedProtocolConnection``): pika is the
AMQP client RabbitMQ's own tutorials use, it is maintained, it runs on the
reactor through that adapter, and it exposes publisher confirms as one
Deferred per message (docs/publishing.rst says more).

What goes on the wire is what Socorro's own RabbitMQ crash storage sent:
the bare crash id as the body, ``delivery_mode`` 2 (persistent), to the
default exchange with the queue's name as routing key unless the options
say otherwise. The queue is declared durable on every connection.

An id counts as published only when the broker confirms it (``basic.ack``).
A ``basic.nack``, a message the broker returns as unroutable (published
``mandatory``), a connection or channel lost before the confirm, or no
confirm within the timeout: those ids fail with ``PublishFailed`` and the
crash movers publish them again, so the processors may see an id twice,
never zero times. After a lost connection the publisher reconnects by
itself, with ``antenna_tw.backoff.Backoff`` between tries.

``amqps://`` speaks TLS on both paths, the start-up check's (the standard
library's ``ssl``) and the reactor's (Twisted's TLS, pyOpenSSL), each
trusting the same CAs (``CRASHPUBLISH_AMQP_CA_FILE``, or the system's
store) and checking that the certificate names the URL's host.
"""

from __future__ import annotations

import ssl
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

import attr
import pika
import pika.exceptions
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from antenna_tw.backoff import Backoff
from antenna_tw.config import PublishSettings, StorageSettings
from antenna_tw.logs import Logger
from antenna_tw.publisher import (
    ICrashPublisher,
    PublisherUnavailable,
    PublisherUnreachable,
    PublishFailed,
)

# Socorro's processor queue (socorro.external.rabbitmq's routing key).
SOCORRO_QUEUE = "socorro.normal"
PERSISTENT = 2  # AMQP delivery_mode: the broker writes the message to disk
# Reconnection: a first try within a second, then at least every 10 s.
RECONNECT_BACKOFF = Backoff(base=0.5, cap=10.0)


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``*****``, for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(
        (parts.scheme, f"{parts.username or ''}:*****@{host}", parts.path, parts.query,
         parts.fragment))


def read_ca_file(path: str) -> bytes:
    """The PEM certificates in ``path``; ValueError (one line) unless ``ssl`` takes them."""
    where = f"CRASHPUBLISH_AMQP_CA_FILE={path!r}"
    try:
        with open(path, "rb") as file:
            pem = file.read()
    except OSError as error:
        raise ValueError(f"{where}: cannot read it ({error.strerror})") from None
    try:
        ssl.create_default_context(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ValueError(f"{where}: expected PEM CA certificates ({reason})") from None
    return pem


# OpenSSL's verify codes for a certificate that does not name the host.
X509_HOST_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
NOT_TRUSTED = ("TLS: the broker's certificate is not trusted ({}); trusted are the CAs of "
               "CRASHPUBLISH_AMQP_CA_FILE, or the system's store when it is empty")
NOT_NAMED = "TLS: the broker's certificate does not name the URL's host ({})"


def tls_problem(error: BaseException | None) -> str | None:
    """
    One line for a broker certificate the client refused, from either TLS
    stack (the standard library's, pyOpenSSL's); None for any other error.
    """
    if isinstance(error, ssl.SSLCertVerificationError):
        text = error.verify_message or "certificate verify failed"
        return (NOT_NAMED if error.verify_code in X509_HOST_MISMATCH else NOT_TRUSTED).format(
            text)
    # Twisted's TLS: looked up only where it ran (antenna_tw/workers/footprint.py).
    service_identity = sys.modules.get("service_identity.exceptions")
    if service_identity is not None and isinstance(error, service_identity.VerificationError):
        return NOT_NAMED.format(error)
    openssl = sys.modules.get("OpenSSL.SSL")
    if openssl is not None and isinstance(error, openssl.Error):
        # SSL.Error([(library, function, reason), ...])
        reasons = [str(entry[-1]) for entry in (error.args[0] if error.args else [])
                   if isinstance(entry, tuple) and entry]
        return NOT_TRUSTED.format("; ".join(reasons) or "handshake failed")
    return None


def describe(error: BaseException | Failure | None) -> str:
    """One line for an AMQP, socket or timeout error, without the URL's password."""
    if isinstance(error, Failure):
        error = error.value
    if error is None:
        return "no reason given"
    if isinstance(error, _Down | _Timeout):
        return str(error)  # already one line, written here
    tls = tls_problem(error)
    if tls is not None:
        return tls
    if isinstance(error, pika.exceptions.ChannelClosedByBroker
                  | pika.exceptions.ConnectionClosedByBroker):
        return f"closed by the broker: {error.reply_code} {error.reply_text}"
    if isinstance(error, pika.exceptions.NackError):
        return "refused by the broker (basic.nack)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, pika.exceptions.AMQPConnectionError) and error.args:
        # BlockingConnection wraps the cause: AMQPConnectionError((cause,)).
        inner = error.args[0]
        if isinstance(inner, BaseException):
            return describe(inner)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _recording_protocol(parameters: pika.URLParameters, reactor: Any) -> Any:
    """
    pika's ``TwistedProtocolConnection`` that keeps why its connection was
    lost (``lost``): pika fails a handshake cut short with a bare
    ``AMQPConnectionError``, whatever cut it (a TLS certificate refused).
    """
    # Imported here: the adapter imports (installs) the reactor.
    from pika.adapters.twisted_connection import TwistedProtocolConnection
    from twisted.internet.protocol import connectionDone

    class Recording(TwistedProtocolConnection):
        lost: Failure | None = None

        def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
            self.lost = reason
            super().connectionLost(reason)

    return Recording(parameters, custom_reactor=reactor)


class _Timeout(Exception):
    """No answer within the publisher's timeout."""


class _Down(Exception):
    """Not connected to the broker; the message says why."""


@implementer(ICrashPublisher)
@attr.s
class RabbitMQCrashPublisher:
    """
    Publishes each crash id as one persistent message with publisher
    confirms, on one connection and one confirm-mode channel that it opens
    when first needed and reopens after the broker goes away.
    """

    name = "rabbitmq"
    # AMQP has no batch call: a publish() call pipelines its messages and
    # waits for all their confirms, so a batch is only a bound on the wait.
    batch_size = 100
    health_ttl = 0.0

    url: str = attr.ib(repr=False)
    queue: str = attr.ib(default=SOCORRO_QUEUE)
    exchange: str = attr.ib(default="")
    routing_key: str = attr.ib(default="")
    declare_queue: bool = attr.ib(default=True)
    timeout: float = attr.ib(default=10.0)
    ca_file: str = attr.ib(default="")  # PEM CAs for amqps; empty: the system's store
    reactor: Any = attr.ib(default=None, repr=False)  # IReactorTime and IReactorTCP
    backoff: Backoff = attr.ib(default=RECONNECT_BACKOFF, repr=False)

    _protocol: Any = attr.ib(default=None, init=False, repr=False)
    _channel: Any = attr.ib(default=None, init=False, repr=False)
    _connecting: list[Deferred[Any]] | None = attr.ib(default=None, init=False, repr=False)
    _attempt: Any = attr.ib(default=None, init=False, repr=False)  # protocol being opened
    _reconnect: IDelayedCall | None = attr.ib(default=None, init=False, repr=False)
    _failures: int = attr.ib(default=0, init=False, repr=False)
    _error: str = attr.ib(default="", init=False, repr=False)
    _closing: bool = attr.ib(default=False, init=False, repr=False)
    _returned: set[str] = attr.ib(factory=set, init=False, repr=False)
    _ca_pem: bytes | None = attr.ib(default=None, init=False, repr=False)
    _trust_root: Any = attr.ib(default=None, init=False, repr=False)  # Twisted's, made once

    def __attrs_post_init__(self) -> None:
        # Read once, before the reactor runs: never a file read on it.
        if self.ca_file:
            if not self.url.strip().lower().startswith("amqps://"):
                raise ValueError("CRASHPUBLISH_AMQP_CA_FILE is set but CRASHPUBLISH_AMQP_URL "
                                 "is not amqps://: nothing would be checked against it")
            self._ca_pem = read_ca_file(self.ca_file)

    log = Logger(namespace="antenna.crashpublish")

    @classmethod
    def from_settings(cls, publish_settings: PublishSettings, storage_settings: StorageSettings,
                      reactor: Any = None, threadpool: Any = None) -> RabbitMQCrashPublisher:
        """The publisher ``CRASHPUBLISH_AMQP_*`` describe; it does not connect yet."""
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        return cls(
            url=publish_settings.amqp_url,
            queue=publish_settings.amqp_queue,
            exchange=publish_settings.amqp_exchange,
            routing_key=publish_settings.amqp_routing_key,
            declare_queue=publish_settings.amqp_declare_queue,
            timeout=publish_settings.amqp_timeout,
            ca_file=publish_settings.amqp_ca_file,
            reactor=reactor,
        )

    @property
    def shown_url(self) -> str:
        return masked_url(self.url)

    @property
    def key(self) -> str:
        """The routing key messages are published with."""
        return self.routing_key or self.queue

    def parameters(self) -> pika.URLParameters:
        parameters = pika.URLParameters(self.url)
        parameters.connection_attempts = 1
        parameters.socket_timeout = self.timeout
        parameters.stack_timeout = self.timeout
        parameters.blocked_connection_timeout = self.timeout
        if parameters.ssl_options is not None and self._ca_pem is not None:
            # The start-up check's TLS (the reactor's is in _endpoint).
            # create_default_context verifies the chain and the host name.
            parameters.ssl_options = pika.SSLOptions(
                ssl.create_default_context(cadata=self._ca_pem.decode("ascii")))
        return parameters

    # -- start-up check, before the reactor runs ------------------------------

    def verify(self) -> None:
        """
        Connect with pika's blocking client, declare the queue (durable) and
        check that the exchange exists; any failure is one line.
        PublisherUnavailable when the broker refused the credentials or the
        virtual host, or the queue or exchange is wrong; PublisherUnreachable
        when it could not be reached or went away (the start goes on).
        """
        where = f"RabbitMQ at {self.shown_url}"
        try:
            parameters = self.parameters()
        except (ValueError, TypeError) as error:
            raise PublisherUnavailable(f"CRASHPUBLISH_AMQP_URL={self.shown_url} is not a "
                                       f"usable AMQP URL: {error}") from None
        try:
            connection = pika.BlockingConnection(parameters)
        except (pika.exceptions.ProbableAuthenticationError,
                pika.exceptions.AuthenticationError):
            raise PublisherUnavailable(
                f"{where} refused the user name or password of CRASHPUBLISH_AMQP_URL") from None
        except pika.exceptions.ProbableAccessDeniedError:
            raise PublisherUnavailable(
                f"{where} refused access to the virtual host of CRASHPUBLISH_AMQP_URL") from None
        except (pika.exceptions.AMQPError, OSError) as error:
            # Refused, timed out, reset: the broker is away, not misconfigured.
            raise PublisherUnreachable(f"cannot connect to {where}: {describe(error)}") from None
        try:
            channel = connection.channel()
            channel.queue_declare(self.queue, durable=True, passive=not self.declare_queue)
            if self.exchange:
                channel.exchange_declare(self.exchange, passive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            raise PublisherUnavailable(f"{where}: {self._channel_error(error)}") from None
        except (pika.exceptions.AMQPError, OSError) as error:
            raise PublisherUnreachable(f"{where}: {describe(error)}") from None
        finally:
            if connection.is_open:
                connection.close()

    def _channel_error(self, error: pika.exceptions.ChannelClosedByBroker) -> str:
        if error.reply_code == 406:
            return (f"queue {self.queue!r} exists with other properties than a durable classic "
                    f"queue ({error.reply_text}); set CRASHPUBLISH_AMQP_DECLARE_QUEUE=false to "
                    f"use it as it is")
        if error.reply_code == 404 and self.exchange and "exchange" in error.reply_text:
            return f"no exchange {self.exchange!r} ({error.reply_text})"
        if error.reply_code == 404:
            return f"no queue {self.queue!r} ({error.reply_text})"
        return describe(error)

    # -- the connection ---------------------------------------------------------

    def _endpoint(self, parameters: pika.URLParameters) -> IStreamClientEndpoint:
        # Imported here, as the pika adapter is: endpoints loads pyOpenSSL.
        from twisted.internet.endpoints import HostnameEndpoint

        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, parameters.host, parameters.port, timeout=self.timeout)
        if parameters.ssl_options is not None:
            from twisted.internet.endpoints import wrapClientTLS
            from twisted.internet.ssl import optionsForClientTLS

            # Checks the chain (the CA file's, or platformTrust's when None)
            # and that the certificate names the host (service_identity).
            endpoint = wrapClientTLS(
                optionsForClientTLS(parameters.host, trustRoot=self._trust()), endpoint)
        return endpoint

    def _trust(self) -> Any:
        """Twisted's trust root of the CA file, or None (the system's store)."""
        if self._ca_pem is not None and self._trust_root is None:
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding
            from twisted.internet.ssl import Certificate, trustRootFromCertificates

            self._trust_root = trustRootFromCertificates(
                [Certificate.loadPEM(cert.public_bytes(Encoding.PEM))
                 for cert in x509.load_pem_x509_certificates(self._ca_pem)])
        return self._trust_root

    def _ready(self) -> Deferred[Any]:
        """The open confirm-mode channel, once connected; fails at once while the broker is away."""
        if self._closing:
            return fail(PublishFailed((), "the publisher is shutting down"))
        if self._channel is not None:
            return succeed(self._channel)
        if self._connecting is None and self._reconnect is not None:
            return fail(_Down(self._error))
        if self._connecting is None:
            self._connect()
        waiter: Deferred[Any] = Deferred()
        assert self._connecting is not None
        self._connecting.append(waiter)
        return waiter

    def _connect(self) -> None:
        self._connecting = []
        ensureDeferred(self._open()).addCallbacks(self._opened, self._open_failed)

    async def _open(self) -> tuple[Any, Any]:
        # Imported here: the adapter imports (installs) the reactor and
        # endpoints loads pyOpenSSL, neither of which the --workers parent,
        # which only runs verify(), may do (antenna_tw/workers/footprint.py).
        from twisted.internet.endpoints import connectProtocol

        parameters = self.parameters()
        protocol = _recording_protocol(parameters, self.reactor)
        self._attempt = protocol
        expired = []

        def expire() -> None:
            expired.append(True)
            if protocol.transport is not None:
                protocol.transport.abortConnection()

        timer = self.reactor.callLater(self.timeout, expire)
        try:
            await connectProtocol(self._endpoint(parameters), protocol)
            await protocol.ready
            channel = await protocol.channel()
            await channel.confirm_delivery()
            await channel.queue_declare(self.queue, durable=True,
                                        passive=not self.declare_queue)
        except pika.exceptions.ChannelClosedByBroker as error:
            self._drop(protocol)
            raise _Down(self._channel_error(error)) from None
        except Exception as error:
            self._drop(protocol)
            if expired:
                raise _Down(f"no answer within {self.timeout:g} s") from None
            tls = tls_problem(protocol.lost.value) if protocol.lost is not None else None
            if tls is not None:
                raise _Down(tls) from None
            if isinstance(error, pika.exceptions.AMQPConnectionError) and not str(error).strip(
                    "(),0123456789 "):
                # pika's Twisted adapter drops the cause of a refused handshake.
                raise _Down("AMQP handshake refused (user name, password or virtual "
                            "host of CRASHPUBLISH_AMQP_URL?)") from None
            raise
        finally:
            if timer.active():
                timer.cancel()
            self._attempt = None
        return protocol, channel

    @staticmethod
    def _drop(protocol: Any) -> None:
        if protocol.transport is not None:
            protocol.transport.abortConnection()

    def _opened(self, opened: tuple[Any, Any]) -> None:
        protocol, channel = opened
        waiters, self._connecting = self._connecting or [], None
        if self._closing:
            self._drop(protocol)
            for waiter in waiters:
                if not waiter.called:  # a cancelled publish() or health check
                    waiter.errback(PublishFailed((), "the publisher is shutting down"))
            return
        if self._failures:
            self.log.info("connected to RabbitMQ at {url} again", url=self.shown_url)
        self._failures = 0
        self._error = ""
        self._returned.clear()
        self._protocol, self._channel = protocol, channel
        channel.add_on_return_callback(self._on_return)
        channel.on_closed.addBoth(self._channel_closed, channel)
        if protocol.closed is None:  # lost while the channel was being set up
            self._connection_lost(ConnectionError("connection lost"), protocol)
        else:
            protocol.closed.addBoth(self._connection_lost, protocol)
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(channel)

    def _open_failed(self, failure: Failure) -> None:
        waiters, self._connecting = self._connecting or [], None
        self._failures += 1
        self._error = describe(failure)
        if not self._closing:
            self.log.warn("cannot connect to RabbitMQ at {url}: {error}; retrying",
                          url=self.shown_url, error=self._error)
            self._schedule_reconnect()
        for waiter in waiters:
            if not waiter.called:
                waiter.errback(_Down(self._error))

    def _schedule_reconnect(self) -> None:
        if self._reconnect is None or not self._reconnect.active():
            self._reconnect = self.reactor.callLater(
                self.backoff.delay(max(self._failures, 1)), self._reconnect_now)

    def _reconnect_now(self) -> None:
        self._reconnect = None
        if not self._closing and self._channel is None and self._connecting is None:
            self._connect()

    def _channel_closed(self, reason: Any, channel: Any) -> None:
        # A channel the broker closed (a publish to a missing exchange) takes
        # the connection with it: the next one starts clean.
        if channel is self._channel and self._protocol is not None:
            self._error = describe(reason) if isinstance(reason, BaseException) else "closed"
            self._drop(self._protocol)

    def _connection_lost(self, reason: Any, protocol: Any) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = self._channel = None
        if self._closing:
            return
        if isinstance(reason, BaseException | Failure):
            self._error = describe(reason)
        self._failures += 1
        self.log.warn("lost the connection to RabbitMQ at {url}: {error}; reconnecting",
                      url=self.shown_url, error=self._error or "closed")
        self._schedule_reconnect()

    def _on_return(self, message: Any) -> None:
        # pika's ReceivedMessage, returned before its confirm arrives;
        # _sort_out reads it then.
        self._returned.add(bytes(message.body or b"").decode("utf-8", "replace"))

    # -- publishing -------------------------------------------------------------

    def publish(self, crash_ids: Sequence[str]) -> Deferred[None]:
        """Publish each id as a persistent message; fires when the broker confirmed them all."""
        ids = list(crash_ids)
        if not ids:
            return succeed(None)
        result = self._ready()
        result.addCallback(self._publish_on, ids)

        def not_connected(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, PublishFailed) and error.crash_ids:
                raise error
            reason = error.reason if isinstance(error, PublishFailed) else describe(failure)
            raise PublishFailed(ids, f"not connected to RabbitMQ at {self.shown_url}: {reason}")

        # Cancelling the caller's Deferred (a stopping publish loop) must not
        # reach pika's own confirm Deferreds: a confirm arriving for a
        # cancelled one would raise inside pika and drop the connection.
        return self._shielded(result.addErrback(not_connected))

    @staticmethod
    def _shielded(deferred: Deferred[Any]) -> Deferred[Any]:
        """``deferred``'s outcome in a new Deferred whose cancellation stops at it."""
        outer: Deferred[Any] = Deferred()

        def settle(outcome: Any) -> None:
            if not outer.called:
                outer.callback(outcome)

        deferred.addBoth(settle)
        return outer

    def _publish_on(self, channel: Any, ids: list[str]) -> Deferred[None]:
        properties = pika.BasicProperties(delivery_mode=PERSISTENT)
        confirms: list[Deferred[Any]] = []
        for crash_id in ids:
            try:
                confirms.append(channel.basic_publish(
                    self.exchange, self.key, crash_id.encode("utf-8"), properties,
                    mandatory=True))
            except Exception as error:
                confirms.append(fail(error))
        expired: list[bool] = []
        protocol = self._protocol

        def expire() -> None:
            # Cancelling pika's Deferreds would break its bookkeeping; dropping
            # the connection fails every unconfirmed message instead.
            expired.append(True)
            if protocol is not None:
                self._drop(protocol)

        timer = self.reactor.callLater(self.timeout, expire)
        done: Deferred[Any] = DeferredList(confirms, consumeErrors=True)

        def sort_out(results: list[tuple[bool, Any]]) -> None:
            if timer.active():
                timer.cancel()
            self._sort_out(ids, results, expired)

        return done.addCallback(sort_out)

    def _sort_out(self, ids: list[str], results: list[tuple[bool, Any]],
                  expired: list[bool]) -> None:
        failed: list[str] = []
        reasons: set[str] = set()
        for crash_id, (confirmed, outcome) in zip(ids, results, strict=True):
            if crash_id in self._returned:
                self._returned.discard(crash_id)
                failed.append(crash_id)
                reasons.add(f"unroutable: no queue bound to exchange {self.exchange!r} with "
                            f"routing key {self.key!r}")
            elif confirmed or outcome.check(pika.exceptions.UnroutableError):
                # pika may pin another message's return on this one; returns
                # are read from self._returned above instead.
                continue
            else:
                failed.append(crash_id)
                reasons.add(f"no confirm within {self.timeout:g} s" if expired
                            else describe(outcome))
        if failed:
            raise PublishFailed(failed, "; ".join(sorted(reasons)))

    # -- health and shutdown ------------------------------------------------------

    def check_health(self) -> Deferred[list[str]]:
        """
        An error unless the broker answers, within the timeout, a passive
        declare of the queue on a channel of its own.
        """
        checked = self._ready().addCallback(lambda _channel: ensureDeferred(self._probe()))
        bounded = self._bounded(checked)
        return bounded.addCallbacks(
            lambda _: [],
            lambda failure: [f"rabbitmq: {self.shown_url}: {self._reason(failure)}"])

    def _reason(self, failure: Failure) -> str:
        error = failure.value
        if isinstance(error, _Down | _Timeout):
            return str(error)
        if isinstance(error, PublishFailed):
            return error.reason
        if isinstance(error, pika.exceptions.ChannelClosedByBroker):
            return self._channel_error(error)
        return describe(error)

    async def _probe(self) -> None:
        protocol = self._protocol
        if protocol is None:
            raise _Down(self._error or "not connected")
        channel = await protocol.channel()
        try:
            await channel.queue_declare(self.queue, passive=True)
            if self.exchange:
                await channel.exchange_declare(self.exchange, passive=True)
        finally:
            if channel.is_open:
                channel.close()

    def _bounded(self, deferred: Deferred[Any]) -> Deferred[Any]:
        """``deferred``'s result, or _Timeout after ``timeout`` s; ``deferred`` is not cancelled."""
        result: Deferred[Any] = Deferred()

        def expire() -> None:
            if not result.called:
                result.errback(_Timeout(f"no answer within {self.timeout:g} s"))

        timer = self.reactor.callLater(self.timeout, expire)

        def settle(outcome: Any) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                result.callback(outcome)

        deferred.addBoth(settle)
        return result

    def close(self) -> Deferred[None]:
        """Close the connection (its unconfirmed ids fail); no reconnecting after."""
        self._closing = True
        if self._reconnect is not None and self._reconnect.active():
            self._reconnect.cancel()
        self._reconnect = None
        if self._attempt is not None:
            self._drop(self._attempt)
        protocol, self._protocol, self._channel = self._protocol, None, None
        if protocol is None:
            return succeed(None)
        try:
            closed = protocol.close()
        except pika.exceptions.AMQPError:
            closed = None
        if closed is None:
            self._drop(protocol)
            return succeed(None)
        waited = self._bounded(closed)

        def after(outcome: Any) -> None:
            if isinstance(outcome, Failure):
                self._drop(protocol)

        return waited.addBoth(after)

