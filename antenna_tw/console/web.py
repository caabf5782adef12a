"""
The console's HTTP side: pages, the JSON API under them, the login, and
the service that listens on ``CONSOLE_PORT`` (docs/console.rst).

Every route checks the credential first: the login cookie (an HMAC of its
expiry, keyed from ``SECRET_CONSOLE_TOKEN``, never the token itself) or
``Authorization: Bearer <token>``, compared in constant time. Without it a
page answers 401 with the login form, an API call 401 with a JSON error.
Wrong tokens are counted per client address (``TokenGuesses``): past the
limit, that address's token checks answer 429 until the oldest ages out.
Every answer carries a strict Content-Security-Policy (no script at all),
``nosniff`` and ``no-store``. Disk reads (spool, storage, minidumps) run in
the console's thread pool; nothing here blocks the reactor.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import attr
from klein import Klein
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.web.http import Request as HTTPRequest
from twisted.web.iweb import IRequest
from twisted.web.server import Request, Site

from antenna_tw.console import pages
from antenna_tw.console.crashes import (
    CrashRecord,
    ICrashFinder,
    merge_recent,
    read_file,
    spool_find,
    spool_recent,
    valid_id,
    without_personal_data,
)
from antenna_tw.console.node import INodeSource, node_status
from antenna_tw.logs import Logger

COOKIE = b"antenna_console"
LOGIN_SECONDS = 12 * 3600
# Wrong tokens one client address may send within GUESS_WINDOW seconds
# before its token checks are refused (a token of 20 random characters
# then takes longer than the universe's age to guess).
GUESS_LIMIT = 20
GUESS_WINDOW = 60.0
GUESS_CLIENTS = 10_000  # addresses tracked at once; the least recent is forgotten first
HEADERS = (
    (b"Content-Security-Policy",
     b"default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
     b"form-action 'self'; frame-ancestors 'none'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-store"),
)
HTML = b"text/html; charset=utf-8"
JSON = b"application/json"
# Storage health is asked at most this often, whatever the polling rate.
HEALTH_TTL = 5.0
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

Handler = Callable[..., Awaitable[bytes]]


class QuietSite(Site):
    """The console's site: no access log line per request (the API may be polled each second)."""

    def log(self, request: HTTPRequest) -> None:
        """Nothing."""


def _cookie_key(token: str) -> bytes:
    return hmac.new(token.encode("utf-8"), b"antenna-tw console login", hashlib.sha256).digest()


@attr.s
class Credential:
    """``SECRET_CONSOLE_TOKEN`` and the login cookies made from it (none: open to all)."""

    token: str = attr.ib(repr=False)
    clock: Callable[[], float] = attr.ib(default=time.time)

    def cookie(self) -> bytes:
        """A login cookie's value: ``<expiry>.<HMAC of it>``."""
        expiry = b"%d" % int(self.clock() + LOGIN_SECONDS)
        return expiry + b"." + hmac.new(_cookie_key(self.token), expiry,
                                        hashlib.sha256).hexdigest().encode()

    def valid_cookie(self, value: bytes | None) -> bool:
        """Whether ``value`` is a login cookie of this token that has not expired."""
        if not value or b"." not in value:
            return False
        expiry, _, signature = value.partition(b".")
        good = hmac.new(_cookie_key(self.token), expiry, hashlib.sha256).hexdigest().encode()
        return (hmac.compare_digest(signature, good) and expiry.isdigit()
                and int(expiry) > self.clock())

    def valid_token(self, given: str) -> bool:
        """Whether ``given`` is the token (constant time)."""
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def allows(self, request: IRequest) -> bool:
        """The request carries the token or a valid login cookie (any request, without a token)."""
        if not self.token:
            return True
        given = _bearer(request)
        if given is not None and self.valid_token(given):
            return True
        return self.valid_cookie(request.getCookie(COOKIE))


@attr.s
class TokenGuesses:
    """
    Wrong tokens by client address, in bounded memory: ``limit`` of them
    within ``window`` seconds and that address's token checks are refused
    (``wait`` > 0) until the oldest is ``window`` seconds old. At most
    ``clients`` addresses are tracked.
    """

    clock: Callable[[], float] = attr.ib()
    limit: int = attr.ib(default=GUESS_LIMIT)
    window: float = attr.ib(default=GUESS_WINDOW)
    clients: int = attr.ib(default=GUESS_CLIENTS)

    def __attrs_post_init__(self) -> None:
        self._wrong: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str) -> deque[float]:
        times = self._wrong.get(client)
        if times is None:
            return deque()
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._wrong[client]
        return times

    def wait(self, client: str) -> float:
        """Seconds before ``client``'s next token may be checked; 0: now."""
        times = self._recent(client)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - self.clock())

    def wrong(self, client: str) -> bool:
        """Count a wrong token from ``client``; True when that reaches the limit."""
        times = self._recent(client)
        if client not in self._wrong:
            self._wrong[client] = times = deque(maxlen=self.limit)
            if len(self._wrong) > self.clients:
                self._wrong.popitem(last=False)
        self._wrong.move_to_end(client)
        times.append(self.clock())
        return len(times) == self.limit


def _client(request: IRequest) -> str:
    return str(getattr(request.getClientAddress(), "host", "?"))


def _bearer(request: IRequest) -> str | None:
    """The token of an ``Authorization: Bearer`` header, None without one."""
    header = request.getHeader(b"authorization") or b""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _dump_filename(crash_id: str, name: str) -> str:
    return _SAFE_FILENAME.sub("_", f"{crash_id}.{name or 'dump'}.dmp")


@attr.s
class Console:
    """The console's routes over the node (``node``) and storage (``finder``)."""

    node: INodeSource = attr.ib()
    finder: ICrashFinder = attr.ib()
    storage: Any = attr.ib()  # ICrashStorage: its name and check_health
    reactor: Any = attr.ib()
    threadpool: ThreadPool = attr.ib()
    credential: Credential = attr.ib()
    recent_limit: int = attr.ib(default=500)
    # Summarize a dump's bytes (console/minidump.py's summarize), run in the pool.
    summarize: Callable[[bytes], Any] | None = attr.ib(default=None)
    guesses: TokenGuesses = attr.ib(default=attr.Factory(
        lambda self: TokenGuesses(self.reactor.seconds), takes_self=True))
    log = Logger(namespace="antenna.console")

    def __attrs_post_init__(self) -> None:
        self._health: tuple[float, list[str]] | None = None
        self.app = Klein()
        route = self.app.route
        route("/login", methods=["GET"])(self.login_form)
        route("/login", methods=["POST"])(self.login)
        route("/logout", methods=["POST"])(self.logout)
        route("/static/console.css", methods=["GET"])(self.css)
        for path, handler, page in (
                ("/", self.node_page, True),
                ("/crashes", self.recent_page, True),
                ("/crashes/<crash_id>", self.crash_page, True),
                ("/crashes/<crash_id>/raw_crash.json", self.raw_crash, True),
                ("/crashes/<crash_id>/dumps/<path:name>", self.dump, True),
                ("/api/crashes/<crash_id>/dumps/<path:name>", self.dump, False),
                ("/api/status", self.api_status, False),
                ("/api/crashes", self.api_recent, False),
                ("/api/crashes/<crash_id>", self.api_crash, False)):
            route(path, methods=["GET"], endpoint=f"{path}")(self._guarded(handler, page))

    def resource(self) -> Any:
        """The console's root resource."""
        return self.app.resource()

    # -- answers ---------------------------------------------------------

    @staticmethod
    def _answer(request: IRequest, code: int, content_type: bytes, body: bytes) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", content_type)
        for name, value in HEADERS:
            request.setHeader(name, value)
        return body

    def _json(self, request: IRequest, code: int, value: object) -> bytes:
        return self._answer(request, code, JSON,
                            json.dumps(value, sort_keys=True, indent=1).encode("utf-8"))

    async def _page(self, request: IRequest, code: int, page: Any) -> bytes:
        return self._answer(request, code, HTML, await pages.render(page))

    def _wrong_token(self, request: IRequest) -> None:
        client = _client(request)
        if self.guesses.wrong(client):
            self.log.warn("console: {limit} wrong tokens from {client} within {window:.0f} s; "
                          "its token checks are refused for a while", limit=self.guesses.limit,
                          client=client, window=self.guesses.window)
        else:
            self.log.info("console: a wrong token from {client}", client=client)

    async def _too_many(self, request: IRequest, page: bool, wait: float,
                        next_path: str = "/") -> bytes:
        """429: this address sent too many wrong tokens lately; the token was not checked."""
        seconds = math.ceil(wait)
        request.setHeader(b"Retry-After", b"%d" % seconds)
        message = f"Too many wrong tokens from this address: try again in {seconds} s."
        if page:
            return await self._page(request, 429, pages.login_page(message, next_path))
        return self._json(request, 429, {"error": "too many wrong tokens",
                                         "retry_after": seconds})

    def _guarded(self, handler: Handler, page: bool) -> Handler:
        async def guarded(request: IRequest, **kwargs: Any) -> bytes:
            guess = bool(self.credential.token) and _bearer(request) is not None
            if guess:
                wait = self.guesses.wait(_client(request))
                if wait:
                    return await self._too_many(request, page, wait,
                                                request.path.decode("utf-8", "replace"))
            if not self.credential.allows(request):
                if guess:
                    self._wrong_token(request)
                if page:
                    path = request.path.decode("utf-8", "replace")
                    return await self._page(request, 401, pages.login_page(
                        "Sign in to see this page.", path))
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="antenna-tw console"')
                return self._json(request, 401, {"error": "unauthorized"})
            return await handler(request, **kwargs)
        return guarded

    # -- login -----------------------------------------------------------

    async def login_form(self, request: IRequest) -> bytes:
        """The login form."""
        return await self._page(request, 200, pages.login_page())

    @staticmethod
    def _next(request: IRequest) -> str:
        given = (request.args or {}).get(b"next", [b"/"])[0].decode("utf-8", "replace")
        # Only a path of this console: no scheme, no other host.
        return given if given.startswith("/") and not given.startswith("//") else "/"

    async def login(self, request: Request) -> bytes:
        """Check the token of the form; on success set the login cookie and go on."""
        given = (request.args or {}).get(b"token", [b""])[0].decode("utf-8", "replace")
        wait = self.guesses.wait(_client(request))
        if wait:
            return await self._too_many(request, True, wait, self._next(request))
        if not self.credential.token or not self.credential.valid_token(given):
            self._wrong_token(request)
            return await self._page(request, 401, pages.login_page(
                "That is not the console token.", self._next(request)))
        request.addCookie(COOKIE, self.credential.cookie(), path=b"/", httpOnly=True,
                          sameSite="strict", max_age=b"%d" % LOGIN_SECONDS,
                          secure=request.isSecure())  # Secure when served over TLS
        request.setHeader(b"Location", quote(self._next(request), safe="/?=&").encode())
        return self._answer(request, 303, HTML, b"")

    async def logout(self, request: Request) -> bytes:
        """Forget the login cookie."""
        request.addCookie(COOKIE, b"", path=b"/", httpOnly=True, sameSite="strict", max_age=b"0")
        request.setHeader(b"Location", b"/login")
        return self._answer(request, 303, HTML, b"")

    async def css(self, request: IRequest) -> bytes:
        """The style sheet (no inline style: the CSP allows none)."""
        return self._answer(request, 200, b"text/css; charset=utf-8", pages.CSS)

    # -- data ------------------------------------------------------------

    async def _storage_errors(self) -> list[str]:
        now = self.reactor.seconds()
        if self._health is not None and now - self._health[0] < HEALTH_TTL:
            return self._health[1]
        check = self.storage.check_health()
        check.addTimeout(HEALTH_TTL, self.reactor)
        try:
            errors = list(await check)
        except defer.TimeoutError:
            errors = [f"no answer within {HEALTH_TTL:.0f} s"]
        except Exception as error:
            errors = [f"health check failed: {error}"]
        self._health = (self.reactor.seconds(), errors)
        return errors

    async def status(self) -> dict[str, Any]:
        """The node's figures (``/api/status``)."""
        now = self.reactor.seconds()
        readings = await self.node.read(now)
        storage = {"name": getattr(self.storage, "name", "?"),
                   "errors": await self._storage_errors()}
        return node_status(readings, now, storage)

    async def recent(self) -> list[Any]:
        """The newest crashes, the spool's and storage's, one row per id."""
        limit = self.recent_limit
        spooled = await deferToThreadPool(self.reactor, self.threadpool, spool_recent,
                                          self.node.spool_directories(), limit)
        stored = await self.finder.recent(limit)
        return merge_recent(spooled, stored, limit)

    async def find(self, crash_id: str) -> CrashRecord | None:
        """Crash ``crash_id``: in the spool, else in storage."""
        if not valid_id(crash_id):
            return None
        record = await deferToThreadPool(self.reactor, self.threadpool, spool_find,
                                         self.node.spool_directories(), crash_id)
        if record is None:
            record = await self.finder.find(crash_id)
        return record

    async def read_dump(self, record: CrashRecord, name: str) -> bytes:
        """A dump's bytes, from where ``find`` found the crash."""
        if record.in_spool:
            return await deferToThreadPool(self.reactor, self.threadpool, read_file,
                                           record.dump_locations[name])
        return await self.finder.read_dump(record, name)

    async def summaries(self, record: CrashRecord) -> list[tuple[str, Any]]:
        """The minidump summary of each dump that is a minidump."""
        if self.summarize is None:
            return []
        found = []
        for name in sorted(record.dumps):
            try:
                data = await self.read_dump(record, name)
            except (OSError, KeyError):
                continue
            if not data.startswith(b"MDMP"):
                continue
            found.append((name, await deferToThreadPool(
                self.reactor, self.threadpool, self.summarize, data)))
        return found

    # -- pages -----------------------------------------------------------

    async def node_page(self, request: IRequest) -> bytes:
        """The node page."""
        return await self._page(request, 200, pages.node_page(await self.status()))

    async def recent_page(self, request: IRequest) -> bytes:
        """The recent crashes; ``?id=`` goes to that crash's page."""
        wanted = (request.args or {}).get(b"id", [b""])[0].decode("utf-8", "replace").strip()
        wanted = wanted.removeprefix("bp-")
        if wanted:
            if valid_id(wanted):
                request.setHeader(b"Location", b"/crashes/" + wanted.encode("ascii"))
                return self._answer(request, 303, HTML, b"")
            return await self._page(request, 400, pages.recent_page(
                await self.recent(), self.recent_limit, "That is not a crash id."))
        return await self._page(request, 200, pages.recent_page(await self.recent(),
                                                                self.recent_limit))

    async def _found(self, request: IRequest, crash_id: str, page: bool) -> CrashRecord | bytes:
        record = await self.find(crash_id)
        if record is None:
            if page:
                return await self._page(request, 404, pages.layout(
                    "Crash not found", pages.tags.p(f"No crash {crash_id} in the spool or "
                                                    "in storage.")))
            return self._json(request, 404, {"error": "not found"})
        return record

    async def crash_page(self, request: IRequest, crash_id: str) -> bytes:
        """A crash's page."""
        record = await self._found(request, crash_id, True)
        if isinstance(record, bytes):
            return record
        raw = json.dumps(without_personal_data(record.raw_crash), sort_keys=True, indent=2)
        return await self._page(request, 200, pages.crash_page(
            record, await self.summaries(record), raw))

    async def raw_crash(self, request: IRequest, crash_id: str) -> bytes:
        """A crash's raw crash as JSON (personal data left out)."""
        record = await self._found(request, crash_id, True)
        if isinstance(record, bytes):
            return record
        return self._json(request, 200, without_personal_data(record.raw_crash))

    async def dump(self, request: IRequest, crash_id: str, name: str) -> bytes:
        """A dump's bytes as stored, as an attachment."""
        record = await self._found(request, crash_id, False)
        if isinstance(record, bytes):
            return record
        if name == "_" and "" in record.dumps:
            name = ""  # the unnamed dump's URL
        if name not in record.dumps:
            return self._json(request, 404, {"error": "no such dump"})
        data = await self.read_dump(record, name)
        request.setHeader(b"Content-Disposition",
                          b'attachment; filename="%s"'
                          % _dump_filename(crash_id, name).encode("ascii"))
        return self._answer(request, 200, b"application/octet-stream", data)

    # -- the API ---------------------------------------------------------

    async def api_status(self, request: IRequest) -> bytes:
        """``GET /api/status``."""
        return self._json(request, 200, await self.status())

    async def api_recent(self, request: IRequest) -> bytes:
        """``GET /api/crashes``."""
        rows = await self.recent()
        return self._json(request, 200, {"limit": self.recent_limit,
                                         "crashes": [row.to_json() for row in rows]})

    async def api_crash(self, request: IRequest, crash_id: str) -> bytes:
        """``GET /api/crashes/<id>``."""
        record = await self._found(request, crash_id, False)
        if isinstance(record, bytes):
            return record
        summaries = await self.summaries(record)
        return self._json(request, 200, {
            "crash_id": record.crash_id, "state": record.state,
            "raw_crash": without_personal_data(record.raw_crash),
            "dumps": [{"name": name, "size": size,
                       "url": f"/api/crashes/{record.crash_id}/dumps/{quote(name or '_', safe='')}"}
                      for name, size in sorted(record.dumps.items())],
            "minidumps": {name: summary.to_json() for name, summary in summaries},
        })
