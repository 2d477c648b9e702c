"""Several dashboard sessions analysing at once (issue 9): separate results, bounded memory.

Four AppTest sessions run in threads of this one process (as a Streamlit server runs its
sessions), each on the bundled example with its own window/stride. Each must get its own result
(distinct parameter sets -> distinct window grids), and the process memory (RSS, sampled every
50 ms) must stay bounded. The measured figures are printed (``-s``) and written to
``test-artifacts/app_load.json``; docs/dashboard.md quotes them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
psutil = pytest.importorskip("psutil")
from streamlit.testing.v1 import AppTest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
#: (window_px, stride_px) per session; on the 1024 x 1024 example they give distinct grids
#: (16, 9, 25 and 36 windows), none of them the default one the warm-up run computes.
CONFIGS = ((256, 256), (512, 256), (192, 192), (384, 128))
#: The baseline session, alone before the four (25 windows).
SOLO_CONFIG = (256, 192)
RSS_GROWTH_LIMIT_BYTES = int(1.5 * 2**30)


def _n_windows(shape: int, w: int, s: int) -> int:
    n = (shape - w) // s + 1
    return n * n


def _session(config: tuple[int, int], out: dict, errors: list) -> None:
    try:
        w, s = config
        t0 = time.perf_counter()
        at = AppTest.from_file(APP, default_timeout=300)
        at.run()
        assert not at.exception, at.exception
        widgets = {getattr(x, "key", None): x for x in at.sidebar}
        for name, value in (("detector", "Classical"), ("window", w), ("stride", s)):
            key = f"analyze_{name}"
            assert key in widgets, (key, [t.value for t in at.title], [e.value for e in at.error])
            widgets[key].set_value(value)
        buttons = [b for b in at.sidebar.button if b.label == "Analyze"]
        assert buttons, [b.label for b in at.button]
        buttons[0].click().run()
        elapsed = time.perf_counter() - t0
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        tables = [d.value for d in at.dataframe if "spacings_nm" in d.value.columns]
        assert tables, "no windows table"
        table = tables[0]
        metrics = {m.label: m.value for m in at.metric}
        out[config] = {
            "seconds": elapsed,
            "n_windows": len(table),
            "crystallinity": metrics["Crystallinity"],
            "window_px": int(at.session_state["analyze_window"]),
        }
    except BaseException as exc:  # reported by the main thread
        errors.append(f"{config}: {type(exc).__name__}: {exc!r}")


def test_four_sessions_at_once_get_their_own_results_with_bounded_memory():
    proc = psutil.Process()
    # Warm the process (imports, card database, first example decode) so the growth measured
    # below is what concurrent sessions add.
    warm = AppTest.from_file(APP, default_timeout=300)
    warm.run()
    assert not warm.exception
    # Baseline of the same run: one session alone (a grid none of the four uses, 25 windows).
    solo: dict = {}
    solo_errors: list[str] = []
    _session(SOLO_CONFIG, solo, solo_errors)
    assert not solo_errors, solo_errors
    baseline = proc.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results: dict = {}
    errors: list[str] = []
    threads = [threading.Thread(target=_session, args=(c, results, errors)) for c in CONFIGS]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join(timeout=5)

    assert not errors, errors
    assert set(results) == set(CONFIGS)
    for (w, s), r in results.items():
        assert r["window_px"] == w
        assert r["n_windows"] == _n_windows(1024, w, s), (w, s, r)
    assert len({r["n_windows"] for r in results.values()}) == len(CONFIGS)
    growth = peak[0] - baseline
    solo_s = solo[SOLO_CONFIG]["seconds"]
    solo_rate = solo[SOLO_CONFIG]["n_windows"] / solo_s
    rate = sum(r["n_windows"] for r in results.values()) / wall
    figures = {
        "sessions": len(CONFIGS),
        "wall_s": round(wall, 2),
        "solo_session_s": round(solo_s, 2),
        "windows_per_s_solo": round(solo_rate, 2),
        "windows_per_s_concurrent": round(rate, 2),
        "throughput_ratio_concurrent_vs_solo": round(rate / solo_rate, 2),
        "seconds_per_session": {
            f"w{w}_s{s}": round(r["seconds"], 2) for (w, s), r in results.items()
        },
        "windows_per_session": {f"w{w}_s{s}": r["n_windows"] for (w, s), r in results.items()},
        "baseline_rss_mb": round(baseline / 2**20, 1),
        "peak_rss_mb": round(peak[0] / 2**20, 1),
        "rss_growth_mb": round(growth / 2**20, 1),
    }
    print("\napp load:", json.dumps(figures, indent=1))
    out = REPO / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "app_load.json").write_text(json.dumps(figures, indent=1), encoding="utf-8")
    assert growth < RSS_GROWTH_LIMIT_BYTES, figures
