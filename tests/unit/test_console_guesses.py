"""Wrong console tokens are limited per client address (console/web.py's TokenGuesses)."""

import pytest
import treq
from pytest_twisted import inlineCallbacks
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site

from antenna_tw.console.web import Console, Credential, TokenGuesses

TOKEN = "the-console-token-0123456789"


class Now:
    def __init__(self):
        self.value = 1000.0

    def __call__(self):
        return self.value


def test_the_limit_within_the_window():
    now = Now()
    guesses = TokenGuesses(now, limit=3, window=60.0)
    assert guesses.wait("a") == 0
    assert not guesses.wrong("a")
    now.value += 10
    assert not guesses.wrong("a")
    assert guesses.wait("a") == 0
    assert guesses.wrong("a")  # the third reaches the limit
    assert guesses.wait("a") == pytest.approx(50.0)  # until the first is 60 s old
    assert guesses.wait("b") == 0  # other addresses are not affected
    now.value += 50
    assert guesses.wait("a") == 0
    assert guesses.wrong("a")  # two are left in the window: this makes three again...
    assert guesses.wait("a") == pytest.approx(10.0)  # ...until the second one ages out


def test_memory_is_bounded():
    now = Now()
    guesses = TokenGuesses(now, limit=2, window=60.0, clients=100)
    for n in range(1000):
        guesses.wrong(f"10.0.{n // 256}.{n % 256}")
        guesses.wrong(f"10.0.{n // 256}.{n % 256}")
    assert len(guesses._wrong) == 100
    assert guesses.wait("10.0.3.231") > 0  # the most recent are kept
    assert guesses.wait("10.0.0.0") == 0  # the least recent forgotten
    now.value += 61
    for n in range(900, 1000):
        assert guesses.wait(f"10.0.{n // 256}.{n % 256}") == 0
    assert len(guesses._wrong) == 0  # aged-out addresses are dropped as they are asked for


@pytest.fixture
def console_url():
    pool = ThreadPool(1, 1, "console-test")
    pool.start()
    now = Now()
    console = Console(node=None, finder=None, storage=None, reactor=reactor, threadpool=pool,
                      credential=Credential(TOKEN), guesses=TokenGuesses(now, limit=3))
    port = reactor.listenTCP(0, Site(console.resource()), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}", now
    port.stopListening()
    pool.stop()


@inlineCallbacks
def test_a_listening_console_refuses_token_checks_past_the_limit(console_url):
    url, now = console_url
    api = f"{url}/api/status"
    for _ in range(3):
        answer = yield treq.get(api, headers={"Authorization": "Bearer wrong"})
        assert answer.code == 401
        yield answer.content()
    # Past the limit even the right token is not checked, by the API or the login form.
    answer = yield treq.get(api, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.code == 429
    assert answer.headers.getRawHeaders("Retry-After") == ["60"]
    body = yield answer.json()
    assert body == {"error": "too many wrong tokens", "retry_after": 60}
    answer = yield treq.post(f"{url}/login", data={"token": TOKEN, "next": "/"},
                             allow_redirects=False)
    assert answer.code == 429
    page = yield answer.text()
    assert "Too many wrong tokens" in page and TOKEN not in page
    # A request with no token is not a guess: still the plain 401.
    answer = yield treq.get(api)
    assert answer.code == 401
    yield answer.content()
    # Once the wrong ones age out, the right token signs in again.
    now.value += 61
    answer = yield treq.post(f"{url}/login", data={"token": TOKEN, "next": "/"},
                             allow_redirects=False)
    assert answer.code == 303
    yield answer.content()
