"""A real browser (Debian's headless Chromium, driven by Playwright) on a live server."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest
from helpers import ROOT, run_live
from monitor_support import state

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / ".cache" / "artifacts"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install -y chromium)"
)


def test_sign_in_add_endpoint_and_see_it_live(make_app: Any) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    app = make_app(MONITOR_SEED=True, MONITOR_SCHEDULER=True, TESTING=False)
    with run_live(state(app).asgi) as base_url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(30_000)
            page.goto(base_url + "/")
            assert "/login" in page.url  # signed out: the sign-in form

            page.fill("input[name=email]", "demo@example.com")
            page.fill("input[name=password]", "demo")
            page.click("button[type=submit]")
            page.wait_for_url(base_url + "/")
            page.wait_for_selector("#connection.live")  # the event stream is open
            # the four demo monitors, seeded on the first request
            page.wait_for_function("document.querySelectorAll('article.monitor').length === 4")

            # From here on, no navigation: a reload would lose this marker.
            page.evaluate("window.__noReload = true")
            page.fill("#add-form input[name=name]", "Added in the browser")
            page.fill("#add-form input[name=url]", base_url + "/demo/up")
            page.fill("#add-form input[name=interval]", "1")
            page.fill("#add-form input[name=timeout]", "1")
            page.click("#add-form button[type=submit]")

            card = page.locator("article.monitor", has_text="Added in the browser")
            card.wait_for()
            # its status arrives over the event stream: pending -> up
            page.wait_for_function(
                """() => [...document.querySelectorAll('article.monitor')].some(
                    (el) => el.textContent.includes('Added in the browser')
                         && el.classList.contains('status-up'))"""
            )
            assert card.locator(".badge").inner_text().lower() == "up"
            assert card.locator(".latency").inner_text().endswith("ms")
            # the down demo shows its reason
            down = page.locator("article.monitor", has_text="Demo: down")
            page.wait_for_function(
                """() => [...document.querySelectorAll('article.monitor')].some(
                    (el) => el.textContent.includes('Demo: down')
                         && el.classList.contains('status-down'))"""
            )
            assert "connection refused" in down.locator(".reason").inner_text()
            # a few more checks on the charts, then a picture for the README
            page.wait_for_function(
                "document.querySelectorAll('article.monitor.status-up').length >= 2"
            )
            page.wait_for_timeout(6000)
            assert page.evaluate("window.__noReload") is True

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "monitor.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            docs = ROOT / "docs" / "monitor.png"
            if os.environ.get("MONITOR_UPDATE_SCREENSHOT") or not docs.exists():
                shutil.copyfile(shot, docs)

            # Invalid input shows field errors in place, still without a reload.
            page.fill("#add-form input[name=name]", "bad")
            page.fill("#add-form input[name=url]", "ftp://example.com")
            page.click("#add-form button[type=submit]")
            page.wait_for_selector("#add-form .has-error small.error")
            assert page.evaluate("window.__noReload") is True
        finally:
            browser.close()
