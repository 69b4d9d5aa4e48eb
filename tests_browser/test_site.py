"""The course's website (`make site`, docs/) in a real browser: build/site/ served on 127.0.0.1 and read by the
headless Chromium of conftest.py. Every page loads with no console error, no failed and no off-site request; every
image loads; the math is typeset (no raw LaTeX left); every link within the site resolves, anchors included;
search finds notebook 01 on "temperature"; each notebook page links to Colab (the address from
mmkd_utils.notebooks) and to its stored .ipynb, has the sidebar and previous/next links in course order, and
its worked solutions folded; a phone's viewport never scrolls sideways (wide tables scroll in their own box).
The build itself treats warnings as errors, and took under 2 minutes. Screenshots: build/screenshots/site-*.png.
"""
from __future__ import annotations

import functools
import http.server
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import REPO_ROOT, SCREENSHOTS

SITE = REPO_ROOT / "build" / "site"
NOTEBOOKS = sorted(p.name.removesuffix(".ipynb") for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Every page of the site: the notebooks, the markdown pages, and Sphinx's own (search, index).
PAGES = sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html") if not p.relative_to(SITE).parts[0]
               .startswith("_")) if SITE.is_dir() else []
LAPTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}
BUILD_LIMIT_S = 120

# Wait for MathJax (where a page loads it) to finish typesetting.
TYPESET = "async () => { if (window.MathJax && MathJax.startup) { await MathJax.startup.promise; } }"

# What a reader sees of a page: images not loaded, math not typeset or in error, raw LaTeX left in the text
# (code is left out: a code cell may hold a LaTeX string), and the links.
INSPECT = r"""() => {
  const main = document.querySelector('main') || document.body;
  const images = [...document.querySelectorAll('img')];
  const broken = images.filter(img => !img.complete || img.naturalWidth === 0)
      .map(img => img.getAttribute('src'));
  const math = [...main.querySelectorAll('.math')];
  const untypeset = math.filter(node => !node.querySelector('mjx-container'))
      .map(node => node.textContent.slice(0, 80));
  const errors = [...main.querySelectorAll('mjx-merror')]
      .map(node => node.getAttribute('data-mjx-error') || node.textContent);
  const text = main.cloneNode(true);
  text.querySelectorAll('pre, code, .highlight, mjx-container, script').forEach(node => node.remove());
  const raw = ['$$', '\\frac', '\\(', '\\[', '\\begin{', '\\mathcal', '\\text{']
      .filter(s => text.textContent.includes(s));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  return {images: images.length, broken, math: math.length, untypeset, errors, raw, links};
}"""

# Horizontal overflow on the current viewport: the page's own width, and any table wider than its box that no
# box scrolls sideways.
OVERFLOW = """() => {
  const scrolls = node => { for (let a = node.parentElement; a; a = a.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(a).overflowX)) { return true; } } return false; };
  const tables = [...document.querySelectorAll('main table')]
      .filter(t => t.getBoundingClientRect().right > window.innerWidth + 1 && !scrolls(t))
      .map(t => t.innerText.slice(0, 60));
  return {page: document.documentElement.scrollWidth, viewport: window.innerWidth, tables};
}"""


@pytest.fixture(scope="session")
def site():
    """build/site/, as `make site` left it: its base URL on a local HTTP server (a site is read over HTTP)."""
    if not (SITE / "index.html").is_file():
        pytest.fail("build/site/ is missing: run `make site` first (`make test-site` does both)")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def reader(browser, site):
    """A fresh tab that records what went wrong while a page loads: console errors, exceptions, failed requests,
    HTTP errors, requests still pending, and requests to any other host (refused here, as on a closed network)."""
    page = browser.new_page()
    page.set_default_timeout(120_000)  # generous: a loaded 2-core machine is slow, and an early end proves nothing
    page.problems, pending = [], {}
    page.on("console", lambda m: m.type == "error" and page.problems.append(f"console error: {m.text}"))
    page.on("pageerror", lambda e: page.problems.append(f"exception: {e}"))
    page.on("requestfailed", lambda r: page.problems.append(f"failed request: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and page.problems.append(f"HTTP {r.status}: {r.url}"))
    page.on("request", lambda r: pending.__setitem__(id(r), r.url))
    page.on("requestfinished", lambda r: pending.pop(id(r), None))
    page.on("requestfailed", lambda r: pending.pop(id(r), None))

    def route(request_route):
        url = request_route.request.url
        if url.startswith(site) or url.startswith(("data:", "blob:")):
            request_route.continue_()
        else:
            page.problems.append(f"request to another host: {url}")
            request_route.abort()

    page.route("**/*", route)

    def visit(path: str, viewport: dict = LAPTOP) -> None:
        """Open a page and wait until it has loaded, MathJax has typeset it, and no request is left open."""
        page.set_viewport_size(viewport)
        page.goto(site + path, wait_until="load")
        page.evaluate(TYPESET)
        deadline, quiet_since = time.monotonic() + 60, None
        while time.monotonic() < deadline:  # until no request has been open for half a second
            if pending:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 0.5:
                return
            page.wait_for_timeout(100)
        page.problems.append(f"requests still open after 60 s: {sorted(pending.values())}")

    page.visit = visit
    yield page
    page.close()


@functools.cache
def ids_of(url: str) -> frozenset[str]:
    """The element ids of a page of the site (fetched over HTTP): what a link's #fragment can point at."""
    with urllib.request.urlopen(url, timeout=10) as response:
        html = response.read().decode("utf8")
    return frozenset(re.findall(r'\sid="([^"]+)"', html))


def broken_links(links: list[str], site: str) -> list[str]:
    broken = []
    for link in sorted(set(links)):
        if not link.startswith(site):
            continue  # a link off the site (the forge, Colab, a paper): a reader's click, not the site's to serve
        url, _, fragment = link.partition("#")
        try:
            urllib.request.urlopen(url, timeout=10).close()
        except OSError as err:
            broken.append(f"{link}: {err}")
            continue
        if fragment and url.endswith(".html") and urllib.parse.unquote(fragment) not in ids_of(url):
            broken.append(f"{link}: no element with that id")
    return broken


@pytest.mark.parametrize("path", PAGES)
def test_page_loads_with_everything_rendered(reader, site, path):
    reader.visit(path)
    found = reader.evaluate(INSPECT)
    assert not reader.problems, f"{path}: {reader.problems}"
    assert not found["broken"], f"{path}: images that did not load: {found['broken']}"
    assert not found["untypeset"], f"{path}: math that MathJax did not typeset: {found['untypeset']}"
    assert not found["errors"], f"{path}: LaTeX that MathJax could not typeset: {found['errors']}"
    assert not found["raw"], f"{path}: raw LaTeX left in the text: {found['raw']}"
    assert not (broken := broken_links(found["links"], site)), f"{path}: links that do not resolve: {broken}"
    overflow = reader.evaluate(OVERFLOW)
    assert overflow["page"] <= overflow["viewport"], f"{path}: the page scrolls sideways on a laptop: {overflow}"


@pytest.mark.parametrize("path", PAGES)
def test_page_fits_a_phone(reader, path):
    reader.visit(path, PHONE)
    overflow = reader.evaluate(OVERFLOW)
    assert overflow["page"] <= overflow["viewport"], f"{path}: the page scrolls sideways on a phone: {overflow}"
    assert not overflow["tables"], f"{path}: tables wider than the phone, not in a scrolling box: {overflow['tables']}"
    assert not reader.problems, f"{path}: {reader.problems}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_page(reader, name):
    """Colab and download links, every stored figure, course-order navigation, and the worked solutions folded."""
    from mmkd_utils.notebooks import REPO_SLUG, colab_url

    path = f"notebooks/{name}.ipynb"
    reader.visit(f"notebooks/{name}.html")
    colab = reader.locator("a.mmkd-colab")
    assert colab.get_attribute("href") == colab_url(path) and REPO_SLUG in colab_url(path)
    download = reader.locator("a.mmkd-download")
    with urllib.request.urlopen(download.evaluate("a => a.href"), timeout=10) as response:
        assert response.read() == (REPO_ROOT / path).read_bytes(), (
            f"{name}: the download is not the notebook in notebooks/ (changed since the build? run `make site`)")

    stored = nbformat.read(REPO_ROOT / path, as_version=4)
    figures = sum("image/png" in o.get("data", {}) or "image/jpeg" in o.get("data", {})
                  for cell in stored.cells for o in cell.get("outputs", []))
    shown = reader.locator(".cell_output img").count()
    assert shown == figures, f"{name}: {shown} figures on the page, {figures} stored"

    sidebar = reader.eval_on_selector_all(".bd-docs-nav a", "links => links.map(a => a.href)")
    listed = [Path(urllib.parse.urlparse(url).path).stem for url in sidebar if "/notebooks/" in url]
    assert listed == NOTEBOOKS, f"the sidebar lists {listed}, not the course's notebooks in order"
    i = NOTEBOOKS.index(name)
    previous = reader.locator("a.left-prev").get_attribute("href")
    following = reader.locator("a.right-next").get_attribute("href")
    assert previous == ("../index.html" if i == 0 else f"{NOTEBOOKS[i - 1]}.html")
    if i + 1 < len(NOTEBOOKS):
        assert following == f"{NOTEBOOKS[i + 1]}.html"

    solutions = sum("### BEGIN SOLUTION" in cell.source for cell in stored.cells)
    folds = reader.locator("div.tag_mmkd-solution > details, details.mmkd-solution")
    assert folds.count() == solutions, f"{name}: {folds.count()} folded solutions, {solutions} stored"
    assert reader.evaluate("() => [...document.querySelectorAll('details')].every(d => !d.open)"), "a fold is open"
    if solutions:
        fold = folds.first
        body = fold.locator(":scope > :not(summary)").first
        assert not body.is_visible(), f"{name}: a folded solution is visible"
        fold.locator("summary").click()
        body.wait_for(state="visible", timeout=5_000)  # a reader opens it on purpose
    assert not reader.problems, f"{name}: {reader.problems}"


def test_search_finds_the_notebook_on_temperature(reader):
    reader.visit("search.html?q=temperature")
    reader.wait_for_selector("#search-results ul.search li", timeout=30_000)
    found = reader.eval_on_selector_all("#search-results ul.search li a", "links => links.map(a => a.href)")
    assert any("notebooks/01_background.html" in url for url in found), f"search for 'temperature' found {found}"
    assert not reader.problems, reader.problems


def test_screenshots_for_review(reader):
    """Pages for a person to look at: the landing page, a notebook's math and its folded solutions on a laptop, and
    a notebook on a phone at its widest table (which scrolls in its own box)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    reader.visit("index.html")
    reader.screenshot(path=str(SCREENSHOTS / "site-index-laptop.png"))
    reader.visit("notebooks/02_losses.html")
    reader.locator("h2").nth(1).scroll_into_view_if_needed()
    reader.screenshot(path=str(SCREENSHOTS / "site-02_losses-laptop.png"))
    reader.locator("div.tag_mmkd-solution, details.mmkd-solution").first.evaluate("node => node.scrollIntoView()")
    reader.screenshot(path=str(SCREENSHOTS / "site-02_losses-solutions-laptop.png"))
    reader.visit("notebooks/01_background.html", PHONE)
    reader.evaluate("""() => [...document.querySelectorAll('main table')]
        .sort((a, b) => b.scrollWidth - a.scrollWidth)[0].scrollIntoView({block: 'center'})""")
    reader.screenshot(path=str(SCREENSHOTS / "site-01_background-phone.png"))
    assert not reader.problems, reader.problems


def test_build_was_quick_and_says_its_size():
    record = json.loads((REPO_ROOT / "build" / "site-build.json").read_text())
    print(f"site: built in {record['seconds']} s, {record['bytes'] / 1e6:.1f} MB in {record['files']} files")
    assert record["seconds"] < BUILD_LIMIT_S, f"the site's build took {record['seconds']} s (limit {BUILD_LIMIT_S} s)"


def test_build_fails_on_a_warning(tmp_path):
    """The site's build (docs/build.py's Sphinx call, with the site's conf.py) fails on a broken link, a missing
    image and an unknown role, and names each."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.md").write_text(
        "# Canary\n\nA [broken link](nowhere.md), a missing ![image](missing.png) and an {unknownrole}`role`.\n")
    build = (f"import sys; sys.path.insert(0, {str(REPO_ROOT / 'docs')!r}); from build import sphinx; "
             f"sys.exit(sphinx(*map(__import__('pathlib').Path, sys.argv[1:])))")
    proc = subprocess.run([sys.executable, "-c", build, str(tmp_path / "src"), str(tmp_path / "out"),
                           str(tmp_path / "doctrees")], capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"a build with three warnings succeeded:\n{output}"
    for warning in ("nowhere.md", "missing.png", "unknownrole"):
        assert warning in output, f"the build did not report {warning}:\n{output}"
