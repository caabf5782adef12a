"""
The crash console in a real headless Chromium, served by the parent of a
real ``twistd antenna --workers 2`` after crashes went through both workers:
the node page's counts and chart, the recent list, a crash page's minidump
summary, a byte-identical download, 401 everywhere without the credential,
and an annotation holding ``<script>`` and HTML shown as text.

With ``CONSOLE_SCREENSHOTS=1`` the test also saves the screenshots that
docs/console.rst shows (docs/_static/console/*.png).
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from selenium.webdriver.common.by import By

from antenna_tw.send_crash import build_multipart, post
from tests.browser import save_screenshot
from tests.helpers import minidump
from tests.s3server import free_port
from tests.system.collector_process import both_listening, wait_for

TOKEN = "console-test-token-0123456789"
SCREENSHOTS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "_static" / "console"
HOSTILE = ("<script>document.title='pwned';window.x=1</script>"
           "<b>bold</b><img src=x onerror=\"window.x=2\">")
DUMP = minidump("linux-mini.dmp")
LONG = json.dumps({"threads": [{"frames": [f"frame {n}" for n in range(40)]}]})


def send(url, annotations, dump=DUMP):
    body, content_type = build_multipart(annotations, {"upload_file_minidump": dump})
    status, answer = post(url, body, content_type, timeout=30)
    assert status == 200, answer
    return answer.decode().strip()[len("CrashID=bp-"):]


def api(console, path, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(console + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def screenshot(driver, name):
    """With CONSOLE_SCREENSHOTS=1: the page (up to 1,400 px of it) for docs/console.rst."""
    if os.environ.get("CONSOLE_SCREENSHOTS") == "1":
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(max(int(height) + 140, 600), 1400))
        save_screenshot(driver, str(SCREENSHOTS / f"{name}.png"))
        driver.set_window_size(1280, 900)


def test_console_pages_in_chromium(tmp_path, collectors, browser):
    console_port = free_port()
    console = f"http://127.0.0.1:{console_port}"
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"),
        "CONSOLE_PORT": f"tcp:{console_port}", "SECRET_CONSOLE_TOKEN": TOKEN},
        args=["--workers", "2"])
    workers = both_listening(collector)

    # Crashes until both workers have taken some (one shared accept queue).
    ids = []
    hostile = send(collector.submit_url, {"ProductName": "Firefox", "Version": "140.0",
                                          "Notes": HOSTILE, "Email": "someone@example.com",
                                          "StackTraces": LONG})
    ids.append(hostile)
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):
            ids += pool.map(lambda n: send(collector.submit_url, {
                "ProductName": "Firefox" if n % 2 else "Fenix", "Version": f"140.{n % 3}"}),
                range(16))
            status = json.loads(api(console, "/api/status")[2])
            if all(p["accepted_last_hour"] for p in status["processes"]):
                break

    # Two refused uploads: a body that is not multipart.
    for _ in range(2):
        status, answer = post(collector.submit_url, b"not a crash", "text/plain", timeout=30)
        assert (status, answer) == (400, b"Discarded=malformed_wrong_content_type")

    def counted():
        status = json.loads(api(console, "/api/status")[2])
        return (status["hour"]["accepted"] == len(ids) and status["hour"]["refused"] == 2
                and status)

    status = wait_for(counted, timeout=20)
    rows = {p["name"]: p for p in status["processes"]}
    assert sorted(rows) == ["worker-0", "worker-1"]
    assert {p["pid"] for p in rows.values()} == set(workers)
    assert all(p["accepted_last_hour"] > 0 for p in rows.values()), rows
    assert status["hour"]["by_product_version"]["Firefox 140.0"]["ACCEPT"] >= 1
    assert status["hour"]["refused_by_reason"] == {"wrong_content_type": 2}

    # Without the credential: 401 everywhere, pages with the login form.
    paths = ["/", "/crashes", f"/crashes/{hostile}", f"/crashes/{hostile}/raw_crash.json",
             f"/crashes/{hostile}/dumps/upload_file_minidump", "/api/status", "/api/crashes",
             f"/api/crashes/{hostile}", f"/api/crashes/{hostile}/dumps/upload_file_minidump"]
    for path in paths:
        for token in (None, "wrong-token"):
            code, headers, body = api(console, path, token)
            assert code == 401, (path, code)
            assert "default-src 'self'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff"
            if not path.startswith("/api/"):
                assert b'name="token"' in body

    driver = browser.driver
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})

    # The login form, once; the cookie is signed, HttpOnly and SameSite=Strict.
    driver.get(console + "/")
    assert driver.find_element(By.ID, "sign-in")
    screenshot(driver, "login")
    driver.find_element(By.NAME, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "sign-in").click()
    wait_for(lambda: driver.find_elements(By.ID, "tiles"), timeout=20)
    cookie = driver.get_cookie("antenna_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]

    # The node page: the counts and a rendered chart.
    tiles = driver.find_element(By.ID, "tiles").text
    assert f"{len(ids)}\naccepted in the hour" in tiles, tiles
    chart = driver.find_element(By.CSS_SELECTOR, "#chart-crashes svg")
    assert chart.size["width"] > 300 and chart.size["height"] > 100
    bars = chart.find_elements(By.CSS_SELECTOR, "rect[data-series=accepted]")
    assert len(bars) == 60  # a minute each
    assert sum(bar.size["height"] for bar in bars) > 50  # drawn, as the browser laid it out
    assert "wrong_content_type" in driver.find_element(By.ID, "refused").text
    process_rows = driver.find_elements(By.CSS_SELECTOR, "#processes tr")
    assert {"worker-0", "worker-1"} <= {row.text.split(" ")[0] for row in process_rows}
    screenshot(driver, "node")

    # The recent list shows every id.
    driver.get(console + "/crashes")
    shown = {row.get_attribute("data-crash-id")
             for row in driver.find_elements(By.CSS_SELECTOR, "#crashes tr[data-crash-id]")}
    assert set(ids) <= shown
    screenshot(driver, "recent")

    # A crash page: the minidump summary of tests/data's linux-mini.dmp.
    plain = ids[-1]
    driver.get(f"{console}/crashes/{plain}")
    assert driver.find_element(By.CSS_SELECTOR, ".minidump .crash-reason").text == "SIGSEGV"
    assert driver.find_elements(By.CSS_SELECTOR, ".minidump table.frames tr")
    # The download, through the browser, is the dump as sent.
    driver.find_element(By.CSS_SELECTOR, "#dumps a.download").click()
    target = downloads / f"{plain}.upload_file_minidump.dmp"
    wait_for(lambda: target.exists() and target.read_bytes() == DUMP, timeout=20)

    # The hostile annotation is text: no script ran, no markup made; Email is not shown.
    driver.get(f"{console}/crashes/{hostile}")
    assert driver.title == f"Crash {hostile} · antenna-tw console"
    assert driver.execute_script("return window.x === undefined")
    assert not driver.find_elements(By.CSS_SELECTOR, "#annotations b, #annotations img")
    assert HOSTILE in driver.find_element(By.ID, "annotations").text
    assert "someone@example.com" not in driver.page_source
    assert "Email" not in driver.find_element(By.ID, "annotations").text
    folded = driver.find_element(By.CSS_SELECTOR, "#annotations details")  # the long value
    assert "frame 39" not in folded.text and "frame 39" in folded.get_attribute("textContent")
    screenshot(driver, "crash")

    # The API says the same.
    code, _, body = api(console, f"/api/crashes/{plain}")
    crash = json.loads(body)
    assert code == 200 and crash["minidumps"]["upload_file_minidump"]["crash_reason"] == "SIGSEGV"
    assert api(console, crash["dumps"][0]["url"])[2] == DUMP
    listed = json.loads(api(console, "/api/crashes")[2])["crashes"]
    assert set(ids) <= {row["crash_id"] for row in listed}
    collector.stop()
    time.sleep(0)  # stopped; the fixture kills what is left
