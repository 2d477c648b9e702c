"""Refresh the README's dashboard screenshots (docs/img/page_*.png), on purpose, by hand.

Starts ``streamlit run app.py`` on a free local port (the card database: a temporary copy, so
nothing in data/ is written), opens every page in headless Debian Chromium driven by Playwright
(``/usr/bin/chromium --no-sandbox``), waits until the script run is over and the page has
painted, and saves one screenshot per page. It also prints the time from the server's start to
the first complete view of the Analyze page (the bundled example analysed).

The tests never write these files (``tests/test_browser.py`` writes into its temporary folder).

Usage::

    python scripts/take_screenshots.py                 # -> docs/img/page_<name>.png
    python scripts/take_screenshots.py --out /tmp/shots --port 8600
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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
RUN_TIMEOUT_MS = 300_000
#: (name, URL path, selectors that must be visible, selector scrolled to the top, tab to open)
PAGES = (
    ("analyze", "/", ("text=Crystal-plane map", '[data-testid="stPlotlyChart"]'), "h1", None),
    ("analyze_fft", "/", ("text=in detail",), "text=in detail", None),
    ("series", "/series", ("text=Images side by side",), '[data-testid="stMetric"]', None),
    ("cards", "/cards", ('[data-testid="stDataFrame"]', "text=Valid:"), "h1", None),
    ("about", "/about", ("text=About this tool",), "h1", None),
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, cards: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, HRTEM_CARDS_PATH=str(cards), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    out = open(log, "wb")  # closed with the process
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early ({proc.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"streamlit did not become healthy in {timeout_s:.0f} s")


def open_page(page, url: str, ready: tuple[str, ...]) -> float:
    """Go to ``url``; wait for every ``ready`` selector and the end of the script run."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    for selector in ready:
        page.locator(selector).first.wait_for(state="visible", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=RUN_TIMEOUT_MS
    )
    page.wait_for_timeout(800)  # let plotly and the data grids paint
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="folder to write")
    ap.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    args = ap.parse_args(argv)
    if not CHROMIUM.exists():
        print("error: /usr/bin/chromium is not installed (apt-get install chromium)")
        return 2
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hrtem-shots-") as tmp:
        cards = Path(tmp) / "pdf_cards.xlsx"
        shutil.copyfile(REPO / "data" / "pdf_cards.xlsx", cards)
        port = args.port or free_port()
        url = f"http://127.0.0.1:{port}"
        t_start = time.perf_counter()
        proc = start_server(port, cards, Path(tmp) / "streamlit.log")
        try:
            wait_healthy(url, proc)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                )
                context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
                page = context.new_page()
                first = True
                for name, path, ready, top, _tab in PAGES:
                    seconds = open_page(page, url + path, ready)
                    if first:
                        print(
                            f"first view of the analysed example: {time.perf_counter() - t_start:.1f} s "
                            f"after the server start ({seconds:.1f} s in the browser)"
                        )
                        first = False
                    page.locator(top).first.evaluate("e => e.scrollIntoView({block: 'start'})")
                    page.wait_for_timeout(400)
                    target = args.out / f"page_{name}.png"
                    page.screenshot(path=str(target), full_page=False, type="png")
                    print(
                        f"{target.relative_to(REPO) if target.is_relative_to(REPO) else target}: "
                        f"{seconds:.1f} s"
                    )
                context.close()
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
