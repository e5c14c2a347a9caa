"""Plotly figures that update in place: a Streamlit v2 component that calls Plotly.react on one
persistent <div> per key.

st.plotly_chart derives its element id from the figure, so every new figure remounts the chart:
a fresh plot, new WebGL contexts (~0.2 s per trajectory figure in software-rendered Chromium).
Here the component's identity is its key and a new figure is a `Plotly.react` (~40 ms).
plotly.js is a bundle of the plotly package's version with only the trace types the figures use
(ui/plotly_bundle/), served by Streamlit's static file serving (.streamlit/config.toml) from
static/: 1.5 MB that Chromium evaluates in ~0.2 s, where the full 4.8 MB bundle took ~1 s of the
page's main thread at every page load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib

import orjson
import plotly
import streamlit as st

PLOTLY_JS = "4.1.1"  # the plotly package's plotly.js (tests/test_plots.py checks it)
NAME = f"plotly-{PLOTLY_JS}-toydiff.min.js"  # versioned: a stale copy is never served
BUNDLE = pathlib.Path(__file__).resolve().parents[1] / "static" / NAME
# serialized figures shared by all sessions (a trajectory figure at 2000 points × 50 steps: 1.1 MB)
FIGURE_ENTRIES = int(os.environ.get("TOYDIFF_FIGURE_ENTRIES", "64"))


def _serve_files_in_bigger_chunks() -> None:
    """Starlette (Streamlit's web server) sends a static file in 64 KiB chunks, each resumed on
    the server's event loop, which must wait for the GIL that a starting script holds while it
    imports JAX: the full plotly.js (4.8 MB) then took ~1 s to arrive on localhost and the first
    figure waited for it (benchmarks/app_latency.py, warm start 5.3 → 4.6 s with bigger chunks).
    8 MiB chunks: a bundle in one (memory: one file per page load, transiently)."""
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
    fitToScreen(gd, fig);
    const anim = liftAnimation(fig);
    plotly()
      .then(P => P.react(gd, fig))
      .then(() => {
        const meta = fig.layout.meta || {};
        animationBar(gd, anim);
        probeSetup(gd, meta.probe);
        scrubSetup(gd, meta.scrub);
      })
      .catch(e => { gd.textContent = 'figure failed: ' + e.message; });
  }
  requestAnimationFrame(() => setTimeout(drawNext));  // after this frame is painted
}
// A figure with layout.meta.fit (presentation mode) is no taller than what is left of the
// window below its top, minus meta.fit pixels (its animation bar and the metrics line).
function fitToScreen(gd, fig) {
  const lay = fig.layout || {}, below = (lay.meta || {}).fit;
  if (!below) return;
  const top = gd.getBoundingClientRect().top + window.scrollY;
  const room = Math.floor(window.innerHeight - top - below);
  lay.height = Math.max(260, Math.min(lay.height || 470, room));
}
// Keys (once per page): ← / → click the presentation's previous / next buttons, space plays or
// pauses every animation; not while a text field, select or slider has the focus.
if (!window._toydiffKeys) {
  window._toydiffKeys = true;
  document.addEventListener('keydown', e => {
    const el = e.target || {}, tag = (el.tagName || '').toLowerCase();
    if (['input', 'textarea', 'select'].includes(tag) || el.isContentEditable) return;
    if (el.getAttribute && el.getAttribute('role') === 'slider') return;
    if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
      const which = e.key === 'ArrowLeft' ? 'prev' : 'next';
      const button = document.querySelector(`.st-key-nav-${which} button`);
      if (button) { e.preventDefault(); button.click(); }
    } else if (e.key === ' ' || e.code === 'Space') {
      const bars = [...document.querySelectorAll('.toydiff-anim')];
      if (!bars.length) return;
      e.preventDefault();
      window._toydiffPlaying = !window._toydiffPlaying;
      for (const bar of bars) {
        const buttons = bar.querySelectorAll('button');  // [play, pause] (the figures' menus)
        const b = buttons[window._toydiffPlaying ? 0 : 1];
        if (b) b.click();
      }
    }
  });
}
// An animated figure's play/pause buttons and frame slider (layout.updatemenus and
// layout.sliders whose entries animate) are drawn as HTML under the plot, not by Plotly: Plotly
// redraws its slider, one SVG group per frame, on every update of the figure (~15-20 ms at 51
// frames in software-rendered Chromium). Returns {buttons, slider} taken out of fig.layout.
function liftAnimation(fig) {
  const lay = fig.layout || {};
  const slider = (lay.sliders || [])[0];
  const animates = x => x.method === 'animate';
  if (!slider || !(slider.steps || []).length || !slider.steps.every(animates)) return null;
  const menus = lay.updatemenus || [];
  const ours = menus.filter(m => (m.buttons || []).every(animates));
  fig.layout = {
    ...lay,
    sliders: (lay.sliders || []).slice(1),
    updatemenus: menus.filter(m => !ours.includes(m)),
    margin: {...(lay.margin || {}), b: 40},
  };
  return {buttons: ours.flatMap(m => m.buttons), slider, size: (lay.font || {}).size || 12};
}
function animationBar(gd, anim) {
  let bar = gd._toydiffBar;
  if (!anim) { if (bar) bar.remove(); gd._toydiffBar = null; return; }
  if (!bar) {
    bar = gd._toydiffBar = document.createElement('div');
    bar.className = 'toydiff-anim';
    bar.style.cssText = 'display:flex;align-items:center;gap:6px;margin:-4px 15px 6px 45px;' +
      'font-family:sans-serif;color:#444';
    gd.after(bar);
    gd.on('plotly_animatingframe', e => bar._show && bar._show(e.name));
  }
  const {buttons, slider} = anim;
  const names = slider.steps.map(s => String(s.args[0][0]));
  const prefix = (slider.currentvalue || {}).prefix || '';
  bar.style.fontSize = Math.min(anim.size, 15) + 'px';  // compact under a projector's figure
  bar.replaceChildren();
  for (const b of buttons) {
    const el = document.createElement('button');
    el.textContent = b.label;
    el.style.cssText = 'font:inherit;padding:1px 8px;border:1px solid #bbb;border-radius:3px;' +
      'background:#f4f4f4;cursor:pointer;white-space:nowrap';
    el.onclick = () => Plotly.animate(gd, ...b.args);
    bar.append(el);
  }
  const range = Object.assign(document.createElement('input'), {
    type: 'range', min: 0, max: names.length - 1, step: 1, value: slider.active ?? 0,
  });
  range.style.cssText = 'flex:1;margin:0 8px';
  range.setAttribute('aria-label', 'animation frame');
  const label = document.createElement('output');
  label.style.cssText = 'min-width:6em;text-align:right';
  bar._show = name => {
    const i = names.indexOf(String(name));
    if (i < 0) return;
    range.value = i;
    label.textContent = prefix + slider.steps[i].label;
  };
  range.oninput = () => {
    const step = slider.steps[+range.value];
    label.textContent = prefix + step.label;
    Plotly.animate(gd, ...step.args);
  };
  bar.append(range, label);
  bar._show(names[+range.value]);
}
// The probe (layout.meta.probe, plots.probe_meta): a press or drag on the plot moves it; while
// dragging, the readout under every probe plot (both columns) shows its rows interpolated from
// the grid the figure brought, and its arrows follow; on release the point goes to the server
// (component state 'probe'), whose rerun brings the exact values there (meta.probe.at).
const probePlots = new Set();
function decode(arr) {  // a Plotly typed array {dtype: 'f4' | 'u1', bdata} (plots._arr)
  const bin = atob(arr.bdata), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return arr.dtype === 'u1' ? bytes : new Float32Array(bytes.buffer);
}
function probeSetup(gd, probe) {
  if (!probe) {
    probePlots.delete(gd);
    if (gd._toydiffProbe) gd._toydiffProbe.remove();
    gd._toydiffProbe = gd._probe = null;
    return;
  }
  gd._probe = {...probe, u: decode(probe.u), rows: probe.rows.map(r => ({...r, data: decode(r.grid)}))};
  probePlots.add(gd);
  if (!gd._toydiffProbe) {
    const box = gd._toydiffProbe = document.createElement('div');
    box.className = 'toydiff-probe';
    box.style.cssText = 'margin:2px 15px 6px 45px;font:13px/1.5 sans-serif;color:#333;' +
      'font-variant-numeric:tabular-nums;min-height:4.5em';
    (gd._toydiffBar || gd).after(box);
    gd.addEventListener('pointerdown', e => probeDrag(gd, e), true);
  }
  const at = probe.point && probe.rows.every(r => r.at !== null);
  probeShow(gd, probe.point, at ? probe.rows.map(r => r.at) : null);
}
function toData(gd, e) {  // the event's data coordinates, or null outside the axes
  const fl = gd._fullLayout, xa = fl && fl.xaxis, ya = fl && fl.yaxis;
  if (!xa || !ya) return null;
  const r = gd.getBoundingClientRect();
  const px = e.clientX - r.left - xa._offset, py = e.clientY - r.top - ya._offset;
  if (px < 0 || py < 0 || px > xa._length || py > ya._length) return null;
  return [xa.p2d(px), ya.p2d(py)];
}
function probeDrag(gd, e) {
  const start = gd._probe && e.button === 0 && toData(gd, e);
  if (!start) return;
  e.preventDefault();
  e.stopPropagation();
  let last = start, frame = 0;
  const paint = () => { frame = 0; for (const g of probePlots) probeShow(g, last, null); };
  paint();
  const move = ev => {
    last = toData(gd, ev) || last;
    if (!frame) frame = requestAnimationFrame(paint);
  };
  const up = () => {
    window.removeEventListener('pointermove', move, true);
    window.removeEventListener('pointerup', up, true);
    if (frame) { cancelAnimationFrame(frame); paint(); }
    const round = v => Math.round(v * 1000) / 1000;
    if (gd._toydiffSend) gd._toydiffSend('probe', [round(last[0]), round(last[1])]);
  };
  window.addEventListener('pointermove', move, true);
  window.addEventListener('pointerup', up, true);
}
function interpolate(p, row, x, y) {  // bilinear on the grid p.u × p.u (row-major, y slowest)
  const u = p.u, n = u.length, h = u[1] - u[0];
  const fx = Math.min(Math.max((x - u[0]) / h, 0), n - 1), fy = Math.min(Math.max((y - u[0]) / h, 0), n - 1);
  const i = Math.min(Math.floor(fx), n - 2), j = Math.min(Math.floor(fy), n - 2), a = fx - i, b = fy - j;
  const at = (ii, jj, c) => row.data[(jj * n + ii) * row.dim + c];
  const out = [];
  for (let c = 0; c < row.dim; c++) {
    out.push((1 - a) * (1 - b) * at(i, j, c) + a * (1 - b) * at(i + 1, j, c) +
      (1 - a) * b * at(i, j + 1, c) + a * b * at(i + 1, j + 1, c));
  }
  return row.dim === 1 ? out[0] : out;
}
function probeShow(gd, point, exact) {  // exact: the rows' values at point, else interpolated
  const p = gd._probe, box = gd._toydiffProbe;
  if (!p || !box) return;
  if (!point) {
    box.dataset.state = 'none';
    box.textContent = 'Press or drag on the field to place a probe: p(c | x_t), the rule’s ' +
      'weights and its predictions there, at this t.';
    probeArrows(gd, null, []);
    return;
  }
  const [x, y] = point, values = exact || p.rows.map(r => interpolate(p, r, x, y));
  // the arrows' scale: the longest prediction at the point spans a fifth of the plot
  const longest = Math.max(1e-6, ...p.rows.map((r, i) => r.dim === 2 ? Math.hypot(...values[i]) : 0));
  const s = (p.u[p.u.length - 1] - p.u[0]) / 5 / longest;
  const num = (v, d) => (v < 0 ? '−' : '') + Math.abs(v).toFixed(d);
  const cell = (key, text) => `<span data-probe="${key}">${text}</span>`;
  const lines = [[`<b>probe</b> (${cell('x', num(x, 3))}, ${cell('y', num(y, 3))}) at t = ${p.t} · ` +
    (exact ? 'exact' : '≈ interpolated')], [], []];
  const notes = [];
  p.rows.forEach((r, i) => {
    const v = values[i];
    if (r.dim === 1) (r.key.startsWith('p.') ? lines[1] : lines[2]).push(`${r.label} ${cell(r.key, num(v, 3))}`);
    else {
      lines[2].push(`<span style="color:${r.color}">${r.label}</span> (${cell(r.key, num(v[0], 2) + ', ' + num(v[1], 2))})`);
      notes.push({x: x + s * v[0], y: y + s * v[1], ax: x, ay: y, arrowcolor: r.color});
    }
  });
  box.dataset.state = exact ? 'exact' : 'approx';
  box.innerHTML = lines.filter(l => l.length).map(l => l.join(' · ')).join('<br>');
  probeArrows(gd, [x, y], notes);
}
// The probe's marker and arrows: an SVG layer over the plot, in pixels from the axes (a
// Plotly.relayout of annotations redrew the figure's arrow shapes too: ~10 readouts per s).
const SVG = 'http://www.w3.org/2000/svg';
function probeArrows(gd, point, arrows) {
  let svg = gd._probeSvg;
  if (!svg || svg.parentNode !== gd) {
    svg = gd._probeSvg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'toydiff-probe-arrows');
    svg.style.cssText = 'position:absolute;left:0;top:0;width:100%;height:100%;' +
      'pointer-events:none;overflow:visible;z-index:5';
    gd.style.position = 'relative';
    gd.appendChild(svg);
  }
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const px = x => xa._offset + xa.d2p(x), py = y => ya._offset + ya.d2p(y);
  const parts = [];
  for (const a of point ? arrows : []) {
    const x0 = px(a.ax), y0 = py(a.ay), x1 = px(a.x), y1 = py(a.y);
    const len = Math.hypot(x1 - x0, y1 - y0) || 1, ux = (x1 - x0) / len, uy = (y1 - y0) / len;
    const h = Math.min(9, 0.5 * len), w = 0.45 * h;  // the head: a triangle at the tip
    const head = [[x1, y1], [x1 - h * ux - w * uy, y1 - h * uy + w * ux],
                  [x1 - h * ux + w * uy, y1 - h * uy - w * ux]].map(p => p.join(',')).join(' ');
    parts.push(`<line x1="${x0}" y1="${y0}" x2="${x1 - h * ux}" y2="${y1 - h * uy}" ` +
      `stroke="${a.arrowcolor}" stroke-width="2.4"/><polygon points="${head}" fill="${a.arrowcolor}"/>`);
  }
  if (point) {
    const cx = px(point[0]), cy = py(point[1]);
    parts.push(`<path d="M${cx - 8},${cy}H${cx + 8}M${cx},${cy - 8}V${cy + 8}" stroke="#000" ` +
      `stroke-width="2.2"/><circle cx="${cx}" cy="${cy}" r="3" fill="#fff" stroke="#000"/>`);
  }
  svg.innerHTML = parts.join('');
}
// The scrub (layout.meta.scrub, plots.scrub_meta): a slider per knob under an outcome plot.
// Dragging it moves the samples between the final samples at the neighbouring grid values, in
// the browser, drawn on a 2D canvas over the axes (a Plotly.restyle of the Scattergl trace took
// ~45 ms a frame in software WebGL: 21 fps); on release the value goes to the server (component
// state 'scrub'), whose rerun draws the exact run at that value in the plot again.
function scrubCanvas(gd) {
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, dpr = window.devicePixelRatio || 1;
  let c = gd._scrubCanvas;
  if (!c || c.parentNode !== gd) {
    c = gd._scrubCanvas = document.createElement('canvas');
    c.className = 'toydiff-scrub-canvas';
    gd.style.position = 'relative';
    gd.appendChild(c);
    Plotly.restyle(gd, {visible: false}, [0]);  // the plot's own samples, until the rerun
  }
  c.style.cssText = `position:absolute;left:${xa._offset}px;top:${ya._offset}px;` +
    `width:${xa._length}px;height:${ya._length}px;pointer-events:none;z-index:4`;
  c.width = Math.round(xa._length * dpr);
  c.height = Math.round(ya._length * dpr);
  return c;
}
function scrubDraw(gd, s, x, y, codes) {
  const c = scrubCanvas(gd), ctx = c.getContext('2d'), dpr = window.devicePixelRatio || 1;
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = s.size / 2 * dpr;
  ctx.clearRect(0, 0, c.width, c.height);
  ctx.globalAlpha = s.opacity;
  s.colors.forEach((color, k) => {
    ctx.fillStyle = color;
    ctx.beginPath();
    for (let j = 0; j < x.length; j++) {
      if (codes[j] !== k || !Number.isFinite(x[j]) || !Number.isFinite(y[j])) continue;
      const px = xa.d2p(x[j]) * dpr, py = ya.d2p(y[j]) * dpr;
      ctx.moveTo(px + r, py);
      ctx.arc(px, py, r, 0, 2 * Math.PI);
    }
    ctx.fill();
  });
  gd._scrubXY = {x, y};  // what is drawn (tests read it)
}
function scrubEnd(gd) {  // the plot's own samples again
  if (gd._scrubCanvas) { gd._scrubCanvas.remove(); gd._scrubCanvas = null; }
}
function scrubLegend(gd, names, codes) {  // the legend traces (1, 2, ...) count these codes
  const counts = names.map(() => 0);
  for (const c of codes) counts[c]++;
  Plotly.restyle(gd, {name: names.map((name, k) => `${name} ${counts[k]}`)}, names.map((_, k) => k + 1));
}
function scrubSetup(gd, scrub) {
  if (gd._toydiffScrub) gd._toydiffScrub.remove();
  gd._toydiffScrub = null;
  scrubEnd(gd);  // a new figure: its trace is visible
  if (!scrub || !scrub.length) return;
  const bar = gd._toydiffScrub = document.createElement('div');
  bar.className = 'toydiff-scrub';
  bar.style.cssText = 'margin:-4px 15px 6px 45px;font:13px sans-serif;color:#444';
  (gd._toydiffBar || gd).after(bar);
  for (const s of scrub) {
    const xy = decode(s.xy), codes = decode(s.codes), v = s.values, g = v.length;
    const n = codes.length / g;
    const row = document.createElement('label');
    row.style.cssText = 'display:flex;align-items:center;gap:8px';
    const range = Object.assign(document.createElement('input'), {type: 'range', min: 0, max: g - 1, step: 'any'});
    range.dataset.knob = s.knob;
    range.style.cssText = 'flex:1';
    const out = document.createElement('output');
    out.style.cssText = 'min-width:5em;text-align:right';
    const valueAt = pos => {
      const i = Math.min(Math.floor(pos), g - 2), a = pos - i;
      return v[i] + a * (v[i + 1] - v[i]);
    };
    let k = 0;  // the current value's position among the grid values
    while (k < g - 2 && v[k + 1] < s.current) k++;
    const start = Math.min(Math.max(k + (s.current - v[k]) / (v[k + 1] - v[k]), 0), g - 1);
    range.value = start;
    const show = pos => { out.textContent = `${s.label} = ${+valueAt(pos).toPrecision(3)}`; };
    let frame = 0, legendAt = -1;  // the grid value the legend counts (-1: the plot's own)
    const legend = gd.data.slice(1).map(t => t.name);
    const paint = () => {
      frame = 0;
      const pos = +range.value, i = Math.min(Math.floor(pos), g - 2), a = pos - i;
      const x = new Float32Array(n), y = new Float32Array(n), p = i * n * 2, q = p + n * 2;
      for (let j = 0; j < n; j++) {
        x[j] = (1 - a) * xy[p + 2 * j] + a * xy[q + 2 * j];
        y[j] = (1 - a) * xy[p + 2 * j + 1] + a * xy[q + 2 * j + 1];
      }
      const near = Math.round(pos), nearCodes = codes.subarray(near * n, (near + 1) * n);
      scrubDraw(gd, s, x, y, nearCodes);
      if (near !== legendAt) { legendAt = near; scrubLegend(gd, s.names, nearCodes); }
      gd._scrubFrames = (gd._scrubFrames || 0) + 1;
      show(pos);
    };
    range.oninput = () => { if (!frame) frame = requestAnimationFrame(paint); };
    range.onchange = () => {
      const value = +valueAt(+range.value).toPrecision(3);
      if (value === +s.current.toPrecision(3)) {  // back where it was: no rerun comes
        range.value = start;
        show(start);
        scrubEnd(gd);
        legendAt = -1;
        Plotly.restyle(gd, {name: legend}, legend.map((_, k) => k + 1));
        Plotly.restyle(gd, {visible: true}, [0]);
      } else if (gd._toydiffSend) gd._toydiffSend('scrub', {knob: s.knob, value});
    };
    row.append(`drag ${s.label}`, range, out);
    bar.append(row);
    show(start);
  }
}
function drawSoon(gd, fig) {
  waiting.set(gd, fig);  // a newer figure for a waiting chart keeps its place in the queue
  if (!drawing) { drawing = true; drawNext(); }
}
const text = new TextDecoder();
export default function ({ parentElement, data, setStateValue }) {
  if (!data || !data.length) {  // preload(): fetch plotly.js while the server computes
    plotly().catch(() => {});
    return;
  }
  let gd = parentElement.querySelector('.toydiff-plot');
  if (!gd) {
    gd = document.createElement('div');
    gd.className = 'toydiff-plot';
    parentElement.appendChild(gd);
  }
  // the payload (ui/chart.py `payload`): the figure's id, a newline, the figure's JSON
  const cut = data.indexOf(10);
  const id = text.decode(data.subarray(0, cut));
  gd._toydiffSend = setStateValue;
  if (gd._toydiffId !== id) {
    gd._toydiffId = id;
    drawSoon(gd, JSON.parse(text.decode(data.subarray(cut + 1))));
  }
  // purge only when the element is really gone (this also runs before an in-place update)
  return () => setTimeout(() => {
    if (!gd.isConnected && window.Plotly) { probePlots.delete(gd); window.Plotly.purge(gd); }
  });
}
""".replace("__BUNDLE__", NAME)

_component = st.components.v2.component("toydiff.plotly", js=JS, isolate_styles=False)


def preload() -> None:
    """Starts loading plotly.js in the browser (call at the top of the page, before the work
    that makes the first figure): the bundle then loads while the server computes."""
    if st.get_option("server.enableStaticServing"):
        _component(key="plotly.preload")


def to_json(fig, config: dict | None = None) -> bytes:
    """A Figure or figure dict (with `config` added, if given) as compact UTF-8 JSON: orjson
    (numpy arrays and scalars native, NaN as null, like plotly.js expects), ~20× faster than
    PlotlyJSONEncoder's encode-decode-encode."""
    spec = fig if isinstance(fig, dict) else fig.to_plotly_json()
    if config is not None:
        spec = {**spec, "config": config}
    try:
        return orjson.dumps(spec, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # a type orjson does not know: plotly's own encoder knows them all
        return json.dumps(spec, cls=plotly.utils.PlotlyJSONEncoder, separators=(",", ":")).encode()


def payload(fig, config: dict | None = None, id: str | None = None) -> bytes:
    """What the component receives: the figure's id (default: a digest of its JSON), a newline,
    its JSON. Bytes travel as they are (a dict would be JSON-encoded twice per rerun by
    Streamlit: ~5 ms per MB, for unchanged figures too); the browser parses a figure only when
    its id is new."""
    body = to_json(fig, {"responsive": True, **(config or {})})
    return f"{id or hashlib.sha1(body).hexdigest()}\n".encode() + body


def figure_of(data: bytes) -> dict:
    """The figure (with its config) in a `payload`: what the browser draws."""
    return json.loads(data[data.index(b"\n") + 1 :])


@st.cache_resource(max_entries=FIGURE_ENTRIES, show_spinner=False)
def _cached_payload(cache_key: str, config_key: str, _make, _config) -> bytes:
    """payload(_make(), _config), shared by every session asking for the same cache_key (which
    must determine the figure: _make is not part of the key). Bytes are immutable: a resource
    cache hands out the same object instead of unpickling a copy per rerun."""
    digest = hashlib.sha1(f"{cache_key}|{config_key}".encode()).hexdigest()
    return payload(_make(), _config, digest)


def show(
    fig,
    key: str,
    config: dict | None = None,
    container=None,
    cache_key: str | None = None,
    on: dict | None = None,
):
    """Draws a plotly Figure (or figure dict) in `container` (default: the current one), updated
    in place when the same key is drawn again with another figure. With `cache_key`, `fig` is a
    function returning the figure, called only when no session has drawn that cache_key yet
    (a γ move of one column then rebuilds only that column's figures). Without static file
    serving (`streamlit run` started outside the repository, so .streamlit/config.toml was not
    read) this falls back to st.plotly_chart: slower updates, same figures, no probe.
    on: {state name: callback} for the browser's reports: 'probe' (a figure with
    layout.meta.probe: the point where the user let go of the probe) and 'scrub' (one with
    layout.meta.scrub: {knob, value} where the user let go of a scrub slider); read the value
    with `value_of(key, name)` in the callback."""
    if not st.get_option("server.enableStaticServing"):
        figure = fig() if cache_key is not None else fig
        (container or st).plotly_chart(figure, theme=None, config=config, key=key)
        return
    if cache_key is None:
        data = payload(fig, config)
    else:
        data = _cached_payload(cache_key, json.dumps(config, sort_keys=True), fig, config)
    on = on or {}
    events = {f"on_{name}_change": callback for name, callback in on.items()}
    with container if container is not None else contextlib.nullcontext():
        _component(data=data, key=key, default=dict.fromkeys(on) or None, **events)


def value_of(key: str, name: str):
    """The last value the chart `key` reported under `name` (None: none yet)."""
    value = st.session_state.get(key)
    return None if value is None else value.get(name)
