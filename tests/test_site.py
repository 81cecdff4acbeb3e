"""The built site in a real browser: headless Chromium over every page, with no network.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them
the tests skip, unless ``NTKBOOK_REQUIRE_BROWSER=1`` (set in CI) makes that a failure.
Screenshots of every chapter page are written to ``_build/screenshots/`` of this checkout.
"""

import functools
import http.server
import json
import os
import re
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.xdist_group("book")  # one worker builds the book once

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _need_browser():
    if CHROMIUM and DRIVER:
        return
    msg = "headless Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("NTKBOOK_REQUIRE_BROWSER") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def site(book_project):
    html = book_project / "_build" / "html"
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,1600",
        # the reader's browser has no network either: anything but localhost fails to resolve
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _pages(html: Path) -> list[str]:
    skip = ("_static", "_sources", "_images", "genindex", "search")
    return sorted(
        p.relative_to(html).as_posix()
        for p in html.rglob("*.html")
        if not any(part.startswith(skip) for part in p.relative_to(html).parts)
    )


def _wait_for_math(driver):
    driver.set_script_timeout(30)
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        if (!document.querySelector('.math')) { done({math: false}); return; }
        const t0 = Date.now();
        (function poll() {
          if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
            MathJax.startup.promise.then(() => done({
              math: true,
              rendered: document.querySelectorAll('mjx-container').length,
              errors: document.querySelectorAll('mjx-merror').length,
              raw: [...document.querySelectorAll('.math')].filter(
                     e => !e.querySelector('mjx-container')).length,
            }));
          } else if (Date.now() - t0 > 20000) { done({math: true, rendered: 0, errors: 0, raw: -1}); }
          else { setTimeout(poll, 100); }
        })();
        """
    )


def test_every_page_in_a_real_browser(site, browser):
    html, base = site
    pages = _pages(html)
    assert "index.html" in pages and any(p.startswith("book/chapters/") for p in pages)
    shots = ROOT / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    problems, heights = [], {}
    for page in pages:
        url = base + page
        browser.get(url)
        math = _wait_for_math(browser)
        if math["math"] and (math["rendered"] == 0 or math["errors"] or math["raw"]):
            problems.append(f"{page}: math not rendered ({math})")
        broken = browser.execute_script(
            "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        problems += [f"{page}: image not loaded: {src}" for src in broken]
        for entry in browser.get_log("browser"):
            if entry["level"] == "SEVERE":
                problems.append(f"{page}: console error: {entry['message']}")
        links = browser.execute_script(
            "return [...document.querySelectorAll('a[href]')].map(a => a.href)"
        )
        for link in set(links):
            problems += _check_link(html, base, page, link)
        name = page.removesuffix(".html").replace("/", "_")
        for width in (1280, 390):  # a laptop and a phone
            browser.set_window_size(width, 1600)
            wide = browser.execute_script(TOO_WIDE)
            problems += [f"{page} at {width} px: wider than the column: {e}" for e in wide[:5]]
            height = browser.execute_script("return document.body.scrollHeight")
            heights.setdefault(page, {})[width] = height
            if page.startswith(("book/chapters/", "book/dashboard", "book/performance")):
                browser.set_window_size(width, min(max(height, 800), 12000))
                browser.save_screenshot(str(shots / f"{name}-{width}.png"))
                assert (shots / f"{name}-{width}.png").stat().st_size > 10_000
        browser.set_window_size(1280, 1600)
    (shots / "heights.json").write_text(json.dumps(heights, indent=1))
    assert not problems, "\n".join(problems)


# Elements of the page's article wider than the viewport, unless a box around them scrolls
# by itself (code cells do); the theme's off-canvas sidebars are not in the article.
TOO_WIDE = """
const vw = document.documentElement.clientWidth;
const root = document.querySelector('article.bd-article') || document.body;
const bad = [];
for (const e of root.querySelectorAll('*')) {
  const r = e.getBoundingClientRect();
  if (r.width === 0 || r.height === 0 || (r.right <= vw + 1 && r.left >= -1)) continue;
  let a = e.parentElement, scrolls = false;
  while (a && a !== document.documentElement && !scrolls) {
    scrolls = /(auto|scroll|hidden)/.test(getComputedStyle(a).overflowX)
      && a.getBoundingClientRect().right <= vw + 1;
    a = a.parentElement;
  }
  if (!scrolls) bad.push(`${e.tagName.toLowerCase()}.${String(e.className).split(' ')[0]} `
    + `(${Math.round(r.left)}..${Math.round(r.right)} px): ${(e.textContent || '').slice(0, 60)}`);
}
return bad;
"""


def _check_link(html: Path, base: str, page: str, link: str) -> list[str]:
    if not link.startswith(base):
        return []  # external links are not followed (there is no network)
    parsed = urllib.parse.urlparse(link)
    path = urllib.parse.unquote(parsed.path)[1:] or "index.html"
    target = html / path
    if target.is_dir():
        target = target / "index.html"
    if not target.exists():
        return [f"{page}: broken internal link {link}"]
    if parsed.fragment and target.suffix == ".html":
        ids = set(re.findall(r'id="([^"]+)"', target.read_text(errors="replace")))
        if urllib.parse.unquote(parsed.fragment) not in ids:
            return [f"{page}: link to a missing anchor {link}"]
    return []


def test_site_loads_nothing_from_the_internet(site):
    html, _ = site
    for page in html.rglob("*.html"):
        text = page.read_text(errors="replace")
        ext = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        assert not ext, f"{page.relative_to(html)} loads {ext}"


def test_every_page_declares_an_icon_the_site_has(site):
    """Without ``<link rel="icon">`` a browser requests ``/favicon.ico``, a 404 on this site
    (Jupyter Book's own root redirect page has none; ``site.write_root_page`` replaces it)."""
    html, _ = site
    for page in [p for p in html.rglob("*.html") if "_static" not in p.parts]:
        icons = re.findall(r'<link rel="icon" href="([^"]+)"', page.read_text(errors="replace"))
        assert icons, f"{page.relative_to(html)} declares no icon"
        assert (page.parent / icons[0]).is_file(), f"{page.relative_to(html)}: {icons[0]} missing"
