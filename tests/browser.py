"""
A real headless Chromium for the page tests: Debian's ``chromium`` driven by
selenium through Debian's ``chromedriver`` (packages ``chromium`` and
``chromium-driver``; ``.ci/run`` installs them). Both paths are given to
selenium, so selenium-manager never looks for, nor downloads, a driver or a
browser.

Fixture (registered in tests/conftest.py): ``browser``, a ``Browser`` with a
fresh profile (a new ``--user-data-dir`` under the test's tmp_path: no
cookies, no storage) for one test; the browser quits after it.

Selenium's calls block until the browser answers. A page served by the
test's own reactor (a Twisted site in the test process) would never be
served while the reactor thread waits, so run the steps in a thread:
``await browser.run(lambda driver: driver.get(url))`` (a Deferred of what the
function returns). ``browser.driver`` may be used directly only for pages
served by another process (a twistd the test started).

A machine without Chromium fails these tests with the command that installs
it: they are never skipped.
"""

from __future__ import annotations

import os

import attr
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from twisted.internet import defer, threads

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = ("install them with `apt-get install -y chromium chromium-driver` "
                "(Debian; .ci/run does): the page tests need a real browser")

# No sandbox: the tests run as root. The network flags keep Chromium from
# calling out (the machine's network is closed, and tests stay on loopback).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers' /dev/shm is small
    "--window-size=1280,900",  # screenshots of one size
)
PAGE_LOAD_TIMEOUT = 30  # seconds: a busy 2-core machine
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def require_chromium() -> None:
    """Fail (never skip) when Debian's chromium or chromedriver is missing."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing; {INSTALL_HINT}", pytrace=False)


def start_chromium(profile_dir: str, log_path: str) -> webdriver.Chrome:
    """Headless Chromium, a fresh profile in ``profile_dir``; chromedriver logs to ``log_path``."""
    require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    # A driver path given skips selenium-manager (selenium's DriverFinder).
    service = Service(executable_path=CHROMEDRIVER, log_output=log_path)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    return driver


def save_screenshot(driver: webdriver.Chrome, path: str) -> str:
    """Save the window as a PNG at ``path`` (folders made, PNG checked); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    png = driver.get_screenshot_as_png()
    if not png.startswith(PNG_SIGNATURE):
        raise AssertionError(f"the browser's screenshot is not a PNG ({png[:8]!r})")
    with open(path, "wb") as out:
        out.write(png)
    return path


@attr.s
class Browser:
    """One test's Chromium: ``driver`` (selenium's WebDriver) and helpers."""

    driver: webdriver.Chrome = attr.ib()

    def run(self, function, *args, **kwargs) -> defer.Deferred:
        """``function(driver, *args, **kwargs)`` in a thread, off the reactor: a Deferred of it."""
        return threads.deferToThread(function, self.driver, *args, **kwargs)

    def screenshot(self, path: str) -> defer.Deferred:
        """Save a PNG of the window at ``path``, in a thread: a Deferred of ``path``."""
        return self.run(save_screenshot, path)


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium with a fresh profile for one test (tests/browser.py)."""
    driver = start_chromium(str(tmp_path / "chromium-profile"), str(tmp_path / "chromedriver.log"))
    try:
        yield Browser(driver)
    finally:
        driver.quit()
