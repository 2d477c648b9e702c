"""The dashboard in a real browser: Debian's Chromium driven by Playwright (sync API).

Starts ``streamlit run app.py`` on a free local port, opens every page, waits for the example
analysis to render (a ``.js-plotly-plot`` element and the tables), checks that no page shows an
exception, and saves one screenshot per page to ``docs/img/page_<name>.png`` (1280 x 900).
Skipped, with the reason, where /usr/bin/chromium or the playwright package is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
IMG_DIR = REPO / "docs" / "img"
VIEWPORT = {"width": 1280, "height": 900}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RENDER_TIMEOUT_MS = 180_000

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"streamlit exited early ({proc.returncode}): {log.read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"streamlit did not become healthy in {timeout_s:.0f} s: {log.read_text()[-2000:]}"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A streamlit server on a free port (card database: a temporary copy)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    tmp = tmp_path_factory.mktemp("browser")
    cards = tmp / "pdf_cards.xlsx"
    shutil.copyfile(REPO / "data" / "pdf_cards.xlsx", cards)
    env = dict(os.environ, HRTEM_CARDS_PATH=str(cards), PYTHONUNBUFFERED="1")
    port = _free_port()
    log = tmp / "streamlit.log"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def browser_page(server: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        page = context.new_page()
        try:
            yield page
        finally:
            context.close()
            browser.close()


def _wait_idle(page, timeout_ms: int = RENDER_TIMEOUT_MS) -> None:
    """Wait until the script run is over (Streamlit's running indicator is gone)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(800)  # let plotly and the data grids paint


def _assert_no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).first.inner_text()


def _shot(page, name: str) -> Path:
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    path = IMG_DIR / f"page_{name}.png"
    page.screenshot(path=str(path), full_page=False, type="png")
    assert path.stat().st_size > 10_000
    return path


def test_analyze_page_renders_the_example(server: str, browser_page):
    page = browser_page
    page.goto(server + "/", wait_until="domcontentloaded")
    page.wait_for_selector(".js-plotly-plot", timeout=RENDER_TIMEOUT_MS)
    page.wait_for_selector('[data-testid="stDataFrame"]', timeout=RENDER_TIMEOUT_MS)
    _wait_idle(page)
    _assert_no_exception(page)
    assert page.locator('[data-testid="stAlert"] >> text=/Unexpected error/').count() == 0
    assert page.locator(".js-plotly-plot").count() >= 3  # map, FFT, mask
    assert page.get_by_text("Crystal-plane map").count() >= 1
    _shot(page, "analyze")


def test_series_page_renders_the_profile(server: str, browser_page):
    page = browser_page
    page.goto(server + "/series", wait_until="domcontentloaded")
    page.wait_for_selector("text=Images side by side", timeout=RENDER_TIMEOUT_MS)
    _wait_idle(page)
    _assert_no_exception(page)
    assert page.locator(".js-plotly-plot").count() >= 3  # profile, fractions, small multiples
    _shot(page, "series")


def test_cards_page_renders_the_editor(server: str, browser_page):
    page = browser_page
    page.goto(server + "/cards", wait_until="domcontentloaded")
    page.wait_for_selector('[data-testid="stDataFrame"]', timeout=RENDER_TIMEOUT_MS)
    _wait_idle(page)
    _assert_no_exception(page)
    assert page.get_by_text("Valid:").count() >= 1
    _shot(page, "cards")


def test_about_page_renders(server: str, browser_page):
    page = browser_page
    page.goto(server + "/about", wait_until="domcontentloaded")
    page.wait_for_selector("text=About this tool", timeout=RENDER_TIMEOUT_MS)
    _wait_idle(page)
    _assert_no_exception(page)
    assert page.get_by_text("negative = underfocus").count() >= 1
    _shot(page, "about")
