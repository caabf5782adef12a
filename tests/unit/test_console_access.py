"""Where the console may listen (console/service.py) and its credential (console/web.py)."""

import pytest

from antenna_tw.config import ConsoleSettings, load_config
from antenna_tw.console.service import ConsoleRefused
from antenna_tw.console.web import Credential
from antenna_tw.tap import console_port
from antenna_tw.workers import PortError, parse_port

PUBLIC = "tcp:8000:interface=127.0.0.1"


def described(port, token=""):
    return console_port(ConsoleSettings(port, token), [parse_port(PUBLIC)], {}).description


@pytest.mark.parametrize(("given", "listens"), [
    ("tcp:8001", "tcp:8001:interface=127.0.0.1"),
    ("tcp:port=8001", "tcp:port=8001:interface=127.0.0.1"),
    ("tcp6:8001", "tcp6:8001:interface=\\:\\:1"),
    ("tcp:8001:interface=127.0.0.2", "tcp:8001:interface=127.0.0.2"),
    ("tcp6:8001:interface=\\:\\:1", "tcp6:8001:interface=\\:\\:1"),
    ("tcp:8001:interface=localhost", "tcp:8001:interface=localhost"),
    ("unix:/run/antenna-console.sock", "unix:/run/antenna-console.sock"),
    # An interface given as a positional field, as Twisted and --port take it.
    ("tcp:8001:127.0.0.2", "tcp:8001:127.0.0.2"),
    ("tcp6:8001:50:\\:\\:1", "tcp6:8001:50:\\:\\:1"),
])
def test_loopback_without_a_token(given, listens):
    assert described(given) == listens


@pytest.mark.parametrize("given", [
    "tcp:8001:interface=0.0.0.0", "tcp6:8001:interface=\\:\\:", "tcp:8001:interface=10.1.2.3",
    "tcp:8001:interface=console.example.com", "systemd:domain=INET:index=1",
    "tcp:8001:0.0.0.0",
])
def test_beyond_loopback_needs_a_token(given):
    with pytest.raises(ConsoleRefused, match="SECRET_CONSOLE_TOKEN"):
        described(given)
    assert described(given, "a-token").startswith(given)


def test_never_the_submit_port():
    with pytest.raises(ConsoleRefused, match="the /submit port"):
        described("tcp:8000")


@pytest.mark.parametrize("given", [
    "tcp:80o1", "unix:", "tcp:8001:mode=660", "systemd:domain=INET",
    "ssl:8001:privateKey=/nonexistent/console.pem",
    # Twisted listens on the last interface; the console's own parser checked the first.
    "tcp:8001:interface=127.0.0.1:interface=0.0.0.0",
])
def test_refused_as_the_collector_refuses_its_port(given):
    with pytest.raises(PortError) as port_error:
        parse_port(given)
    with pytest.raises(ConsoleRefused) as refused:
        described(given, "a-token")
    assert str(refused.value) == f"CONSOLE_PORT={given}: {port_error.value.reason}"


def test_off_by_default_and_the_token_is_a_secret():
    config = load_config({"SECRET_CONSOLE_TOKEN": "hunter2-hunter2"})
    assert config.console.console_port == ""
    assert "hunter2" not in repr(config)
    assert "SECRET_CONSOLE_TOKEN=*****" in config.summary().split()
    assert "hunter2" not in config.summary()


def test_a_port_description_is_checked():
    from antenna_tw.config import ConfigError

    with pytest.raises(ConfigError, match="CONSOLE_PORT"):
        load_config({"CONSOLE_PORT": "8001"})


def test_login_cookies():
    now = [1_000_000.0]
    credential = Credential("the-token", clock=lambda: now[0])
    cookie = credential.cookie()
    assert b"the-token" not in cookie
    assert credential.valid_cookie(cookie)
    assert not Credential("another-token").valid_cookie(cookie)
    expiry, _, signature = cookie.partition(b".")
    assert not credential.valid_cookie(b"%d.%s" % (int(expiry) + 1, signature))
    assert not credential.valid_cookie(cookie[:-1] + b"0" if cookie[-1:] != b"0" else b"1")
    assert not credential.valid_cookie(b"") and not credential.valid_cookie(None)
    now[0] += 13 * 3600
    assert not credential.valid_cookie(cookie)


def test_tokens_compare_whole():
    credential = Credential("the-token")
    assert credential.valid_token("the-token")
    assert not credential.valid_token("the-toke")
    assert not credential.valid_token("the-token ")
