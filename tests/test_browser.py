"""The dashboard in a real browser: Debian's Chromium driven by Playwright (sync API).

Starts ``streamlit run app.py`` on a free local port (the card database: a temporary copy), then
opens every page in headless Chromium, waits until the script run is over and the page's content
has rendered, checks it (plots, tables, no exception, the navigation menu), and saves one
screenshot per page into the test's temporary folder (never into the tracked ``docs/img``: the
README's screenshots are refreshed on purpose by ``scripts/take_screenshots.py``). The first
request is a page URL
(``/about``), which must still go through ``app.py``'s ``st.navigation`` (see
``ui.common.page_guard``). Skipped, with the reason, where /usr/bin/chromium or the playwright
package is missing. Run: ``python -m pytest -q tests/test_browser.py`` (20 s on 2 idle cores,
under 60 s with the cores shared by other jobs).
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
VIEWPORT = {"width": 1400, "height": 1300}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Longest wait for one page's script run [ms]: generous for a loaded machine; the measured runs
#: take a few seconds (Analyze) to some tens of seconds (Defocus series, ten images).
RUN_TIMEOUT_MS = 150_000
NAV_TITLES = ["Analyze", "Defocus series", "PDF cards", "About"]

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
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
        time.sleep(0.25)
    raise RuntimeError(
        f"streamlit did not become healthy in {timeout_s:.0f} s: {log.read_text()[-2000:]}"
    )


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the screenshots go to: a temporary one."""
    return tmp_path_factory.mktemp("screenshots")


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
        "--server.fileWatcherType",
        "none",
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
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text[-3000:]


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


def _open(page, url: str, *ready: str) -> float:
    """Go to ``url``; wait until the script run is over and every ``ready`` selector is visible.

    Returns the seconds it took. Streamlit marks its root element with the state of the script
    run (``data-test-script-state``: running / notRunning).
    """
    t0 = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    for selector in ready:
        page.locator(selector).first.wait_for(state="visible", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=RUN_TIMEOUT_MS
    )
    page.wait_for_timeout(500)  # let plotly and the data grids paint
    return time.perf_counter() - t0


def _check_page(page, title: str) -> None:
    """One title, the four navigation entries (no duplicates), no exception, no error box."""
    assert page.locator("h1").all_inner_texts()[0].strip() == title
    nav = [
        t.split("\n")[-1].strip()
        for t in page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
    ]
    assert nav == NAV_TITLES, nav
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()


def _scroll_to(page, selector: str) -> None:
    """Scroll Streamlit's main container so that the first ``selector`` is at the top."""
    page.locator(selector).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)


def _shot(page, folder: Path, name: str) -> Path:
    path = folder / f"page_{name}.png"
    assert not path.resolve().is_relative_to(REPO)  # never the tracked docs/img
    page.screenshot(path=str(path), full_page=False, type="png")
    assert path.stat().st_size > 20_000
    return path


def test_a_page_url_opened_first_goes_through_the_navigation(server: str, browser_page, shots):
    page = browser_page
    seconds = _open(page, server + "/about", "text=About this tool", "text=negative = underfocus")
    _check_page(page, "About this tool")
    print(f"\nabout: {seconds:.1f} s")
    _shot(page, shots, "about")


def test_analyze_page_shows_the_example_analysis(server: str, browser_page, shots):
    page = browser_page
    seconds = _open(
        page,
        server + "/",
        "text=Crystal-plane map",
        '[data-testid="stPlotlyChart"] .js-plotly-plot',
        '[data-testid="stDataFrame"]',
    )
    _check_page(page, "Analyze an image")
    # The plane map, the selected window's power spectrum (large, axes in 1/nm), the Bragg
    # filter and profile figures; the window, phase and plane tables.
    assert page.locator(".js-plotly-plot").count() >= 4
    assert page.get_by_text("Power spectrum of window", exact=False).count() >= 1
    assert page.locator('[data-testid="stDataFrame"]').count() >= 2
    crystallinity = page.locator('[data-testid="stMetric"]', has_text="Crystallinity")
    assert crystallinity.count() == 1 and "%" in crystallinity.inner_text()
    for label in (
        "Windows (CSV)",
        "All tables (XLSX)",
        "Summary (JSON)",
        "Map (HTML)",
        "Map (PNG)",
        "Map (SVG)",
    ):
        assert page.get_by_role("button", name=label).count() == 1, label
    # Hovering a window of the map shows its description (plotly's hover label).
    plot = page.locator(".js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    assert box is not None
    hover = page.locator(".hoverlayer .hovertext")
    for fx, fy in ((0.5, 0.5), (0.45, 0.4), (0.55, 0.6), (0.35, 0.35)):
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_timeout(300)
        if hover.count():
            break
    # The compact hover: the window number, and d in nm; at most four lines.
    text = hover.first.text_content() if hover.count() else ""
    assert text.startswith("#") and " nm" in text, text
    assert hover.first.locator("tspan.line").count() <= 4
    page.mouse.move(1, 1)
    # Measuring: a click on the power spectrum gives a measured point (d, nearest planes).
    fft = page.locator(".js-plotly-plot").nth(1)
    fft.scroll_into_view_if_needed()
    box = fft.locator(".nsewdrag").first.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 0.7 * box["width"], box["y"] + 0.3 * box["height"])
    clear = page.get_by_role("button", name="Clear the clicked points")
    clear.wait_for(state="visible", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=RUN_TIMEOUT_MS
    )
    print(f"\nanalyze (example): {seconds:.1f} s")
    _scroll_to(page, "h1")
    _shot(page, shots, "analyze")


def test_series_page_shows_the_profile(server: str, browser_page, shots):
    page = browser_page
    seconds = _open(page, server + "/series", "text=Images side by side", "text=Best focus")
    _check_page(page, "Defocus series")
    n_images = int(
        page.locator('[data-testid="stMetric"]', has_text="Images")
        .locator('[data-testid="stMetricValue"]')
        .inner_text()
    )
    assert n_images >= 3
    # The profile (two panels), the phase fractions and one small map per image.
    assert page.locator(".js-plotly-plot").count() == 2 + n_images
    print(f"\nseries ({n_images} images): {seconds:.1f} s")
    _scroll_to(page, '[data-testid="stMetric"]')
    _shot(page, shots, "series")


def test_cards_page_shows_the_editor_and_the_calculator(server: str, browser_page, shots):
    page = browser_page
    seconds = _open(page, server + "/cards", '[data-testid="stDataFrame"]', "text=Valid:")
    _check_page(page, "PDF card database")
    assert page.locator('[data-testid="stDataFrame"]').count() >= 2  # phases and reflections
    print(f"\ncards: {seconds:.1f} s")
    _shot(page, shots, "cards")
    page.get_by_role("tab", name="Calculator").click()
    # The calculator's table (glide data grid: its cells are an accessible, hidden table).
    page.locator('[data-testid^="glide-cell"]', has_text="angle between the planes").first.wait_for(
        state="attached", timeout=30_000
    )
