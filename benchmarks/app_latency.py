"""Drives the real app in headless Chromium and reports its latencies (benchmarks/results/app_latency.md).

Measures: cold start (empty JAX cache) and warm start (filled cache) to the first complete page,
slider → updated figure for γ (left), τ (right) and the field's t (medians over 20 keyboard moves;
the first visit of a value samples, a revisit hits st.cache_data), and animation frames per second.
Run: .venv/bin/python benchmarks/app_latency.py
"""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CHROMIUM, CHROMIUM_ARGS, free_port, start_app, wait_healthy, wait_idle  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

CHARTS = "document.querySelectorAll('.js-plotly-plot')"
FPS_HOOK = """() => new Promise(done => {
  const gd = document.querySelectorAll('.js-plotly-plot')[0];
  const stamps = [];
  gd.on('plotly_animatingframe', () => stamps.push(performance.now()));
  gd.on('plotly_animated', () => done(stamps));
  Plotly.animate(gd, null, {frame: {duration: 0, redraw: false}, transition: {duration: 0},
                            mode: 'immediate'});
})"""


def start_to_page(browser, cache: str) -> float:
    """Seconds from `streamlit run` to a finished run with all 8 figures drawn."""
    os.environ["TOYDIFF_JAX_CACHE"] = cache
    port = free_port()
    t0 = time.perf_counter()
    proc = start_app(port, pathlib.Path(tempfile.mkstemp(suffix=".log")[1]))
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, 120)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}")
        wait_idle(page)
        page.wait_for_function(f"{CHARTS}.length >= 8", timeout=120_000)
        elapsed = time.perf_counter() - t0
        page.close()
        return elapsed
    finally:
        proc.terminate()
        proc.wait(20)


def title(page, i: int) -> str:
    return page.evaluate(f"{CHARTS}[{i}].querySelector('.gtitle').textContent")


def moves(page, slider_text: str, chart: int, keys: list[str]) -> list[float]:
    """ms from each key press on the slider to the chart's new title being drawn."""
    slider = (
        page.locator("[data-testid='stSlider']")
        .filter(has_text=slider_text)
        .first.get_by_role("slider")
    )
    out = []
    for key in keys:
        wait_idle(page)
        before = title(page, chart)
        slider.focus()
        t0 = time.perf_counter()
        slider.press(key)
        page.wait_for_function(
            f"t => {CHARTS}[{chart}].querySelector('.gtitle').textContent !== t",
            arg=before,
            timeout=60_000,
            polling="raf",
        )
        out.append(1000 * (time.perf_counter() - t0))
    wait_idle(page)
    return out


def main():
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        with tempfile.TemporaryDirectory() as cache:
            cold = start_to_page(browser, cache)
            warm = start_to_page(browser, cache)
        os.environ["TOYDIFF_JAX_CACHE"] = str(ROOT / ".jax_cache")
        port = free_port()
        proc = start_app(port, pathlib.Path(tempfile.mkstemp(suffix=".log")[1]))
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, 120)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}")
            wait_idle(page)
            page.wait_for_function(f"{CHARTS}.length >= 8", timeout=120_000)
            gamma = moves(page, "γ (gamma)", 0, ["ArrowRight"] * 10 + ["ArrowLeft"] * 10)
            tau = moves(page, "τ (tau)", 1, ["ArrowLeft"] * 10 + ["ArrowRight"] * 10)
            t = moves(page, "timestep t", 2, ["ArrowLeft"] * 20)
            fps = []
            for _ in range(3):
                stamps = page.evaluate(FPS_HOOK)
                fps.append((len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000))
        finally:
            proc.terminate()
            proc.wait(20)
        browser.close()
    med = statistics.median
    rows = [
        ("cold start → first complete page (empty JAX cache)", f"{cold:.2f} s", "≤ 8 s"),
        ("warm start → first complete page (JAX cache filled)", f"{warm:.2f} s", "≤ 4 s"),
        (
            "γ slider → trajectory figure, new values (median of 10)",
            f"{med(gamma[:10]):.0f} ms",
            "≤ 250 ms",
        ),
        (
            "γ slider → trajectory figure, revisited values (median of 10)",
            f"{med(gamma[10:]):.0f} ms",
            "≤ 250 ms",
        ),
        (
            "τ slider → trajectory figure, new values (median of 10)",
            f"{med(tau[:10]):.0f} ms",
            "≤ 250 ms",
        ),
        (
            "τ slider → trajectory figure, revisited values (median of 10)",
            f"{med(tau[10:]):.0f} ms",
            "≤ 250 ms",
        ),
        ("γ and τ, all 40 moves (median)", f"{med(gamma + tau):.0f} ms", "≤ 250 ms"),
        (
            "t slider → vector-field figure (median of 20, fragment rerun)",
            f"{med(t):.0f} ms",
            "≤ 150 ms",
        ),
        (
            "animation, 50 frames × 2000 points (Scattergl), median of 3 plays",
            f"{med(fps):.1f} fps",
            "≥ 30 fps",
        ),
    ]
    text = (
        "# App latency (headless Chromium, software rendering, 2000 points × 50 steps × 2 rules)\n\n"
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} by `benchmarks/app_latency.py` on a shared "
        f"{os.cpu_count()}-core machine; one run, so numbers are noisy.\n\n"
        "| measure | value | target |\n|---|---:|---:|\n"
        + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
        + "\n\n"
        f"Raw (ms): γ {[round(x) for x in gamma]}; τ {[round(x) for x in tau]}; t {[round(x) for x in t]}; "
        f"fps {[round(x, 1) for x in fps]}\n"
    )
    out = ROOT / "benchmarks" / "results" / "app_latency.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
