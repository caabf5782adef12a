"""
The ``browser`` fixture (tests/browser.py) itself, against a page served by
a Twisted site in the test on a loopback port: Chromium loads it, runs its
script, which calls back to the site, and a screenshot is a PNG.
"""

import struct

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web import resource, server

import tests.browser
from tests.browser import PNG_SIGNATURE, require_chromium

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>fixture check</title></head>
<body>
<h1 id="title">antenna-tw browser check</h1>
<p id="script">script did not run</p>
<p id="fetched">nothing fetched</p>
<script>
document.getElementById("script").textContent = "script ran " + (6 * 7);
fetch("/answer").then(r => r.text()).then(t => {
  document.getElementById("fetched").textContent = t;
});
</script>
</body></html>
"""


class Page(resource.Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.paths = []

    def render_GET(self, request):
        self.paths.append(request.path)
        if request.path == b"/answer":
            request.setHeader(b"content-type", b"text/plain")
            return b"fetched from the site"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PAGE


@pytest.fixture
def site():
    page = Page()
    port = reactor.listenTCP(0, server.Site(page), interface="127.0.0.1")
    yield page, f"http://127.0.0.1:{port.getHost().port}/"
    port.stopListening()


def load_and_read(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 20).until(
        lambda d: d.find_element(By.ID, "fetched").text != "nothing fetched")
    return {name: driver.find_element(By.ID, name).text for name in ("title", "script", "fetched")}


@pytest_twisted.ensureDeferred
async def test_page_from_a_twisted_site(browser, site, tmp_path):
    page, url = site
    texts = await browser.run(load_and_read, url)
    assert texts == {"title": "antenna-tw browser check", "script": "script ran 42",
                     "fetched": "fetched from the site"}
    assert page.paths[:1] == [b"/"] and b"/answer" in page.paths

    path = await browser.screenshot(str(tmp_path / "shots" / "page.png"))
    with open(path, "rb") as png:
        head = png.read(24)
    assert head.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", head[16:24])  # the IHDR chunk
    assert width >= 800 and height >= 600


@pytest_twisted.ensureDeferred
async def test_fresh_profile_in_tmp(browser, tmp_path):
    capabilities = await browser.run(lambda driver: driver.capabilities)
    assert capabilities["chrome"]["userDataDir"] == str(tmp_path / "chromium-profile")


def test_missing_chromium_fails_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(tests.browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium chromium-driver"):
        require_chromium()
