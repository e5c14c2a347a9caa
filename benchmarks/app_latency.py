"""Drives the real app in headless Chromium and reports its latencies (benchmarks/results/app_latency.md).

Measures: cold start (empty JAX cache) and warm start (filled cache, median of 3) to the first complete figure
and to the whole page; slider → updated trajectory figure and → every view updated, for γ (left)
and τ (right) (medians over 20 keyboard moves; the first visit of a value samples, a revisit hits
st.cache_data); the field's t slider → updated field (fragment rerun); animation frames per second
at 2000 points × 100 frames (100 steps); the probe's readout updates per second while it is
dragged, the γ scrub's sample updates per second, and a scrub release to the first scrub after it.

Run: .venv/bin/python benchmarks/app_latency.py
Side by side with another commit (the machine is shared and noisy: compare within one run):
     .venv/bin/python benchmarks/app_latency.py --against 090fc4c --rounds 2
runs this checkout and a git worktree of the commit alternately (`--rounds` times each) and
writes both medians and their ratio to results/app_latency_vs_<commit>.md. `--python PY` runs the
other side with another interpreter instead (or as well), to compare package versions; e.g. an
environment that differs from .venv in one package only:
     python3.11 -m venv /tmp/ml_dtypes-0.7.0
     /tmp/ml_dtypes-0.7.0/bin/pip install --no-deps ml_dtypes==0.7.0
     echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/ml_dtypes-0.7.0/lib/python3.11/site-packages/rest.pth
     .venv/bin/python benchmarks/app_latency.py --python /tmp/ml_dtypes-0.7.0/bin/python --rounds 3
writes results/app_latency_vs_ml_dtypes-0.7.0.md.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
WARM_STARTS = 3  # one start varies by ±0.5 s here: each measure takes the median of three
sys.path.insert(0, str(ROOT / "tests"))
from conftest import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    start_app,
    wait_healthy,
    wait_idle,
)
from playwright.sync_api import sync_playwright  # noqa: E402

CHARTS = "document.querySelectorAll('.js-plotly-plot')"
FIRST = f"() => {CHARTS}.length > 0 && !!{CHARTS}[0].querySelector('.gtitle') && !!{CHARTS}[0].querySelector('.gl-canvas')"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
LONG = (
    "preset=three_blobs&negative=C&left.method=ncfg&right.method=ccfg&gamma=2&right.tau=1&steps=100"
)
FPS_HOOK = """() => new Promise(done => {
  const gd = document.querySelectorAll('.js-plotly-plot')[0];
  const stamps = [];
  gd.on('plotly_animatingframe', () => stamps.push(performance.now()));
  gd.on('plotly_animated', () => done(stamps));
  Plotly.animate(gd, null, {frame: {duration: 0, redraw: false}, transition: {duration: 0},
                            mode: 'immediate'});
})"""


def start_to_page(browser, cache: str, root: pathlib.Path, python: str) -> tuple[float, float]:
    """Seconds from `streamlit run` to the first complete figure (trajectories drawn), and to a
    finished run with all 8 figures drawn."""
    os.environ["TOYDIFF_JAX_CACHE"] = cache
    port = free_port()
    t0 = time.perf_counter()
    proc = start_app(port, pathlib.Path(tempfile.mkstemp(suffix=".log")[1]), root, python)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, 120)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}")
        page.wait_for_function(FIRST, timeout=120_000, polling="raf")
        first = time.perf_counter() - t0
        wait_idle(page)
        page.wait_for_function(f"{CHARTS}.length >= 8", timeout=120_000)
        whole = time.perf_counter() - t0
        page.close()
        return first, whole
    finally:
        proc.terminate()
        proc.wait(20)


def title(page, i: int) -> str:
    return page.evaluate(f"{CHARTS}[{i}].querySelector('.gtitle').textContent")


def moves(page, slider_text: str, first: int, last: int, keys: list[str]):
    """ms from each key press on the slider to chart `first`'s new title being drawn, and to
    chart `last`'s (the page's last view to update) with the run finished."""
    slider = (
        page.locator("[data-testid='stSlider']:visible")
        .filter(has_text=slider_text)
        .first.get_by_role("slider")
    )
    to_first, to_all = [], []
    changed = "([i, t]) => {CHARTS}[i].querySelector('.gtitle').textContent !== t".replace(
        "{CHARTS}", CHARTS
    )
    for key in keys:
        wait_idle(page)
        before = [title(page, first), title(page, last)]
        slider.focus()
        t0 = time.perf_counter()
        slider.press(key)
        page.wait_for_function(changed, arg=[first, before[0]], timeout=60_000, polling="raf")
        to_first.append(1000 * (time.perf_counter() - t0))
        page.wait_for_function(changed, arg=[last, before[1]], timeout=60_000, polling="raf")
        page.wait_for_selector(IDLE, timeout=60_000)
        to_all.append(1000 * (time.perf_counter() - t0))
    wait_idle(page)
    return to_first, to_all


def open_popover(page, side: str, slider_text: str):
    """Opens a column's rule popover, where its γ and τ sliders are (Escape closes it)."""
    page.get_by_role("button", name=f"⚙ {side} column").click()
    slider = page.locator("[data-testid='stSlider']:visible").filter(has_text=slider_text)
    slider.first.wait_for(state="visible", timeout=30_000)


PROBE_DRAG = """async ([moves]) => {
  const box = document.querySelectorAll('.toydiff-probe')[0];
  let updates = 0;
  const seen = new MutationObserver(() => { updates += 1; });
  seen.observe(box, {childList: true, characterData: true, subtree: true});
  const gd = document.querySelectorAll('.js-plotly-plot')[2];
  const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
  const at = (f, type) => gd.dispatchEvent(new PointerEvent(type, {bubbles: true, button: 0,
    clientX: r.left + (0.2 + 0.6 * f) * r.width, clientY: r.top + (0.3 + 0.4 * f) * r.height}));
  const frame = () => new Promise(ok => requestAnimationFrame(ok));
  at(0, 'pointerdown');
  const t0 = performance.now();
  for (let i = 1; i <= moves; i++) {  // one pointer move per frame, as a mouse drag sends
    window.dispatchEvent(new PointerEvent('pointermove', {clientX: r.left + (0.2 + 0.6 * i / moves) * r.width,
      clientY: r.top + (0.3 + 0.4 * i / moves) * r.height}));
    await frame();
  }
  const seconds = (performance.now() - t0) / 1000;
  seen.disconnect();
  window.dispatchEvent(new PointerEvent('pointerup', {}));
  return updates / seconds;
}"""
SCRUB_DRAG = """async ([ticks]) => {
  const range = document.querySelectorAll('.toydiff-scrub input[data-knob=gamma]')[0];
  const gd = document.querySelectorAll('.js-plotly-plot')[6];
  gd._scrubFrames = 0;
  const frame = () => new Promise(ok => requestAnimationFrame(ok));
  const lo = +range.value, t0 = performance.now();
  for (let i = 1; i <= ticks; i++) {
    range.value = lo + 0.05 * i;
    range.dispatchEvent(new Event('input'));
    await frame();
  }
  await frame();
  return gd._scrubFrames / ((performance.now() - t0) / 1000);
}"""
SCRUB_RELEASE = """([index]) => {
  const range = document.querySelectorAll('.toydiff-scrub input[data-knob=gamma]')[0];
  window.__oldScrub = range;
  range.value = index;
  range.dispatchEvent(new Event('input'));
  range.dispatchEvent(new Event('change'));
}"""
SCRUB_READY = """() => {  // a new scrub slider (the rerun's figure) that moves the samples
  const range = document.querySelectorAll('.toydiff-scrub input[data-knob=gamma]')[0];
  if (!range || range === window.__oldScrub || !range.isConnected) return false;
  const gd = document.querySelectorAll('.js-plotly-plot')[6];
  if (window.__scrubbed !== range) {
    window.__scrubbed = range;
    gd._scrubFrames = 0;
    range.value = +range.value + 0.3;
    range.dispatchEvent(new Event('input'));
  }
  return gd._scrubFrames > 0;
}"""


def probe_and_scrub(page) -> tuple[list[float], list[float], list[float]]:
    """Probe readout updates per second while dragging (3 drags), γ-scrub sample updates per
    second (3 drags), and s from a γ scrub release to the first scrub of the new figure (5)."""
    probe = [page.evaluate(PROBE_DRAG, [60]) for _ in range(3)]
    wait_idle(page)
    page.get_by_text("drag γ, τ under the plots").click()  # the scrub's sweeps: off by default
    page.wait_for_function(
        "document.querySelectorAll('.toydiff-scrub').length >= 2", timeout=120_000
    )
    wait_idle(page)
    scrub = [page.evaluate(SCRUB_DRAG, [60]) for _ in range(3)]
    release = []
    for index in (3, 5, 7, 9, 11):
        wait_idle(page)
        t0 = time.perf_counter()
        page.evaluate(SCRUB_RELEASE, [index])
        page.wait_for_function(SCRUB_READY, timeout=60_000, polling="raf")
        release.append(time.perf_counter() - t0)
    return probe, scrub, release


def fps_of(page) -> list[float]:
    out = []
    for _ in range(3):
        stamps = page.evaluate(FPS_HOOK)
        out.append((len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000))
    return out


def measure(
    browser, root: pathlib.Path, python: str = sys.executable
) -> tuple[list[tuple[str, float, str, str]], str]:
    """The benchmark's rows (measure, value, unit, target) and raw move times for the app in
    `root` run by the interpreter `python`."""
    with tempfile.TemporaryDirectory() as cache:
        cold = start_to_page(browser, cache, root, python)
        warms = [start_to_page(browser, cache, root, python) for _ in range(WARM_STARTS)]
        warm = [statistics.median(w[i] for w in warms) for i in range(2)]
    os.environ["TOYDIFF_JAX_CACHE"] = str(root / ".jax_cache")
    port = free_port()
    proc = start_app(port, pathlib.Path(tempfile.mkstemp(suffix=".log")[1]), root, python)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, 120)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url)
        wait_idle(page)
        page.wait_for_function(f"{CHARTS}.length >= 8", timeout=120_000)
        open_popover(page, "left", "γ (gamma)")
        gamma = moves(page, "γ (gamma)", 0, 6, ["ArrowRight"] * 10 + ["ArrowLeft"] * 10)
        page.keyboard.press("Escape")
        open_popover(page, "right", "τ (tau)")
        tau = moves(page, "τ (tau)", 1, 7, ["ArrowLeft"] * 10 + ["ArrowRight"] * 10)
        page.keyboard.press("Escape")
        t = moves(page, "timestep t", 2, 3, ["ArrowLeft"] * 20)
        page.locator(".toydiff-probe").first.scroll_into_view_if_needed()
        probe, scrub, release = probe_and_scrub(page)
        page.goto(url + "/?" + LONG)  # 100 steps: 101 animation frames
        wait_idle(page)
        page.wait_for_function(f"{CHARTS}.length >= 8", timeout=120_000)
        frames = page.evaluate(f"{CHARTS}[0]._transitionData._frames.length")
        fps = fps_of(page)
        page.close()
    finally:
        proc.terminate()
        proc.wait(20)
    med = statistics.median
    g, gall, tau_, tall = gamma[0], gamma[1], tau[0], tau[1]
    rows = [
        ("cold start → first complete figure (empty JAX cache)", cold[0], "s", "≤ 8 s"),
        ("cold start → whole page, 8 figures (empty JAX cache)", cold[1], "s", ""),
        (
            f"warm start → first complete figure (JAX cache filled, median of {WARM_STARTS})",
            warm[0],
            "s",
            "≤ 4 s",
        ),
        (
            f"warm start → whole page, 8 figures (JAX cache filled, median of {WARM_STARTS})",
            warm[1],
            "s",
            "",
        ),
        ("γ → trajectory figure, new values (median of 10)", med(g[:10]), "ms", "≤ 250 ms"),
        ("γ → trajectory figure, revisited (median of 10)", med(g[10:]), "ms", "≤ 250 ms"),
        ("τ → trajectory figure, new values (median of 10)", med(tau_[:10]), "ms", "≤ 250 ms"),
        ("τ → trajectory figure, revisited (median of 10)", med(tau_[10:]), "ms", "≤ 250 ms"),
        ("γ and τ → trajectory figure, all 40 moves (median)", med(g + tau_), "ms", "≤ 250 ms"),
        ("γ and τ → every view updated, run finished (median of 40)", med(gall + tall), "ms", ""),
        (
            "t slider → vector-field figure (median of 20, fragment rerun)",
            med(t[0]),
            "ms",
            "≤ 150 ms",
        ),
        ("t slider → both field figures, run finished (median of 20)", med(t[1]), "ms", ""),
        (
            f"animation, {frames} frames × 2000 points (Scattergl), median of 3 plays",
            med(fps),
            "fps",
            "≥ 30 fps",
        ),
    ]
    rows += [
        (
            "probe readout updates per second while dragging (median of 3 drags)",
            med(probe),
            "/s",
            "≥ 20 /s",
        ),
        (
            "γ scrub, sample updates per second while dragging (median of 3)",
            med(scrub),
            "fps",
            "≥ 30 fps",
        ),
        (
            "γ scrub release → first scrub of the new figure (median of 5)",
            med(release),
            "s",
            "≤ 1 s",
        ),
    ]
    raw = (
        "; ".join(
            f"{name} {[round(x) for x in xs]}"
            for name, xs in [("γ", g), ("γ all", gall), ("τ", tau_), ("τ all", tall), ("t", t[0])]
        )
        + f"; fps {[round(x, 1) for x in fps]}; probe/s {[round(x) for x in probe]}"
        + f"; scrub fps {[round(x, 1) for x in scrub]}; release s {[round(x, 2) for x in release]}"
    )
    return rows, raw


FORMATS = {"s": "{:.2f} s", "ms": "{:.0f} ms", "fps": "{:.1f} fps", "/s": "{:.0f} /s"}


def fmt(value: float, unit: str) -> str:
    return FORMATS[unit].format(value)


def header(what: str) -> str:
    return (
        f"# App latency{what} (headless Chromium, software rendering, 2000 points × 50 steps × 2 "
        f"rules)\n\nMeasured {STARTED}–{time.strftime('%H:%M')} by `benchmarks/app_latency.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` on a shared {os.cpu_count()}-core "
        f"machine (load average before the run: {LOAD}); "
    )


def single(browser) -> str:
    rows, raw = measure(browser, ROOT)
    return (
        header("")
        + "one run, so numbers are noisy.\n\n| measure | value | target |\n|---|---:|---:|\n"
        + "\n".join(f"| {name} | {fmt(v, unit)} | {target} |" for name, v, unit, target in rows)
        + f"\n\nRaw (ms): {raw}\n"
    )


def git(*args: str) -> str:
    """The output of a git command in this checkout (raises CalledProcessError)."""
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def side_by_side(browser, sha: str | None, python: str | None, rounds: int) -> str:
    """This checkout and another side, measured alternately; medians, new / old. The other side
    is a worktree of commit `sha` (else this checkout) run by `python` (else this interpreter)."""
    here = git("rev-parse", "--short", "HEAD")
    old_label = " with ".join(filter(None, [sha, python]))
    with tempfile.TemporaryDirectory() as tmp:
        other = pathlib.Path(tmp) / sha if sha else ROOT
        if sha:
            git("worktree", "add", "--detach", str(other), sha)
        sides = [("old", other, python or sys.executable), ("new", ROOT, sys.executable)]
        try:
            runs = {"old": [], "new": []}
            for i in range(rounds):  # old, new, new, old, old, new, ...: drift hits both alike
                for name, root, py in sides[:: 1 if i % 2 == 0 else -1]:
                    runs[name].append(measure(browser, root, py)[0])
                    print(f"round {i + 1}/{rounds}: {name} done", flush=True)
        finally:
            if sha:
                subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT)
    med = statistics.median
    lines = []
    for k, (name, _, unit, target) in enumerate(runs["new"][0]):
        old = med(r[k][1] for r in runs["old"])
        new = med(r[k][1] for r in runs["new"])
        lines.append(
            f"| {name} | {fmt(old, unit)} | {fmt(new, unit)} | {new / old:.2f} | {target} |"
        )
    return (
        header(f": {here} (working tree) against {old_label}")
        + f"{rounds} run{'s' if rounds > 1 else ''} of each, alternating; medians. "
        "new / old below 1 is faster (above 1 for frames per second).\n\n"
        + f"| measure | {old_label} | {here} (working tree) | new / old | target |\n"
        + "|---|---:|---:|---:|---:|\n"
        + "\n".join(lines)
        + "\n"
    )


def main(against: str | None, python: str | None, rounds: int):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        if against is None and python is None:
            text = single(browser)
        else:
            text = side_by_side(browser, against, python, rounds)
        browser.close()
    # results/app_latency_vs_<short sha>[_<environment folder>].md
    label = "_".join(filter(None, [against, python and pathlib.Path(python).parents[1].name]))
    name = f"app_latency_vs_{label}.md" if label else "app_latency.md"
    out = ROOT / "benchmarks" / "results" / name
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", metavar="COMMIT", help="measure side by side with a commit")
    parser.add_argument(
        "--python",
        metavar="PY",
        help="run the other side with this interpreter (another environment, e.g. other package "
        "versions); with --against, that commit in it",
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side (default 2)")
    args = parser.parse_args()
    if args.python is not None and not os.access(args.python, os.X_OK):
        parser.error(f"--python: {args.python!r} is not an executable")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.against is not None:
        try:
            args.against = git("rev-parse", "--short", "--verify", f"{args.against}^{{commit}}")
        except (subprocess.CalledProcessError, OSError):
            parser.error(f"--against: {args.against!r} is not a commit of this repository")
    LOAD = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    STARTED = time.strftime("%Y-%m-%d %H:%M")
    main(args.against, args.python, args.rounds)
