"""
``POST /submit``: from a parsed upload to an answer (docs/intake.rst).

The body has already been parsed by ``intake.http.CrashRequest`` (for the
requests ``takes_body`` names); the handler takes it as one ``Upload``,
throttles, checks a client-sent ``uuid``, mints the crash id, asks admission
whether to take it, writes the crash to the spool and answers through
``answers``. It knows nothing of storage backends.
"""

from __future__ import annotations

import errno
import hmac
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes
from uuid import UUID

import attr
from klein import Klein
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from antenna_tw import answers, crashid, metricnames
from antenna_tw.admission import Admission
from antenna_tw.crash import Crash, build_raw_crash, finish_raw_crash
from antenna_tw.intake.http import CrashRequest, Upload
from antenna_tw.logs import LineBudget, Logger, address_text, client_value
from antenna_tw.throttler import ACCEPT, DEFER, FAKEACCEPT, REJECT, RESULT_NAMES, Throttler

if TYPE_CHECKING:
    from antenna_tw.config import IntakeSettings
    from antenna_tw.console.figures import Figures
    from antenna_tw.crashmover import CrashMover
    from antenna_tw.metrics import Metrics
    from antenna_tw.spool import Spool, SpoolEntry

THROTTLE_DIGITS = {ACCEPT: crashid.ACCEPT_DIGIT, DEFER: crashid.DEFER_DIGIT,
                   FAKEACCEPT: crashid.FAKEACCEPT_DIGIT, REJECT: crashid.REJECT_DIGIT}
# The paths of the /submit routes, once klein has unquoted the path and
# werkzeug has merged runs of slashes (SubmitHandler.add_routes).
SUBMIT_PATHS = (b"/submit", b"/submit/")
# A spool write that fails with one of these needs room, not a fix: a warning.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_SLASHES = re.compile(rb"//+")


def takes_body(method: bytes, raw_path: bytes) -> bool:
    """
    Whether a request with this method and raw path (as on the request
    line) may be routed to /submit, so that its body is read as an upload:
    ``POST /submit`` and ``/submit/``, and the spellings klein routes there
    too (``//submit``, ``/%73ubmit``, ``/submit%2F``). Errs towards yes:
    a body read for nothing only costs the parse; every other request's body
    is dropped unread.
    """
    if method != b"POST" and method.upper() != b"POST":
        return False
    if raw_path in SUBMIT_PATHS:
        return True  # the usual spelling, at once
    # Twisted drops the path's first byte, whatever it is, and unquotes the
    # rest (Request.postpath); klein's path is "/" and that.
    path = b"/" + unquote_to_bytes(raw_path.partition(b"?")[0][1:])
    return _SLASHES.sub(b"/", path) in SUBMIT_PATHS


@attr.s(auto_attribs=True)
class SubmitHandler:
    """The /submit route and the decisions it makes."""

    throttler: Throttler
    spool: Spool
    mover: CrashMover
    admission: Admission
    metrics: Metrics
    settings: IntakeSettings
    make_uuid: Callable[[], UUID] | None = None
    #: Seconds between two log lines of the same repeated failure (LOGGING_REPEAT_INTERVAL).
    repeat_interval: float = 60.0
    #: With the console on: counts each crash by product, version and result (console/figures.py).
    figures: Figures | None = None
    #: How many refusal lines may be logged (LOGGING_REFUSALS_PER_SECOND), shared with intake.
    refusals: LineBudget = attr.Factory(
        lambda self: LineBudget(self.admission.clock, 50.0, self.repeat_interval),
        takes_self=True)
    log = Logger(namespace="antenna.breakpad_resource")

    def __attrs_post_init__(self) -> None:
        self.repeats = self.log.repeats(self.admission.clock, self.repeat_interval)

    def add_routes(self, app: Klein) -> None:
        """Route ``POST /submit`` and ``/submit/`` of ``app`` to ``submit``."""
        for path, endpoint in (("/submit", "submit"), ("/submit/", "submit_slash")):
            app.route(path, methods=["POST"], endpoint=endpoint)(self.submit)

    def _refuse(self, reason: str, request: CrashRequest) -> answers.Answer:
        # Antenna's tag values: reason:no_content_type, not malformed_no_content_type
        tag = reason.removeprefix("malformed_")
        self.metrics.incr(metricnames.MALFORMED, tags=[f"reason:{tag}"])
        if self.refusals.allows():
            client = address_text(request.getClientAddress())
            self.log.info("refused: {reason}, from {client}", reason=reason, client=client)
        return answers.discarded(reason)

    async def submit(self, request: CrashRequest) -> bytes:
        """Answer one /submit request whose body ``request`` has read."""
        started = time.perf_counter()
        try:
            answer = await self._submit(request, request.take_upload())
        finally:
            self.metrics.timing(metricnames.ON_POST_TIME,
                                (time.perf_counter() - started) * 1000)
        return answers.write(request, answer)

    async def _submit(self, request: CrashRequest, upload: Upload) -> answers.Answer:
        if upload.refused is not None:
            return self._refuse(upload.refused, request)
        report = upload.report
        assert report is not None  # an Upload has a report or a reason
        submitted = datetime.fromtimestamp(upload.arrived, UTC)
        query = request.uri.partition(b"?")[2].decode("utf-8", "replace")
        raw_crash = build_raw_crash(
            report,
            submitted,
            _header(request, b"user-agent"),
            parse_qsl(query, keep_blank_values=True),
        )
        self.metrics.incr(metricnames.INCOMING_CRASH)

        result, rule_name, percent = await self.throttler.throttle(raw_crash)

        if "uuid" in raw_crash:
            if not self._authorized(request):
                self.metrics.incr(metricnames.UNAUTHORIZED_UUID)
                return self._refuse("unauthorized_uuid", request)
            crash_id = raw_crash["uuid"]
            if not crashid.is_valid_crash_id(crash_id):
                return self._refuse("malformed_invalid_uuid", request)
            self.log.info("{crash_id} has existing crash_id", crash_id=crash_id)
        else:
            crash_id = self._mint(submitted, THROTTLE_DIGITS[result])

        result_name = RESULT_NAMES[result]
        client = address_text(request.getClientAddress())
        # Antenna's message; the client, product and version go beside it
        # (mozlog's Fields, the text format's columns).
        self.log.info("{crash_id}: matched by {rule}; returned {result}",
                      crash_id=crash_id, rule=rule_name, result=result_name, client=client,
                      crash_product=client_value(raw_crash.get("ProductName", "")),
                      crash_version=client_value(raw_crash.get("Version", "")))
        self.metrics.incr(metricnames.THROTTLE_RULE, tags=[f"rule:{rule_name}"])
        self.metrics.incr(metricnames.THROTTLE, tags=[f"result:{result_name.lower()}"])

        if result == REJECT:
            self._count(raw_crash, result_name)
            return answers.discarded(f"rule_{rule_name}", code=200)
        busy = self.admission.busy()
        if busy:
            # One reason holds for every crash while it lasts (a full disk, a
            # full spool): once per interval, with a count.
            self.repeats.warn(f"busy: {busy}", "{crash_id}: {why}; answered busy",
                              crash_id=crash_id, why=busy, client=client)
            return self._busy()
        self._count(raw_crash, result_name)
        if result == FAKEACCEPT:
            return self._crash_id_answer(crash_id)

        finish_raw_crash(raw_crash, crash_id, rule_name)
        crash = Crash(crash_id, raw_crash, report.dump_pieces)
        written = self.spool.put(crash)
        # Queue the crash once it is spooled even if the client hangs up
        # meanwhile (which cancels this handler): it must not sit unqueued.
        # The mover may keep it in memory until it is stored (CRASHMOVER_HANDOFF_BYTES).
        written.addCallback(self._queue, crash)
        try:
            await _shielded(written)
        except defer.CancelledError:
            self.log.info("{crash_id}: client left before its answer; the crash is kept",
                          crash_id=crash_id)
            raise
        except Exception:
            self._write_failed(crash_id, Failure())
            return self._busy()
        return self._crash_id_answer(crash_id)

    def _count(self, raw_crash: dict[str, Any], result_name: str) -> None:
        # For the console's node page; nothing without it.
        if self.figures is not None:
            self.figures.crash(raw_crash.get("ProductName"), raw_crash.get("Version"),
                               result_name)

    def _write_failed(self, crash_id: str, failure: Failure) -> None:
        """
        Log a failed spool write, at most once per interval for each kind
        of failure, with a count: a full disk fails every crash that arrives.
        A full disk (or quota) is a warning without a traceback; anything
        else, with its traceback (and to Sentry). The heartbeat reports it.
        """
        error = failure.value
        if isinstance(error, OSError) and error.errno is not None:
            reason = f"{error.strerror or error} ({errno.errorcode.get(error.errno, error.errno)})"
            key = f"spool write: {reason}"
        else:
            reason = f"{type(error).__name__}: {error}"
            key = f"spool write: {type(error).__name__}"
        self.admission.write_failed(reason)
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            self.repeats.warn(key,
                              "{crash_id}: spool write failed ({reason}); answered busy",
                              crash_id=crash_id, reason=reason)
        else:
            self.repeats.failure(key,
                                 "{crash_id}: spool write failed; answered busy", failure,
                                 crash_id=crash_id)

    def _queue(self, entry: SpoolEntry, crash: Crash) -> SpoolEntry:
        self.admission.write_succeeded()
        self.mover.enqueue(entry, crash)
        self.log.debug("{crash_id} spooled", crash_id=entry.crash_id)
        return entry

    def _mint(self, submitted: datetime, digit: int) -> str:
        return crashid.create_crash_id(submitted, digit, self.make_uuid)

    def _authorized(self, request: CrashRequest) -> bool:
        token = self.settings.stage_submitter_bearer_token
        if not token:
            return False
        given = _header(request, b"authorization") or ""
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8"), token.encode("utf-8"))

    def _busy(self) -> answers.Answer:
        self.metrics.incr(metricnames.BUSY)
        return answers.busy()

    def _crash_id_answer(self, crash_id: str) -> answers.Answer:
        return answers.crash_id(self.settings.dump_id_prefix, crash_id)


# request.postpath of POST /submit and /submit/ (also of /%73ubmit: Twisted unquotes).
SUBMIT_POSTPATHS = ([b"submit"], [b"submit", b""])


class SubmitResource(Resource):
    """
    The site's root resource: ``POST /submit`` and ``POST /submit/`` go
    straight to the SubmitHandler, everything else to ``router`` (klein's
    resource), which also routes the other spellings of /submit (``//submit``)
    and answers the health endpoints, 404 and 405.

    This skips, for the one route that carries crashes, what klein does for
    every request: URL binding and matching in werkzeug, and its Deferred
    plumbing. The answers are the same either way; a request goes straight
    to the handler only when klein would route it there too.
    """

    isLeaf = True  # the path is judged here, not walked

    def __init__(self, handler: SubmitHandler, router: Resource) -> None:
        super().__init__()
        self.handler = handler
        self.router = router

    def render(self, request: CrashRequest) -> Any:
        if (request.method == b"POST" and request.postpath in SUBMIT_POSTPATHS
                and _router_accepts_host(request)):
            return self._render_submit(request)
        return self.router.render(request)

    def _render_submit(self, request: CrashRequest) -> int:
        # What klein does around a route's handler, without its router.
        prepath, postpath = request.prepath, request.postpath
        assert prepath is not None and postpath is not None  # set by requestReceived
        prepath.extend(postpath)
        request.postpath = []
        finished: list[object] = []
        request.notifyFinish().addBoth(finished.append)
        d = defer.ensureDeferred(self.handler.submit(request))
        # A client that leaves cancels the handler (see _submit).
        request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addCallbacks(_write_answer, _handler_failed, callbackArgs=(request, finished),
                       errbackArgs=(request, finished))
        d.addErrback(_log_unhandled, "Unhandled Error writing response")
        return NOT_DONE_YET


def _router_accepts_host(request: CrashRequest) -> bool:
    """
    Whether werkzeug's URL binding takes this request's host name, which
    klein binds on every request: the name, up to any colon, must encode as
    IDNA, which for ASCII means labels of 1 to 63 characters (the last may
    be empty). Names that are not ASCII are left to klein.
    """
    name = request.getRequestHostname()
    if not name.isascii():
        return False
    *labels, last = name.partition(b":")[0].split(b".")
    return len(last) < 64 and all(0 < len(label) < 64 for label in labels)


def _write_answer(answer: bytes | str | None, request: CrashRequest,
                  finished: list[object]) -> None:
    if isinstance(answer, str):
        answer = answer.encode("utf-8")
    if isinstance(answer, bytes):
        request.write(answer)
    if not finished:
        request.finish()


def _handler_failed(failure: Failure, request: CrashRequest, finished: list[object]) -> None:
    if finished:
        # The connection is gone: nobody to answer.
        if not failure.check(defer.CancelledError):
            _log_unhandled(failure, "Unhandled Error Processing Request.")
        return
    request.processingFailed(failure)  # logs it and answers 500
    if not finished:
        request.finish()


# klein logs its routes' unhandled errors through twisted.python.log; the
# fast path writes the same event (namespace, level, text) through ours.
_klein_log = Logger(namespace="log_legacy")


def _log_unhandled(failure: Failure, why: str) -> None:
    """Log ``failure`` as ``twisted.python.log.err(failure, why)`` would."""
    _klein_log.critical("{log_text}", log_text=f"{why}\n{failure.getTraceback()}")


T = TypeVar("T")


def _shielded(d: defer.Deferred[T]) -> defer.Deferred[T]:
    """A Deferred of ``d``'s result whose cancellation leaves ``d`` running."""
    outer: defer.Deferred[T] = defer.Deferred()

    def relay(result: T | Failure) -> None:
        if not outer.called:
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)
        return None

    d.addBoth(relay)
    return outer


def _header(request: CrashRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value
