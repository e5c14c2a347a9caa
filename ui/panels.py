"""The app's lecture panels: share (link, scene JSON), γ sweep, export for slides, presentation
navigation. Streamlit widgets around toydiff calls; no math."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np
import streamlit as st

from toydiff import guidance, scenes, sweep
from toydiff.scene import Scene
from toydiff.viz import plots  # viz.export (matplotlib, ~0.3 s to import) loads on a click

from . import state
from .training import editor_ui, net_denoiser, train_ui, user_nets  # noqa: F401 - re-exported for app.py

SWEEP_TAUS = (0.1, 0.3, 1.0, 3.0)


# ------------------------------------------------------------------------------------------ share
def share_ui(pair: dict):
    """The link of this view, scene JSON download (both columns, and each column for the CLI), upload."""
    if len(pair) < 2:
        st.info("Fix both columns' settings to share them.")
        return
    present = bool(st.session_state.get("present"))
    name = state.current_curated(pair)
    query = {"scene": name} if name else scenes.encode_query(pair)
    if present:
        query["present"] = "1"
    base = (st.context.url or "http://localhost:8501/").split("?")[0]
    st.markdown("**Link to this view** (same seeds, rules and t; copy with the icon at the right):")
    st.code(f"{base}?{urllib.parse.urlencode(query)}", language=None, wrap_lines=True)
    cols = st.columns(3)
    cols[0].download_button(
        "Download scene JSON (both columns)",
        scenes.pair_to_json(pair),
        "scene_pair.json",
        "application/json",
        key="dl.pair",
        help="Both columns; load it again below.",
    )
    for col, side in zip(cols[1:], scenes.SIDES):
        col.download_button(
            f"Download {side} column (CLI scene)",
            pair[side].to_json(),
            f"scene_{side}.json",
            "application/json",
            key=f"dl.scene.{side}",
            help=f"python -m toydiff metrics --scene scene_{side}.json --json",
        )
    upload = st.file_uploader(
        "Load scene JSON",
        type=["json"],
        key="upload.scene",
        help="A pair file from this app, or one CLI scene file (it goes into the column chosen next to it).",
    )
    into = st.radio(
        "a single scene goes into",
        ["both", "left", "right"],
        horizontal=True,
        key="upload.into",
        help="Where a one-column scene file is loaded.",
    )
    if upload is not None and st.button(
        "Apply the uploaded scene",
        key="upload.apply",
        help="Replace the current settings with the file's.",
    ):
        try:
            text = upload.getvalue()[: scenes.MAX_QUERY_CHARS].decode("utf-8", errors="replace")
            loaded = scenes.pair_from_json(text, into)
        except ValueError as e:
            st.warning(f"Not loaded: {e}")
            return
        st.session_state["_pending"] = {"pair": {**pair, **loaded}}
        st.rerun()


# --------------------------------------------------------------------------------- presentation
def page_style(present: bool) -> None:
    """Picture first: little padding above the title, a smaller title; in presentation mode large
    type for a projector and no toolbar, so that one scene fits 1280 × 720 (tests/test_browser)."""
    common = (
        ".block-container {padding-top: 1.2rem !important; padding-bottom: 1rem !important;}"
        "h1 {padding: 0.2rem 0 0.1rem 0 !important;}"
        "[data-testid='stCaptionContainer'] {margin-bottom: -0.4rem;}"
    )
    mode = (
        "html, .stMarkdown p {font-size: 1.3rem !important;}"
        ".lecture-caption {font-size: 1.15rem !important; color: #333;}"
        "h1 {font-size: 2.4rem !important;} header[data-testid='stHeader'] {display: none;}"
        ".block-container {padding-top: 0.4rem !important;}"
        ".metric-line {font-size: 1.15rem; text-align: center;}"
        if present
        else "h1 {font-size: 2rem !important;}"
    )
    st.markdown(f"<style>{common}{mode}</style>", unsafe_allow_html=True)


def presentation_title(title: str) -> None:
    """◀ previous | the scene's title and its position | next ▶, one row; a click queues the
    neighbouring scene's widgets (state.step_curated) and sets '_nav_clicked' (the caller reruns
    the whole app). The keyboard's ← / → click these buttons (ui/chart.py)."""
    names = scenes.NAMES
    current = st.session_state.get("lecture", "—")
    left, mid, right = st.columns([1.5, 7, 1.5], vertical_alignment="center")
    clicked = left.button(
        "◀ previous",
        key="nav.prev",
        on_click=state.step_curated,
        args=(-1,),
        width="stretch",
        help="Previous curated scene (key ←).",
    )
    clicked |= right.button(
        "next ▶",
        key="nav.next",
        on_click=state.step_curated,
        args=(1,),
        width="stretch",
        help="Next curated scene (key →).",
    )
    pos = f"{names.index(current) + 1} / {len(names)}" if current in names else f"– / {len(names)}"
    mid.title(title, help=f"Curated scene {pos}. ← / → step through the scenes, space plays.")
    if clicked:
        st.session_state["_nav_clicked"] = True


# ------------------------------------------------------------------------------------------ sweep
def _sweep_key(pair: dict, taus: tuple | None) -> str:
    """What a sweep depends on: the scenes without γ (and without τ when τ is swept too)."""
    drop = {"gamma": 0.0, "t": 0.0, **({"tau": 1.0} if taus else {})}
    return json.dumps([{**s.to_dict(), **drop} for s in pair.values()], sort_keys=True) + str(taus)


def run_pair_sweep(pair: dict, taus: tuple | None, progress=None) -> tuple[list[dict], float]:
    """(rows with a 'side' key, seconds): run_sweep for each column's rule, one vmapped call each."""
    rows, start = [], time.perf_counter()
    for i, (side, scene) in enumerate(pair.items()):
        sub = None if progress is None else (lambda d, t, i=i: progress((i + d / t) / len(pair)))
        has_tau = "tau" in scene.params  # any rule with a τ is τ-swept
        rule_taus = taus if (taus and has_tau) else (scene.params.get("tau"),)
        for r in sweep.run_sweep(scene, [scene.method], sweep.GAMMAS, rule_taus, sub):
            rows.append({**r, "side": side})
    return rows, time.perf_counter() - start


def sweep_ui(pair: dict, net, denoiser_for):
    """γ (and τ) sweeps of both columns' rules, plotted as the trade-off curve; a click opens a point."""
    if len(pair) < 2:
        st.info("Fix both columns' settings to sweep them.")
        return
    if net is not None or any(s.score != "exact" for s in pair.values()):
        st.caption("Sweeps use each scene's shipped denoiser (a session net is not swept).")
    c1, c2, c3 = st.columns([2, 2, 1])
    with_tau = c1.toggle(
        "sweep τ too (rules with a τ: 4 values)",
        False,
        key="sweep.tau",
        help=f"Columns whose rule has a τ sweep γ × τ ∈ {SWEEP_TAUS}; other rules γ only.",
    )
    x = c2.selectbox(
        "x axis",
        ["off_support", "energy"],
        format_func=plots.SWEEP_AXES.get,
        key="sweep.x",
        help="Quality cost: off-support rate or energy distance to the ideal target.",
    )
    taus = SWEEP_TAUS if with_tau else None
    key = _sweep_key(pair, taus)
    if c3.button(
        "Run sweep",
        key="sweep.run",
        type="primary",
        help=f"{len(sweep.GAMMAS)} values of γ from {sweep.GAMMAS[0]:g} to {sweep.GAMMAS[-1]:g} "
        "per column, each in one vmapped sampler call, then exact metrics.",
    ):
        bar = st.progress(0.0, text="sweeping γ…")
        rows, seconds = run_pair_sweep(
            pair, taus, lambda f: bar.progress(min(f, 1.0), text="sweeping γ…")
        )
        bar.progress(1.0, text=f"done in {seconds:.1f} s")
        st.session_state["sweep"] = (key, rows, seconds)
    stored = st.session_state.get("sweep")
    if not stored or stored[0] != key:
        st.caption(
            "Press *Run sweep* for the leakage / quality trade-off of both columns' rules "
            "(the CCFG paper's curve)."
        )
        return
    _, rows, seconds = stored
    current = {}
    for side, s in pair.items():  # ring the columns' present settings when they are on the grid
        hit = [
            r
            for r in rows
            if r["side"] == side
            and np.isclose(r["gamma"], s.params.get("gamma", np.nan))
            and (r["tau"] != r["tau"] or np.isclose(r["tau"], s.params.get("tau", np.nan)))
        ]
        if hit:
            current[side] = (hit[0][x], hit[0]["leakage_hard"])
    event = st.plotly_chart(
        plots.sweep_figure(rows, x, "leakage_hard", current),
        theme=None,
        key="sweep.chart",
        config=plots.CONFIG,
        on_select="rerun",
        selection_mode="points",
    )
    st.caption(
        f"{len(rows)} settings, {pair['left'].n} points × {pair['left'].steps} steps each, "
        f"computed in {seconds:.2f} s. Click a point to open that γ (and τ) in its column."
    )
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    picked = next((p.get("customdata") for p in points if p.get("customdata")), None)
    if picked and picked != st.session_state.get("sweep.applied"):
        side, gamma, tau = picked
        method = pair[side].method
        change = {f"{side}.{method}.gamma": float(gamma)}
        if tau is not None and "tau" in guidance.rule(method).all_params:
            change[f"{side}.{method}.tau"] = float(tau)
        st.session_state["sweep.applied"] = picked
        st.session_state["_pending"] = {"widgets": change}
        st.rerun()


# ----------------------------------------------------------------------------------------- export
def figure_bytes(fig, fmt: str) -> bytes:
    """A matplotlib figure as PNG, SVG or PDF bytes (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=200 if fmt == "png" else None)
    plt.close(fig)
    return buf.getvalue()


def animation_bytes(anim, fmt: str) -> bytes:
    """A matplotlib animation as GIF or MP4 bytes, through export.save_animation and a temp file."""
    import matplotlib.pyplot as plt

    from toydiff.viz import export

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trajectory.{fmt}"
        export.save_animation(anim, str(path))
        plt.close(anim._fig)
        return path.read_bytes()


def scene_title(scene: Scene, m: dict) -> str:
    rule = guidance.rule(scene.method)
    params = "  ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in scene.params.items()
    )
    leak = "" if m["leakage_hard"] != m["leakage_hard"] else f"  leak={m['leakage_hard']:.1%}"
    return f"{rule.label}  {params}{leak}  off={m['off_support']:.1%}"


@st.cache_data(max_entries=24, show_spinner=False)
def _outcome_file(
    scene_json: str, samples: str, _x0, fmt: str, _mix, threshold: float, title: str
) -> bytes:
    from toydiff.viz import export

    scene = Scene.from_json(scene_json)
    return figure_bytes(export.samples_figure(_mix, _x0, scene.negative, threshold, title), fmt)


@st.cache_data(max_entries=8, show_spinner=False)
def _animation_file(
    scene_json: str, samples: str, _frames, fmt: str, _mix, threshold: float, title: str
) -> bytes:
    from toydiff.viz import export

    scene = Scene.from_json(scene_json)
    return animation_bytes(export.animation(_mix, _frames, scene.negative, threshold, title), fmt)


def metrics_csv(pair: dict, values: dict) -> str:
    """CSV of both columns' metrics, one row per column, with its scene JSON."""
    keys = sorted({k for v in values.values() for k in v})
    lines = [",".join(["side", "method", *keys, "scene"])]
    for side, s in pair.items():
        cells = [
            f"{values[side][k]:.6g}" if isinstance(values[side][k], float) else str(values[side][k])
            for k in keys
        ]
        lines.append(",".join([side, s.method, *cells, '"' + s.to_json().replace('"', '""') + '"']))
    return "\n".join(lines) + "\n"


def export_ui(pair: dict, runs: dict, values: dict, mixture_of, threshold_of):
    """Download buttons per column: outcome PNG/SVG/PDF, trajectory GIF/MP4; and the metrics CSV."""
    if len(pair) < 2:
        st.info("Fix both columns' settings to export them.")
        return
    st.caption(
        "Matplotlib renderings for slides (the CLI's `python -m toydiff render` draws the same). "
        "Files are made when you click, GIF/MP4 take a few seconds."
    )
    for col, (side, scene) in zip(st.columns(2), pair.items()):
        run, mix, thr = runs[side], mixture_of(scene), threshold_of(scene)
        title, key = scene_title(scene, values[side]), scene.to_json()
        # the samples' digest is part of the cache key: a session's own net shares the scene JSON
        samples = hashlib.sha1(np.ascontiguousarray(run["x0_raw"]).tobytes()).hexdigest()
        col.markdown(f"**{side}: {guidance.rule(scene.method).label}**")
        row = col.columns(5)
        for cell, fmt, mime in zip(
            row, ("png", "svg", "pdf"), ("image/png", "image/svg+xml", "application/pdf")
        ):
            cell.download_button(
                fmt.upper(),
                functools.partial(_outcome_file, key, samples, run["x0_raw"], fmt, mix, thr, title),
                f"{side}_{scene.method}.{fmt}",
                mime,
                key=f"dl.{side}.{fmt}",
                on_click="ignore",
                help=f"Final samples over the density, as {fmt.upper()}.",
            )
        for cell, fmt, mime in zip(row[3:], ("gif", "mp4"), ("image/gif", "video/mp4")):
            cell.download_button(
                fmt.upper(),
                functools.partial(
                    _animation_file, key, samples, run["frames"], fmt, mix, thr, title
                ),
                f"{side}_{scene.method}.{fmt}",
                mime,
                key=f"dl.{side}.{fmt}",
                on_click="ignore",
                help=f"The trajectory animation, as {fmt.upper()}.",
            )
    st.download_button(
        "Metrics CSV (both columns)",
        metrics_csv(pair, values),
        "metrics.csv",
        "text/csv",
        key="dl.csv",
        help="Every metric of both columns, with each scene's JSON.",
    )
