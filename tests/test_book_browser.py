"""Build the smoke book from an empty run store, check every notebook ran, open every page in Chromium."""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import json

import pytest

from wdev_utils.book import EXECUTED, build_book, toc_notebooks
from wdev_utils.profiles import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]



class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """The smoke book built from scratch into _build/html, served on localhost."""
    os.environ["WDEV_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    try:
        html = build_book("smoke")
    finally:
        del os.environ["WDEV_RUNS"]
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_notebook_executed_without_errors(smoke_book):
    html, _ = smoke_book
    assert (REPO_ROOT / EXECUTED / "build_info.md").exists()
    for name in toc_notebooks():
        nb = json.loads((REPO_ROOT / EXECUTED / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert all(c["execution_count"] for c in code), f"{name}: a code cell did not run"
        assert (html / EXECUTED / f"{name}.html").exists(), f"{name}: no HTML page"


def _pages(html: Path) -> list[str]:
    skip = {"genindex.html", "search.html"}
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if p.name not in skip and "_static" not in p.parts and "_sources" not in p.parts)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_every_page_loads_with_images_and_no_errors(smoke_book):
    from playwright.sync_api import sync_playwright

    html, base = smoke_book
    pages = _pages(html)
    assert "index.html" in pages
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        reached: set[str] = set()
        for rel in pages:
            response = page.goto(f"{base}/{rel}", wait_until="load")
            assert response is not None and response.ok, f"{rel}: HTTP {response and response.status}"
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            broken = page.eval_on_selector_all(
                "img", "imgs => imgs.filter(i => i.naturalWidth === 0).map(i => i.src)")
            assert not broken, f"{rel}: images that do not decode: {broken}"
            text = page.inner_text("article") if page.query_selector("article") else page.inner_text("body")
            for marker in ("Traceback (most recent call last)", "PapermillExecutionError"):
                assert marker not in text, f"{rel}: shows {marker!r}"
            assert not page.query_selector_all(".output.error, .output.traceback, .output.stderr"), \
                f"{rel}: has error or stderr output"
            links = page.eval_on_selector_all("nav.bd-links a.reference.internal",
                                              "as => as.map(a => a.href)")
            reached.update(link.split("#")[0].removeprefix(base + "/") for link in links)
        browser.close()
    chapters = set(pages) - {"index.html"}
    assert chapters <= reached | {"book/intro.html"}, f"not reachable from the navigation: {chapters - reached}"
