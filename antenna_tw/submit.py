"""
``POST /submit``: from a parsed upload to an answer (docs/intake.rst).

The body has already been parsed by ``intake.CrashRequest``; this module
throttles, checks a client-sent ``uuid``, mints the crash id, writes the crash
to the spool and answers. It knows nothing of storage backends.
"""

from __future__ import annotations

import hmac
import time
from datetime import datetime, timezone
from urllib.parse import parse_qsl

import attr
from twisted.internet import defer
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from antenna_tw import crashid, metricnames
from antenna_tw.crash import Crash, build_raw_crash, finish_raw_crash
from antenna_tw.intake.http import RETRY_AFTER_SECONDS, write_answer
from antenna_tw.logs import Logger
from antenna_tw.throttler import ACCEPT, DEFER, FAKEACCEPT, REJECT, RESULT_NAMES

STATUS_FOR_REASON = {"too_large": 413, "unauthorized_uuid": 401}
THROTTLE_DIGITS = {ACCEPT: crashid.ACCEPT_DIGIT, DEFER: crashid.DEFER_DIGIT,
                   FAKEACCEPT: crashid.FAKEACCEPT_DIGIT, REJECT: 2}


def discarded(request, reason, code=None, headers=()):
    """Answer ``Discarded=<reason>``; the status follows the reason unless given."""
    if code is None:
        code = STATUS_FOR_REASON.get(reason, 400)
    return write_answer(request, code, b"Discarded=" + reason.encode("ascii"), headers=headers)


@attr.s
class SubmitHandler:
    """The /submit route and the decisions it makes."""

    throttler = attr.ib()
    spool = attr.ib()
    mover = attr.ib()
    backpressure = attr.ib()
    metrics = attr.ib()
    settings = attr.ib()  # IntakeSettings
    make_uuid = attr.ib(default=None)
    log = Logger(namespace="antenna.breakpad_resource")

    def add_routes(self, app):
        for path, endpoint in (("/submit", "submit"), ("/submit/", "submit_slash")):
            app.route(path, methods=["POST"], endpoint=endpoint)(self.submit)

    def _refuse(self, request, reason):
        # Antenna's tag values: reason:no_content_type, not malformed_no_content_type
        tag = reason.removeprefix("malformed_")
        self.metrics.incr(metricnames.MALFORMED, tags=[f"reason:{tag}"])
        self.log.info("refused: {reason}", reason=reason)
        return discarded(request, reason)

    async def submit(self, request):
        started = time.perf_counter()
        try:
            return await self._submit(request)
        finally:
            self.metrics.timing(metricnames.ON_POST_TIME,
                                (time.perf_counter() - started) * 1000)

    async def _submit(self, request):
        if request.malformed is not None:
            return self._refuse(request, request.malformed.reason)
        report = request.crash_report
        submitted = datetime.fromtimestamp(request.arrived, timezone.utc)
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
                return self._refuse(request, "unauthorized_uuid")
            crash_id = raw_crash["uuid"]
            if not crashid.is_valid_crash_id(crash_id):
                return self._refuse(request, "malformed_invalid_uuid")
            self.log.info("{crash_id} has existing crash_id", crash_id=crash_id)
        else:
            crash_id = self._mint(submitted, THROTTLE_DIGITS[result])

        result_name = RESULT_NAMES[result]
        self.log.info("{crash_id}: matched by {rule}; returned {result}",
                      crash_id=crash_id, rule=rule_name, result=result_name)
        self.metrics.incr(metricnames.THROTTLE_RULE, tags=[f"rule:{rule_name}"])
        self.metrics.incr(metricnames.THROTTLE, tags=[f"result:{result_name.lower()}"])

        if result == REJECT:
            return discarded(request, f"rule_{rule_name}", code=200)
        busy = self.backpressure.busy()
        if busy:
            self.log.warn("{crash_id}: {why}; answered busy", crash_id=crash_id, why=busy)
            return self._busy(request)
        if result == FAKEACCEPT:
            return self._crash_id_answer(request, crash_id)

        finish_raw_crash(raw_crash, crash_id, rule_name)
        crash = Crash(crash_id, raw_crash, report.dump_pieces)
        written = self.spool.put(crash)
        # Queue the crash once it is spooled even if the client hangs up
        # meanwhile (which cancels this handler): it must not sit unqueued.
        written.addCallback(self._queue)
        try:
            await _shielded(written)
        except defer.CancelledError:
            self.log.info("{crash_id}: client left before its answer; the crash is kept",
                          crash_id=crash_id)
            raise
        except Exception:
            self.log.failure("{crash_id}: spool write failed; answered busy", crash_id=crash_id)
            return self._busy(request)
        return self._crash_id_answer(request, crash_id)

    def _queue(self, entry):
        self.mover.enqueue(entry)
        self.log.debug("{crash_id} spooled", crash_id=entry.crash_id)
        return entry

    def _mint(self, submitted, digit):
        return crashid.create_crash_id(submitted, digit, self.make_uuid)

    def _authorized(self, request):
        token = self.settings.stage_submitter_bearer_token
        if not token:
            return False
        given = _header(request, b"authorization") or ""
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8"), token.encode("utf-8"))

    def _busy(self, request):
        self.metrics.incr(metricnames.BUSY)
        return discarded(request, "busy", code=503,
                         headers=[(b"Retry-After", RETRY_AFTER_SECONDS)])

    def _crash_id_answer(self, request, crash_id):
        prefix = self.settings.dump_id_prefix
        return write_answer(request, 200, f"CrashID={prefix}{crash_id}\n".encode("utf-8"))


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

    def __init__(self, handler, router):
        super().__init__()
        self.handler = handler
        self.router = router

    def render(self, request):
        if (request.method == b"POST" and request.postpath in SUBMIT_POSTPATHS
                and _router_accepts_host(request)):
            return self._render_submit(request)
        return self.router.render(request)

    def _render_submit(self, request):
        # What klein does around a route's handler, without its router.
        request.prepath.extend(request.postpath)
        request.postpath = []
        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = defer.ensureDeferred(self.handler.submit(request))
        # A client that leaves cancels the handler (see _submit).
        request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addCallbacks(_write_answer, _handler_failed, (request, finished), None,
                       (request, finished))
        d.addErrback(legacy_log.err, _why="Unhandled Error writing response")
        return NOT_DONE_YET


def _router_accepts_host(request):
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


def _write_answer(answer, request, finished):
    if isinstance(answer, str):
        answer = answer.encode("utf-8")
    if isinstance(answer, bytes):
        request.write(answer)
    if not finished:
        request.finish()


def _handler_failed(failure, request, finished):
    if finished:
        # The connection is gone: nobody to answer.
        if not failure.check(defer.CancelledError):
            legacy_log.err(failure, "Unhandled Error Processing Request.")
        return
    request.processingFailed(failure)  # logs it and answers 500
    if not finished:
        request.finish()


def _shielded(d):
    """A Deferred of ``d``'s result whose cancellation leaves ``d`` running."""
    outer = defer.Deferred()

    def relay(result):
        if not outer.called:
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)
        return None

    d.addBoth(relay)
    return outer


def _header(request, name):
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value
