"""
The collector's one logging API, ``Logger``, and its events rendered as
mozlog JSON lines or one-line text (``LOGGING_FORMAT``), written where
twistd's ``--logfile`` and ``--syslog`` say (docs/architecture.rst, *Logs*).

Every module logs through ``Logger`` (``log.info``, ``log.warn``, and
``log.failure(why, failure)`` for an error with its traceback, which also
goes to Sentry), never through twisted's own Logger or the legacy
``twisted.python.log`` (tests/unit/test_one_logging_api.py). A failure that
may repeat many times a second goes through ``log.repeats(clock)``: logged
once per interval with a count.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import string
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import IO, Any, cast

import attr
import twisted.logger
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent
from twisted.python.failure import Failure
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
LEVEL_NAMES = {level: name for name, level in LEVELS.items()}
#: The values of LOGGING_FORMAT.
FORMATS = ("mozlog", "text")
#: What an event may carry besides its message, for the lines that need it
#: (the event's key: its name in the line): the client's address, and a
#: crash's product and version. mozlog puts them in ``Fields``; the text
#: format in its client column and after the message.
EXTRA_FIELDS = {"client": "client", "crash_product": "product", "crash_version": "version"}
# A client-sent value (a product name) is cut to this many characters in a line.
MAX_VALUE_CHARS = 64

# string.Formatter's parse is the public face of the parser str.format uses.
_parse_format = string.Formatter().parse


@functools.lru_cache(maxsize=1024)
def _names_only(log_format: str) -> bool:
    """
    True when every field of ``log_format`` (and of its nested format specs)
    is a bare name: no ``.attribute``, ``[index]`` or ``name()`` call, which
    twisted's formatter treats its own way. Cached: the formats are the few
    literals of the code.
    """
    try:
        for _, name, spec, _ in _parse_format(log_format):
            if name is None:
                continue
            if "." in name or "[" in name or name.endswith("()"):
                return False
            if spec and "{" in spec and not _names_only(spec):
                return False
    except ValueError:
        return False
    return True


_ALL_LEVELS = frozenset(LogLevel.iterconstants())


class Logger(twisted.logger.Logger):
    """
    twisted's Logger, emitting the same events with less work per event: the
    level is checked against a set instead of a freshly sorted list of
    LogLevel's constants. As a class attribute it keeps the namespace it
    was given (see ``__get__``).
    """

    def __init__(self, namespace: str | None = None, source: object = None,
                 observer: ILogObserver | None = None) -> None:
        self._given_namespace = namespace is not None
        super().__init__(namespace, source, observer)

    def __get__(self, instance: object, owner: type | None = None) -> Logger:
        """
        As twisted's descriptor, except that a namespace given explicitly is
        kept: twisted replaces it with the class's path, so mozlog's ``Type``
        read ``antenna_tw.crashmover.CrashMover`` instead of Antenna's
        ``antenna.crashmover``.
        """
        if not self._given_namespace:
            return cast(Logger, super().__get__(instance, owner))  # it makes a self.__class__
        return self.__class__(self.namespace, owner if instance is None else instance,
                              observer=self.observer)

    def repeats(self, clock: IReactorTime, interval: float = 60.0) -> Repeats:
        """A ``Repeats`` logging through this logger: each keyed failure once per ``interval``."""
        return Repeats(self, clock, interval)

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if level not in _ALL_LEVELS:
            return super().emit(level, format, **kwargs)  # logs the invalid level
        kwargs.update(
            log_logger=self,
            log_level=level,
            log_namespace=self.namespace,
            log_source=self.source,
            log_format=format,
            log_time=time.time(),
        )
        if "log_trace" in kwargs:
            kwargs["log_trace"].append((self, self.observer))
        self.observer(kwargs)
        return None


def format_message(event: LogEvent) -> str:
    """
    ``formatEvent(event)``, sooner: a format whose fields are bare names
    (every one in this code) is filled in by ``str.format_map``, which gives
    the same text for those; anything else, or any error, goes to twisted's
    ``formatEvent``, which also says why an event does not format.
    """
    log_format = event.get("log_format")
    if type(log_format) is str and "log_flattened" not in event:
        if _names_only(log_format):
            try:
                return log_format.format_map(event)
            except Exception:
                pass
    return formatEvent(event)


@implementer(ILogObserver)
@attr.s
class MozLogObserver:
    """
    Writes each event as one mozlog JSON object on its own line: the same
    line ``json.dumps`` would make of the record, built from pieces that do
    not change between events.
    """

    write: Callable[[str], object] = attr.ib()
    host_id: str = attr.ib(default="")
    hostname: str = attr.ib(default=attr.Factory(socket.gethostname))
    #: This process's pid unless given, that of the child after a fork too
    #: (a twistd daemon forks after its observer is made).
    pid: int | None = attr.ib(default=None)

    def __attrs_post_init__(self) -> None:
        if self.pid is None:
            self.pid = os.getpid()
            observer = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _forked(observer))
        self._pieces()

    def _pieces(self) -> None:
        host_id = self.host_id or self.hostname
        self._after_type = (f', "Logger": "antenna", "Hostname": {json.dumps(self.hostname)}, '
                            f'"EnvVersion": "2.0", "Severity": ')
        self._after_severity = (f', "Pid": {json.dumps(self.pid)}, '
                                f'"Fields": {{"host_id": {json.dumps(host_id)}, "msg": ')

    def record(self, event: LogEvent) -> dict[str, Any]:
        """The mozlog record of ``event``, as a dict."""
        level = event.get("log_level", LogLevel.info)
        fields = {"host_id": self.host_id or self.hostname, "msg": format_message(event)}
        fields.update(_extras(event))
        failure = event.get("log_failure")
        if failure is not None:
            fields["error"] = repr(failure.value)
            fields["traceback"] = failure.getTraceback()
        return {
            "Timestamp": int(event.get("log_time", time.time()) * 1e9),
            "Type": event.get("log_namespace") or "antenna",
            "Logger": "antenna",
            "Hostname": self.hostname,
            "EnvVersion": "2.0",
            "Severity": SEVERITY.get(level, 6),
            "Pid": self.pid,
            "Fields": fields,
        }

    def __call__(self, event: LogEvent) -> None:
        namespace = event.get("log_namespace") or "antenna"
        if "log_failure" in event or type(namespace) is not str:
            self.write(json.dumps(self.record(event), default=repr) + "\n")
            return
        message = format_message(event)
        timestamp = int(event.get("log_time", time.time()) * 1e9)
        severity = SEVERITY.get(event.get("log_level", LogLevel.info), 6)
        extras = ""
        if "client" in event or "crash_product" in event:
            extras = "".join(f", {encode_basestring_ascii(key)}: {encode_basestring_ascii(value)}"
                             for key, value in _extras(event).items())
        self.write(f'{{"Timestamp": {timestamp}, "Type": {encode_basestring_ascii(namespace)}'
                   f'{self._after_type}{severity}{self._after_severity}'
                   f'{encode_basestring_ascii(message)}{extras}}}}}\n')


def _forked(observer: weakref.ref[MozLogObserver]) -> None:
    """In a forked child: the observer's lines carry the child's pid."""
    alive = observer()
    if alive is not None:
        alive.pid = os.getpid()
        alive._pieces()


def _extras(event: LogEvent) -> dict[str, str]:
    """The ``EXTRA_FIELDS`` the event has, by their names in a line, as text."""
    return {name: str(event[key]) for key, name in EXTRA_FIELDS.items()
            if event.get(key) is not None}


# Characters that would break a text line or hide what follows them: control
# characters, the Unicode line breaks str.splitlines knows, and the backslash
# that escapes them.
_ESCAPES: dict[int, str] = {code: f"\\x{code:02x}" for code in (*range(32), 0x7F, 0x85)}
_ESCAPES.update({ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                 0x1C: "\\x1c", 0x1D: "\\x1d", 0x1E: "\\x1e", 0x2028: "\\u2028",
                 0x2029: "\\u2029"})
# A column of the text format holds no space either.
_COLUMN_ESCAPES = {**_ESCAPES, ord(" "): "\\x20"}


def one_line(text: str) -> str:
    """``text`` with what would end or split a text log line escaped (``\\n``, ``\\x1b``...)."""
    return text.translate(_ESCAPES)


def _column(value: object) -> str:
    """One space-free column of a text line; ``-`` for none."""
    if value is None or value == "":
        return "-"
    return str(value).translate(_COLUMN_ESCAPES)


def client_value(value: object) -> str:
    """A client-sent value (a product name) for a log line: text, cut to ``MAX_VALUE_CHARS``."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


def address_text(address: IAddress | None) -> str:
    """
    A peer's address for a log line: ``host:port``, ``[v6 host]:port``,
    ``unix`` for a Unix socket, ``-`` when unknown.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        if address is None:
            return "-"
        return "unix" if hasattr(address, "name") else str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@implementer(ILogObserver)
@attr.s
class TextObserver:
    """
    Writes each event as one line of text (``LOGGING_FORMAT=text``)::

        TIME LEVEL LOGGER CRASH_ID CLIENT MESSAGE

    ``TIME`` is UTC, ISO 8601 to the millisecond, ``LEVEL`` one of
    ``LEVELS``; ``CRASH_ID`` and ``CLIENT`` are ``-`` when the event has
    none. The first five columns hold no space; ``MESSAGE`` is the rest of
    the line, followed by `` | product=P version=V`` when the event names
    them and by a failure's traceback. Control characters and backslashes
    in any column are escaped (``\\n``, ``\\x1b``, ``\\\\``), so a client's
    text never makes a line of its own.
    """

    write: Callable[[str], object] = attr.ib()
    # The last second's text, kept: formatting a time costs more than the rest.
    _second: int = attr.ib(default=-1, init=False)
    _second_text: str = attr.ib(default="", init=False)

    def __call__(self, event: LogEvent) -> None:
        self.write(self.line(event))

    def _time(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((when - second) * 1000):03d}Z"

    def line(self, event: LogEvent) -> str:
        """The event's line, with its newline."""
        level = LEVEL_NAMES.get(event.get("log_level", LogLevel.info), "INFO")
        text = one_line(format_message(event))
        if "crash_product" in event or "crash_version" in event:
            text += (f" | product={_column(event.get('crash_product'))}"
                     f" version={_column(event.get('crash_version'))}")
        failure = event.get("log_failure")
        if failure is not None:
            text += one_line(f"\n{failure.getTraceback()}".rstrip("\n"))
        when = event.get("log_time")
        return (f"{self._time(time.time() if when is None else when)} {level} "
                f"{_column(event.get('log_namespace') or 'antenna')} "
                f"{_column(event.get('crash_id'))} {_column(event.get('client'))} {text}\n")


@implementer(ILogObserver)
@attr.s
class LevelFilter:
    """
    Passes on events at ``level`` or above that have a namespace, as
    ``FilteringLogObserver`` with a ``LogLevelFilterPredicate`` does, with
    one set lookup instead of a predicate chain and a namespace walk.
    """

    observer: ILogObserver = attr.ib()
    level: LogLevel = attr.ib()

    def __attrs_post_init__(self) -> None:
        self._levels = frozenset(each for each in LogLevel.iterconstants() if each >= self.level)

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_level") in self._levels and event.get("log_namespace") is not None:
            if "log_trace" in event:
                event["log_trace"].append((self, self.observer))
            self.observer(event)


def make_observer(stream: IO[str], level_name: str, host_id: str,
                  repeat_interval: float = 60.0, log_format: str = "mozlog",
                  syslog: Callable[[int, str], None] | None = None) -> ILogObserver:
    """
    A filtered observer writing each event as one line (``log_format``:
    ``mozlog`` JSON or ``text``) to ``stream``: one unbuffered write per
    line, so lines reach the log even if the process is killed; to
    ``syslog(severity, line)`` instead when given. The lines twisted logs for each
    connection refused for lack of file descriptors come out as one warning
    per ``repeat_interval`` seconds.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None  # a twisted LogFile, whose file changes when it rotates

    write: Callable[[str], None]
    if fd is None:
        def write(line: str) -> None:
            stream.write(line)
            stream.flush()
    else:
        stream.flush()
        out = fd

        def write(line: str) -> None:
            data = line.encode("utf-8")
            while data:
                data = data[os.write(out, data):]

    def formatter(write: Callable[[str], object]) -> ILogObserver:
        return TextObserver(write) if log_format == "text" else MozLogObserver(write, host_id)

    observer = formatter(write) if syslog is None else SyslogObserver(formatter, syslog)
    return QuietAcceptErrors(LevelFilter(observer, LEVELS[level_name]), repeat_interval)


class Syslog:
    """
    ``send(severity, line)`` through the standard library's syslog module,
    opened as twistd's ``--syslog`` opens it (``prefix``, facility user).
    """

    def __init__(self, prefix: str) -> None:
        import syslog

        self._syslog = syslog.syslog
        syslog.openlog(prefix, 0, syslog.LOG_USER)

    def __call__(self, severity: int, line: str) -> None:
        self._syslog(severity, line)


@implementer(ILogObserver)
class SyslogObserver:
    """
    Sends each event's line (as ``formatter(write)`` writes it), without
    its newline, to ``send(severity, line)`` (a ``Syslog``) at the event's
    severity (``SEVERITY``).
    """

    def __init__(self, formatter: Callable[[Callable[[str], object]], ILogObserver],
                 send: Callable[[int, str], None]) -> None:
        self._lines: list[str] = []
        self._format = formatter(self._lines.append)
        self._send = send

    def __call__(self, event: LogEvent) -> None:
        self._format(event)
        severity = SEVERITY.get(event.get("log_level", LogLevel.info), 6)
        for line in self._lines:
            self._send(severity, line.rstrip("\n"))
        self._lines.clear()


@attr.s(frozen=True)
class Destination:
    """
    Where a process writes its lines, as twistd's options say:
    ``stream`` (stdout, or a twisted ``LogFile`` for ``--logfile``), or
    ``syslog`` (a ``Syslog``, for ``--syslog``). ``to_stdout``: lines go
    to this process's own stdout, which its ``--workers`` inherit;
    otherwise the workers' output reaches this one through pipes
    (``relay``).
    """

    stream: Any = attr.ib()
    syslog: Callable[[int, str], None] | None = attr.ib(default=None)
    to_stdout: bool = attr.ib(default=True)

    def relay(self, data: bytes, from_stderr: bool = False) -> None:
        """
        Write ``data``, whole lines a worker wrote on its stdout (or stderr),
        as they are: to the log file, or each line to syslog (stderr's as
        errors). Lines a worker wrote to syslog itself never come here.
        """
        if self.syslog is None:
            self.stream.write(data)
            self.stream.flush()
            return
        for line in data.decode("utf-8", "replace").splitlines():
            self.syslog(SEVERITY[LogLevel.error if from_stderr else LogLevel.info], line)


def twistd_destination(twistd_options: Mapping[str, Any] | None, stdout: IO[str],
                       install_rotation: Callable[[Any], None] | None = None) -> Destination:
    """
    The ``Destination`` twistd's own options choose (``twistd_options``:
    its ``--nodaemon``, ``--logfile``, ``--syslog``, ``--prefix``), as
    twistd would choose for its own text lines: syslog; else stdout with
    ``-n`` and no log file (or ``--logfile -``); else the log file, by
    default ``twistd.log``, rotated by twistd's ``LogFile`` (at 1 MB, and
    on SIGUSR1 through ``install_rotation(log_file)``). A daemon cannot log
    to stdout: that stops the start, as in twistd.
    """
    options = twistd_options or {"nodaemon": True}
    if options.get("syslog"):
        return Destination(None, Syslog(options.get("prefix") or "twisted"), to_stdout=False)
    logfile = options.get("logfile") or ""
    if logfile == "-" or (options.get("nodaemon") and not logfile):
        if not options.get("nodaemon"):
            raise SystemExit("Daemons cannot log to stdout, exiting!")
        return Destination(stdout)
    from twisted.python.logfile import LogFile

    log_file = LogFile.fromFullPath(logfile or "twistd.log")
    (install_rotation or rotate_on_sigusr1)(log_file)
    return Destination(log_file, to_stdout=False)


def rotate_on_sigusr1(log_file: Any) -> None:
    """Rotate ``log_file`` on SIGUSR1, as twistd does, unless something else handles it."""
    import signal

    if signal.getsignal(signal.SIGUSR1):
        return

    def rotate(signum: int, frame: object) -> None:
        from twisted.internet import reactor
        from twisted.internet.interfaces import IReactorThreads

        # Out of the signal handler, into the reactor's loop, as twistd does.
        cast(IReactorThreads, reactor).callFromThread(log_file.rotate)

    signal.signal(signal.SIGUSR1, rotate)


class LineBudget:
    """
    At most ``per_second`` lines a second, in bursts of as many: each
    ``allows()`` takes a line's share of the budget. A line over it is only
    counted: a warning says so at once, then once per ``interval`` seconds
    with how many were left out (``Repeats``). This keeps the per-request
    lines a flood of hostile requests makes (refusals, 413s, busy answers)
    to a bounded volume and cost. ``clock`` is the reactor.
    """

    log = Logger(namespace="antenna.logs")

    def __init__(self, clock: IReactorTime, per_second: float,
                 interval: float = 60.0, log: Logger | None = None) -> None:
        self.clock = clock
        self.per_second = per_second
        self._tokens = per_second
        self._since = clock.seconds()
        self.repeats = Repeats(log or self.log, clock, interval)

    def allows(self) -> bool:
        """True when one more line may be logged now; else it is counted."""
        now = self.clock.seconds()
        self._tokens = min(self.per_second,
                           self._tokens + (now - self._since) * self.per_second)
        self._since = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.repeats.warn("over budget", "more than {rate:g} refusal lines a second "
                          "(LOGGING_REFUSALS_PER_SECOND): the others are only counted",
                          rate=self.per_second)
        return False


@attr.s
class _Window:
    """One key's current interval: when it opened, what it held back since."""

    opened: float = attr.ib()
    held: int = attr.ib(default=0)
    last: Callable[[int, float], None] | None = attr.ib(default=None)
    timer: IDelayedCall | None = attr.ib(default=None)


class Repeats:
    """
    Logs a failure that repeats once per ``interval`` seconds, with a count.

    The first time a ``key`` is seen its line is logged at once; further
    calls with that key within the interval are only counted. When the
    interval ends, the last of them is logged with the count (``repeats``,
    and " (N times in the last S s)" in the text, " (1 time ...)" for one),
    and a new interval opens;
    an interval in which the key was not seen again ends quietly, and the
    next occurrence is logged at once. A failure reaches Sentry only as
    often as its line is logged. ``clock`` is the reactor (``task.Clock`` in
    tests).
    """

    def __init__(self, log: Logger, clock: IReactorTime, interval: float = 60.0) -> None:
        self.log = log
        self.clock = clock
        self.interval = interval
        self._windows: dict[str, _Window] = {}

    def warn(self, key: str, format: str, **kwargs: Any) -> None:
        """``log.warn(format, **kwargs)``, at most once per interval for ``key``."""
        self._note(key, lambda held, seconds: self.log.warn(
            _counted(format, held), repeats=held or 1, repeat_seconds=seconds, **kwargs))

    def failure(self, key: str, format: str, failure: Failure | None = None,
                level: LogLevel = LogLevel.critical, **kwargs: Any) -> None:
        """``log.failure(format, failure, level, **kwargs)``, once per interval for ``key``."""
        if failure is None:
            failure = Failure()
        self._note(key, lambda held, seconds: self.log.failure(
            _counted(format, held), failure, level, repeats=held or 1, repeat_seconds=seconds,
            **kwargs))

    def _note(self, key: str, emit: Callable[[int, float], None]) -> None:
        window = self._windows.get(key)
        if window is not None:
            window.held += 1
            window.last = emit
            return
        emit(0, 0.0)
        self._open(key)

    def _open(self, key: str) -> None:
        window = self._windows[key] = _Window(self.clock.seconds())
        window.timer = self.clock.callLater(self.interval, self._close, key)

    def _close(self, key: str) -> None:
        window = self._windows.pop(key)
        if window.held and window.last is not None:
            window.last(window.held, self.clock.seconds() - window.opened)
            self._open(key)  # still repeating: the next line comes an interval later

    def flush(self) -> None:
        """Log what every open interval holds back now, and stop their timers (at shutdown)."""
        windows, self._windows = self._windows, {}
        for window in windows.values():
            if window.timer is not None and window.timer.active():
                window.timer.cancel()
            if window.held and window.last is not None:
                window.last(window.held, self.clock.seconds() - window.opened)


def _counted(format: str, held: int) -> str:
    """
    ``format`` for the first line (``held`` 0); else with how many times it
    happened since the last line, even once: a bare line would read as a
    failure that had stopped and begun again.
    """
    if held == 0:
        return format
    times = "time" if held == 1 else "times"
    return format + f" ({{repeats}} {times} in the last {{repeat_seconds:.0f}} s)"


# What twisted.internet.tcp.Port logs (at info level, several lines for each
# connection) when accept() finds no file descriptor free: matched by text,
# the only public face of these events (pinned in tests/unit/test_logs_repeats.py).
ACCEPT_ERROR_FORMATS = frozenset({
    "EMFILE encountered; releasing reserved file descriptor.",
    "EMFILE recovery: Closed socket from {address}",
    "Re-reserving EMFILE recovery file descriptor.",
    "Could not accept new connection ({acceptError})",
})
_REFUSED_FORMATS = frozenset({
    "EMFILE recovery: Closed socket from {address}",
    "Could not accept new connection ({acceptError})",
})


@implementer(ILogObserver)
@attr.s
class QuietAcceptErrors:
    """
    Passes every event on to ``observer`` except the lines twisted's TCP
    port logs for each connection it cannot accept (no file descriptor
    free): of those, one warning per ``interval`` seconds says how many
    connections were refused. Times are the events' own ``log_time``, so it
    needs no clock; the count of the last interval of a shortage is logged
    with the first refusal after it, if any.
    """

    observer: ILogObserver = attr.ib()
    interval: float = attr.ib(default=60.0)
    _opened: float | None = attr.ib(default=None, init=False)
    _refused: int = attr.ib(default=0, init=False)

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_format") not in ACCEPT_ERROR_FORMATS:
            self.observer(event)
            return
        if event.get("log_format") not in _REFUSED_FORMATS:
            return  # the recovery's own steps: the refusal says enough
        now = event.get("log_time", time.time())
        reason = str(event.get("acceptError", "EMFILE"))
        if self._opened is None:
            self._opened = now
            self._refused = 0
            self._warn(event, now, "a connection was refused: no file descriptor free "
                       "({reason}); more are counted and logged once per {interval:.0f} s",
                       reason=reason, interval=self.interval)
            return
        self._refused += 1
        if now - self._opened >= self.interval:
            self._warn(event, now, "{refused} connections refused in the last {seconds:.0f} s: "
                       "no file descriptor free ({reason})", refused=self._refused,
                       seconds=now - self._opened, reason=reason)
            self._opened, self._refused = now, 0

    def _warn(self, event: LogEvent, now: float, format: str, **fields: Any) -> None:
        self.observer(dict(fields, log_format=format, log_level=LogLevel.warn,
                           log_namespace=event.get("log_namespace"), log_time=now,
                           log_source=None, log_logger=event.get("log_logger")))
