"""Plotly figures that update in place: a Streamlit v2 component that calls Plotly.react on one
persistent <div> per key.

st.plotly_chart derives its element id from the figure, so every new figure remounts the chart:
a fresh plot, new WebGL contexts (~0.2 s per trajectory figure in software-rendered Chromium).
Here the component's identity is its key and a new figure is a `Plotly.react` (~40 ms).
plotly.js is the plotly package's own bundle, served by Streamlit's static file serving
(.streamlit/config.toml) from static/, where it is copied on first import.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import orjson
import plotly
import streamlit as st

STATIC = pathlib.Path(__file__).resolve().parents[1] / "static"
BUNDLE = pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
NAME = f"plotly-{plotly.__version__}.min.js"  # versioned: a stale copy is never served
# serialized figures shared by all sessions (a trajectory figure at 2000 points × 50 steps: 1.4 MB)
FIGURE_ENTRIES = int(os.environ.get("TOYDIFF_FIGURE_ENTRIES", "64"))


def _install_bundle() -> None:
    target = STATIC / NAME
    if not target.exists() or target.stat().st_size != BUNDLE.stat().st_size:
        STATIC.mkdir(exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        shutil.copyfile(BUNDLE, partial)
        os.replace(partial, target)  # atomic: a concurrent start never serves half a file


_install_bundle()


def _serve_files_in_bigger_chunks() -> None:
    """Starlette (Streamlit's web server) sends a static file in 64 KiB chunks, each resumed on
    the server's event loop, which must wait for the GIL that a starting script holds while it
    imports JAX: plotly.js (4.7 MB) then took ~1 s to arrive on localhost and the first figure
    waited for it (benchmarks/app_latency.py, warm start 5.3 → 4.6 s with bigger chunks).
    8 MiB chunks: the bundle in one (memory: one file per page load, transiently)."""
    try:
        from starlette.responses import FileResponse
    except ImportError:  # another web server: nothing to tune
        return
    FileResponse.chunk_size = max(FileResponse.chunk_size, 1 << 23)


_serve_files_in_bigger_chunks()

JS = """
let loading = null;
function plotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  loading = loading || new Promise((ok, fail) => {
    const s = document.createElement('script');
    s.src = new URL('app/static/__BUNDLE__', document.baseURI).href;
    s.onload = () => ok(window.Plotly);
    s.onerror = () => { loading = null; fail(new Error('plotly.js did not load from ' + s.src)); };
    document.head.appendChild(s);
  });
  return loading;
}
// Figures waiting to be drawn (chart div -> latest figure), in the order they arrived. The first
// is drawn at once, each next one after the previous one was painted: the page's first chart
// shows before the others are computed, instead of all of a rerun's charts being drawn in one
// long task and painted together.
const waiting = new Map();
let drawing = false;
function drawNext() {
  if (!waiting.size) { drawing = false; return; }
  const [gd, fig] = waiting.entries().next().value;
  waiting.delete(gd);
  if (gd.isConnected) {
    plotly()
      .then(P => P.react(gd, fig))
      .catch(e => { gd.textContent = 'figure failed: ' + e.message; });
  }
  requestAnimationFrame(() => setTimeout(drawNext));  // after this frame is painted
}
function drawSoon(gd, fig) {
  waiting.set(gd, fig);  // a newer figure for a waiting chart keeps its place in the queue
  if (!drawing) { drawing = true; drawNext(); }
}
export default function ({ parentElement, data }) {
  if (!data || !data.figure) {  // preload(): fetch plotly.js while the server computes
    plotly().catch(() => {});
    return;
  }
  let gd = parentElement.querySelector('.toydiff-plot');
  if (!gd) {
    gd = document.createElement('div');
    gd.className = 'toydiff-plot';
    parentElement.appendChild(gd);
  }
  if (gd._toydiffFigure !== data.figure) {
    gd._toydiffFigure = data.figure;
    drawSoon(gd, JSON.parse(data.figure));
  }
  // purge only when the element is really gone (this also runs before an in-place update)
  return () => setTimeout(() => { if (!gd.isConnected && window.Plotly) window.Plotly.purge(gd); });
}
""".replace("__BUNDLE__", NAME)

_component = st.components.v2.component("toydiff.plotly", js=JS, isolate_styles=False)


def preload() -> None:
    """Starts loading plotly.js in the browser (call at the top of the page, before the work
    that makes the first figure): the 4.7 MB bundle then loads while the server computes."""
    if st.get_option("server.enableStaticServing"):
        _component(data={"figure": None}, key="plotly.preload")


def to_json(fig) -> str:
    """A Figure or figure dict as compact JSON: orjson (numpy arrays and scalars native, NaN as
    null, like plotly.js expects), ~20× faster than PlotlyJSONEncoder's encode-decode-encode."""
    spec = fig if isinstance(fig, dict) else fig.to_plotly_json()
    try:
        return orjson.dumps(spec, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:  # a type orjson does not know: plotly's own encoder knows them all
        return json.dumps(spec, cls=plotly.utils.PlotlyJSONEncoder, separators=(",", ":"))


@st.cache_data(max_entries=FIGURE_ENTRIES, show_spinner=False)
def _cached_json(cache_key: str, _make) -> str:
    """to_json(_make()), shared by every session asking for the same cache_key (which must
    determine the figure: _make is not part of the key)."""
    return to_json(_make())


def show(fig, key: str, config: dict | None = None, container=None, cache_key: str | None = None):
    """Draws a plotly Figure (or figure dict) in `container` (default: the current one), updated
    in place when the same key is drawn again with another figure. With `cache_key`, `fig` is a
    function returning the figure, called only when no session has drawn that cache_key yet
    (a γ move of one column then rebuilds only that column's figures). Without static file
    serving (`streamlit run` started outside the repository, so .streamlit/config.toml was not
    read) this falls back to st.plotly_chart: slower updates, same figures."""
    if not st.get_option("server.enableStaticServing"):
        figure = fig() if cache_key is not None else fig
        (container or st).plotly_chart(figure, theme=None, config=config, key=key)
        return
    figure = _cached_json(cache_key, fig) if cache_key is not None else to_json(fig)
    # the config is spliced in, not re-encoded: the figure's JSON can be megabytes
    figure = f'{figure[:-1]},"config":{to_json({"responsive": True, **(config or {})})}}}'
    if container is None:
        _component(data={"figure": figure}, key=key)
    else:
        with container:
            _component(data={"figure": figure}, key=key)
