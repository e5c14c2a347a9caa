"""Plotly figures for the app: animated trajectories, vector fields, weights over time, outcomes.

Pure drawing: every builder takes numpy arrays computed elsewhere and returns a `go.Figure` with
fixed axes, so the two columns of the app are directly comparable. The views the app redraws on
every slider move also come as `*_spec`: the same figure as a plain dict, which the app
serializes as it is (a go.Figure costs ~5 ms to build and ~5 ms more to copy back into a dict).
"""

from __future__ import annotations

import base64
import io

import contourpy
import numpy as np
import plotly.graph_objects as go
from PIL import Image

from ..metrics import OUTCOME_COLORS

FONT = dict(family="Helvetica, Arial, sans-serif", size=13, color="#222")
FIELD_COLORS = {
    "uncond": "#8c8c8c",
    "pos": "#238b45",
    "neg": "#cb181d",
    "guided": "#111111",
    "term": "#6a51a3",
    "step": "#111111",
    "weak": "#8c6d31",
    "weak_uncond": "#8c6d31",
    "rand": "#8c8c8c",
    "cond": "#8c8c8c",
}
FIELD_LABELS = {
    "uncond": "ε unconditional",
    "pos": "ε positive",
    "neg": "ε negative",
    "guided": "ε̂ guided",
    "term": "guidance term ε̂ − ε",
    "step": "step x_t' − x_t",
    "weak": "ε weak",
    "weak_uncond": "ε weak, unconditional",
    "rand": "ε random concept",
    "cond": "ε conditional",
}
WEIGHT_COLORS = {
    "lam_neg": "#6a51a3",
    "scale_neg": "#d94801",
    "lam_pos": "#238b45",
    "scale_pos": "#74c476",
    "p_neg": "#cb181d",
    "p_exact": "#252525",
    "lam_exact": "#252525",
    "push_neg": "#8c2d04",
}
WEIGHT_LABELS = {
    "lam_neg": "λ⁻",
    "scale_neg": "γλ⁻ (effective negative scale)",
    "lam_pos": "λ⁺",
    "scale_pos": "γλ⁺",
    "p_neg": "p(n | x_t) the rule used",
    "p_exact": "exact p(n | x_t) at the same x_t",
    "lam_exact": "λ⁺ of the exact r = p_t(x | c)/p_t(x) at the same x_t",
    "push_neg": "push of the negative term |b_t|·γλ⁻‖Δ_n‖",
}
EXACT_KEYS = ("p_exact", "lam_exact")  # the exact counterparts of tracked weights: dotted
HEAT_LABELS = {"scale_neg": "γλ⁻", "lam_neg": "λ⁻", "p_neg": "p(n|x_t)", "log_p": "log p_t(x)"}
NEG_SHADE = "rgba(227,74,51,0.13)"
DENSITY_SCALE = [[0, "rgba(255,255,255,0)"], [1, "rgba(90,90,90,0.55)"]]
HEAT_SCALE = [[0, "#ffffff"], [0.25, "#fdd0a2"], [0.6, "#fd8d3c"], [1, "#a63603"]]
CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}


def _arr(a: np.ndarray, dtype=np.float32) -> dict:
    """A Plotly base64 typed array: compact, and decoded by plotly.js without a JSON number parse."""
    a = np.ascontiguousarray(a, dtype)
    return {
        "dtype": a.dtype.str[1:],
        "bdata": base64.b64encode(a.tobytes()).decode(),
        "shape": ",".join(map(str, a.shape)),
    }


def _figure(data: list, layout: dict, frames: list | None = None) -> go.Figure:
    """A Figure from plain dicts, unvalidated: validating 50 frames of 2000 points costs ~0.1 s."""
    return go.Figure({"data": data, "layout": layout, "frames": frames or []}, _validate=False)


def _figure_of(spec):
    """The go.Figure twin of a `*_spec` builder: same arguments, the spec as a Figure."""

    def figure(*args, **kwargs) -> go.Figure:
        return _figure(**spec(*args, **kwargs))

    figure.__name__ = figure.__qualname__ = spec.__name__.replace("_spec", "_figure")
    figure.__doc__ = f"{spec.__name__}(...) as a go.Figure (same arguments)."
    return figure


def _axis(lim: float | None = None, **extra) -> dict:
    axis = dict(
        showgrid=False,
        zeroline=False,
        mirror=True,
        showline=True,
        linecolor="#444",
        linewidth=1,
        ticks="outside",
        tickcolor="#444",
    )
    if lim is not None:
        axis.update(range=[-lim, lim], autorange=False, constrain="domain")
    return {**axis, **extra}


def _layout(lim: float, title: str, height: int = 470, **extra) -> dict:
    """Square axes fixed to [−lim, lim]², white background, thin frame."""
    return dict(
        template="simple_white",
        font=FONT,
        height=height,
        plot_bgcolor="white",
        title=dict(text=title, x=0.02, font=dict(size=15)),
        margin=dict(l=45, r=15, t=55, b=40),
        xaxis=_axis(lim),
        yaxis=_axis(lim, scaleanchor="x", scaleratio=1),
        legend=dict(orientation="h", x=0, y=-0.08, yanchor="top", font=dict(size=12)),
        **extra,
    )


def _peak_one(log_p: np.ndarray) -> np.ndarray:
    """exp(log p) scaled to a maximum of 1 over its finite cells; non-finite cells are 0."""
    finite = np.isfinite(log_p)
    top = np.max(log_p[finite]) if finite.any() else 0.0
    return np.where(finite, np.exp(np.where(finite, log_p, top) - top), 0.0)


def _rgba(color: str) -> np.ndarray:
    """'rgba(r,g,b,a)' as floats (r, g, b in 0..255, a in 0..1)."""
    return np.array([float(c) for c in color[color.index("(") + 1 : -1].split(",")])


def _raster(u: np.ndarray, layers: list[tuple[np.ndarray, list]]) -> dict:
    """Layers (z, colorscale) of z ∈ [0, 1] on the grid u × u (NaN: transparent), each coloured
    by its two-stop colorscale as a Plotly heatmap would be and stacked in order (alpha "over"),
    as one PNG layout image under the traces. (One image: Plotly keys layout images by position,
    so two at the same place would draw as one.)

    The browser scales the image with bilinear filtering, like zsmooth="best", but draws it
    once: a heatmap is re-interpolated into a canvas on every redraw (~15 ms each per update
    in software-rendered Chromium). Pixel i is centred on u[i], like a heatmap brick."""
    rgb, alpha = np.zeros((*layers[0][0].shape, 3)), np.zeros((*layers[0][0].shape, 1))
    for z, colorscale in layers:
        lo, hi = (_rgba(c) for _, c in colorscale)
        t = np.nan_to_num(np.clip(z, 0.0, 1.0))[..., None]
        top = lo + (hi - lo) * t
        a = np.where(np.isnan(z)[..., None], 0.0, top[..., 3:])
        out = a + alpha * (1 - a)
        rgb = (top[..., :3] * a + rgb * alpha * (1 - a)) / np.maximum(out, 1e-12)
        alpha = out
    rgba = np.concatenate([rgb, 255 * alpha], -1)[::-1]  # image rows run from the top (high y)
    buf = io.BytesIO()
    Image.fromarray(np.round(rgba).astype(np.uint8), "RGBA").save(buf, "PNG")
    half = (u[1] - u[0]) / 2
    return dict(
        source="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
        xref="x",
        yref="y",
        x=float(u[0] - half),
        y=float(u[-1] + half),
        sizex=float(u[-1] - u[0] + 2 * half),
        sizey=float(u[-1] - u[0] + 2 * half),
        sizing="stretch",
        layer="below",
    )


def _density_lines(u, log_p):
    """Grey isolines of p_t(x) at 5 %–85 % of its peak (the caption explains them: no legend)."""
    return _isolines(
        u,
        _peak_one(log_p),
        [0.05, 0.25, 0.45, 0.65, 0.85],
        line=dict(width=0.7, color="rgba(70,70,70,0.6)"),
        name="p_t(x)",
        showlegend=False,
    )


def _isolines(u: np.ndarray, z: np.ndarray, levels, **kw) -> dict:
    """Contour lines of z on the grid u × u at `levels`, computed here (contourpy, as matplotlib
    does) and drawn as one NaN-separated SVG line: a Plotly contour trace is re-traced in the
    browser on every update."""
    gen = contourpy.contour_generator(u, u, np.ma.masked_invalid(z))
    nan = np.full((1, 2), np.nan)
    parts = [part for level in levels for line in gen.lines(level) for part in (line, nan)]
    xy = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 2), np.float32)
    return dict(
        type="scatter", x=_arr(xy[:, 0]), y=_arr(xy[:, 1]), mode="lines", hoverinfo="skip", **kw
    )


def _edge(u, p_neg, width: float = 1.0) -> dict:
    """The negative region's edge p(n | x) = ½ as a dotted red line."""
    return _isolines(
        u,
        p_neg,
        [0.5],
        line=dict(width=width, color="rgba(203,24,29,0.7)", dash="dot"),
        name="p(n | x) = ½",
        showlegend=False,
    )


def background(u: np.ndarray, log_p: np.ndarray, p_neg: np.ndarray | None) -> dict:
    """Density p(x) shaded grey and the negative region p(n|x) > ½ shaded red (one layout
    image), the region's edge dotted (a trace): {"images": [...], "traces": [...]}."""
    layers = [(_peak_one(log_p), DENSITY_SCALE)]
    traces = []
    if p_neg is not None:
        layers.append((np.where(p_neg > 0.5, 1.0, np.nan), [[0, NEG_SHADE], [1, NEG_SHADE]]))
        traces.append(_edge(u, p_neg))
    return dict(images=[_raster(u, layers)], traces=traces)


def _legend(labels: np.ndarray) -> list:
    """Empty traces that show each outcome's colour and count in the legend."""
    return [
        dict(
            type="scattergl",
            x=[None],
            y=[None],
            mode="markers",
            name=f"{name} {np.sum(labels == name)}",
            marker=dict(color=color, size=8),
        )
        for name, color in OUTCOME_COLORS.items()
    ]


def _codes(labels: np.ndarray) -> np.ndarray:
    """Outcome labels (any shape) as codes 0, 1, 2: their index in OUTCOME_COLORS."""
    codes = np.zeros(np.shape(labels), np.uint8)
    for i, name in enumerate(OUTCOME_COLORS):
        codes[labels == name] = i
    return codes


def _point_colors(labels: np.ndarray) -> dict:
    """Marker colour of each outcome label as codes 0, 1, 2 on a discrete scale (no per-point strings)."""
    n = len(OUTCOME_COLORS)
    scale = [[i / (n - 1), c] for i, c in enumerate(OUTCOME_COLORS.values())]
    return dict(color=_arr(_codes(labels), np.uint8), colorscale=scale, cmin=0, cmax=n - 1)


POINT_SIZE, POINT_OPACITY = 3.5, 0.85  # final samples' markers (the scrub draws them alike)


def _points(xy: np.ndarray, labels: np.ndarray) -> dict:
    return dict(
        type="scattergl",
        x=_arr(xy[:, 0]),
        y=_arr(xy[:, 1]),
        mode="markers",
        showlegend=False,
        marker=dict(**_point_colors(labels), size=POINT_SIZE, opacity=POINT_OPACITY),
        hoverinfo="skip",
    )


def _trails(frames: np.ndarray, count: int) -> dict:
    """Faint paths of `count` evenly chosen samples, NaN-separated in one trace."""
    idx = np.linspace(0, frames.shape[1] - 1, min(count, frames.shape[1])).astype(int)
    paths = np.concatenate([frames[:, idx], np.full((1, len(idx), 2), np.nan, np.float32)])
    xy = paths.transpose(1, 0, 2).reshape(-1, 2)
    return dict(
        type="scattergl",
        x=_arr(xy[:, 0]),
        y=_arr(xy[:, 1]),
        mode="lines",
        hoverinfo="skip",
        showlegend=False,
        line=dict(width=0.6, color="rgba(60,60,60,0.22)"),
    )


def trajectory_spec(
    bg: dict,
    frames: np.ndarray,
    ts: np.ndarray,
    labels: np.ndarray,
    lim: float,
    title: str,
    trails: int = 0,
    frame_ms: int = 30,
) -> dict:
    """Animated samples (F, N, 2) over `bg` (`background`), coloured by final outcome, play/pause
    and a scrubber, as a plain figure dict (data, layout, frames): the app serializes it without
    building ~100 plotly Frame objects (~15 ms at 2000 points × 50 steps); trajectory_figure
    wraps it.

    The figure opens on the final frame; frames update only the points trace (x, y as float32).
    ts (F,) labels the frames by timestep (−1 = the final x̂0).
    """
    extra = [_trails(frames, trails)] if trails else []
    data = [*bg["traces"], *extra, _points(frames[-1], labels), *_legend(labels)]
    k = len(bg["traces"]) + len(extra)
    frame_list = [
        dict(
            data=[dict(type="scattergl", x=_arr(f[:, 0]), y=_arr(f[:, 1]))], traces=[k], name=str(i)
        )
        for i, f in enumerate(frames)
    ]
    anim = dict(
        frame=dict(duration=frame_ms, redraw=False),
        transition=dict(duration=0),
        mode="immediate",
        fromcurrent=True,
    )
    still = dict(
        frame=dict(duration=0, redraw=False), transition=dict(duration=0), mode="immediate"
    )
    buttons = [
        dict(label="▶ play", method="animate", args=[None, anim]),
        dict(label="❚❚ pause", method="animate", args=[[None], still]),
    ]
    layout = _layout(lim, title, height=580, images=bg["images"])
    layout.update(
        margin=dict(l=45, r=15, t=80, b=60),
        legend=dict(
            y=1.0,
            x=1.0,
            xanchor="right",
            yanchor="bottom",
            orientation="h",
            bgcolor="rgba(0,0,0,0)",
            font=dict(size=12),
        ),
        updatemenus=[
            dict(
                type="buttons",
                direction="left",
                x=0.0,
                y=-0.07,
                xanchor="left",
                yanchor="top",
                pad=dict(t=0, r=4),
                showactive=False,
                font=dict(size=11),
                buttons=buttons,
            )
        ],
        sliders=[
            dict(
                active=len(frames) - 1,
                x=0.2,
                len=0.8,
                y=-0.02,
                yanchor="top",
                pad=dict(t=30, b=0),
                font=dict(size=10),
                currentvalue=dict(prefix="t = ", xanchor="right", font=dict(size=12)),
                steps=[
                    dict(
                        label="x₀" if t < 0 else str(int(t)),
                        method="animate",
                        args=[[str(i)], still],
                    )
                    for i, t in enumerate(ts)
                ],
            )
        ],
    )
    return dict(data=data, layout=layout, frames=frame_list)


def _quiver(p: np.ndarray, v: np.ndarray, scale: float, cap: float) -> str:
    """Arrows at points p along vectors v as one SVG path in data coordinates: per arrow a shaft
    (p to the tip) and a head (two strokes meeting at the tip)."""
    v = np.nan_to_num(v.astype(np.float64)) * scale
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    v = v * np.minimum(1.0, cap / np.maximum(norm, 1e-12))  # long arrows clipped, direction kept
    tip = p + v
    head = 0.3 * v
    rot = lambda a: np.stack(
        [
            np.cos(a) * head[:, 0] - np.sin(a) * head[:, 1],
            np.sin(a) * head[:, 0] + np.cos(a) * head[:, 1],
        ],
        1,
    )
    pts = np.stack([p, tip, tip - rot(0.45), tip, tip - rot(-0.45)], 1)  # (n, 5, 2)
    return ("M%.3f %.3fL%.3f %.3fM%.3f %.3fL%.3f %.3fL%.3f %.3f" * len(pts)) % tuple(pts.ravel())


def field_spec(
    u: np.ndarray,
    heat: np.ndarray,
    heat_key: str,
    zmax: float | None,
    arrows: dict,
    spacing: float,
    lim: float,
    title: str,
    log_p: np.ndarray | None = None,
    p_neg: np.ndarray | None = None,
    probe: dict | None = None,
) -> dict:
    """Arrows of each field in `arrows` (name -> (points, vectors)) over a heatmap of `heat_key`;
    with `probe` (probe_meta), a click or drag on the plot places the probe (ui/chart.py).

    Arrow lengths share one scale (the 90th-percentile arrow spans 0.9 grid cells), capped at 1.6
    cells, so the fields of one figure compare by length. Each field is one SVG path shape, its
    legend entry an empty line trace of its legend group. Drawn as a scattergl trace, a field
    took ~0.1 s of CPU per update in software WebGL, as an SVG scatter trace ~70 ms of Plotly's
    line processing; as a path shape it paints in ~25 ms (benchmarks/README.md).
    """
    colorbar = dict(
        title=dict(text=HEAT_LABELS.get(heat_key, heat_key), side="right"),
        thickness=12,
        len=0.8,
        outlinewidth=0,
    )
    data = [
        dict(
            type="heatmap",
            x=_arr(u),
            y=_arr(u),
            z=_arr(np.nan_to_num(heat)),
            colorscale=HEAT_SCALE,
            zmin=None if zmax is None else 0.0,
            zmax=zmax,
            colorbar=colorbar,
            hovertemplate="%{z:.3g}<extra></extra>",
        )
    ]
    if log_p is not None:
        data.append(_density_lines(u, log_p))
    if p_neg is not None:
        data.append(_edge(u, p_neg, 1.2))
    norms = [
        np.percentile(np.linalg.norm(np.nan_to_num(v), axis=1), 90) for _, v in arrows.values()
    ]
    scale = 0.9 * spacing / max(max(norms, default=1.0), 1e-9)
    shapes = []
    for name, (p, v) in arrows.items():
        line = dict(width=1.1, color=FIELD_COLORS.get(name, "#000"))
        label = FIELD_LABELS.get(name, name)
        shapes.append(
            dict(
                type="path",
                path=_quiver(p, v, scale, 1.6 * spacing),
                xref="x",
                yref="y",
                layer="above",
                line=line,
                legendgroup=label,
            )
        )
        # the legend entry (a line, where a shape would show a hexagon); a click on it hides the
        # shape of its legend group
        data.append(
            dict(
                type="scatter",
                x=[None],
                y=[None],
                mode="lines",
                line=line,
                name=label,
                legendgroup=label,
            )
        )
    layout = _layout(lim, title, height=500, shapes=shapes)
    if probe is not None:  # a drag places the probe: no zoom box on this plot
        layout.update(meta=dict(probe=probe), dragmode=False)
    return dict(data=data, layout=layout)


# The probe's readout (issue 22): the rule weights and the branch predictions of a column at one
# point, with p(c | x_t) of every concept. Keys of fields.field.
PROBE_WEIGHTS = {"lam_neg": "λ⁻", "scale_neg": "γλ⁻", "lam_pos": "λ⁺", "scale_pos": "γλ⁺"}
PROBE_VECTORS = {
    "eps_uncond": "ε_∅",
    "eps_pos": "ε_p",
    "eps_neg": "ε_n",
    "eps_weak": "ε_weak",
    "guided": "ε̂",
}


def probe_rows(values: dict, concepts) -> list[tuple[str, str, np.ndarray]]:
    """(key, label, (M,) or (M, 2) array) of the readout, from fields.field's output on M points:
    p(c | x_t) of every concept, the rule's weights, then the predictions (the probe's arrows)."""
    rows = [(f"p.{c}", f"p({c} | x_t)", values["posteriors"][:, i]) for i, c in enumerate(concepts)]
    rows += [(k, label, values[k]) for k, label in PROBE_WEIGHTS.items() if k in values]
    return rows + [(k, label, values[k]) for k, label in PROBE_VECTORS.items() if k in values]


def probe_meta(
    u: np.ndarray, grid: dict, concepts, t: int, at: dict | None = None, point=None
) -> dict:
    """layout.meta.probe of a field figure: every readout row on the grid u × u (row-major, y
    slowest; the browser interpolates it while the probe is dragged) and, once the probe is placed
    at `point`, the exact values there (`at`: fields.field on that one point)."""
    exact = {k: np.asarray(v)[0] for k, _, v in probe_rows(at, concepts)} if at else None
    rows = [
        dict(
            key=k,
            label=label,
            dim=int(np.ndim(v)),
            color=FIELD_COLORS.get(k.removeprefix("eps_"), "#000"),
            grid=_arr(np.nan_to_num(v).ravel()),
            at=None if exact is None else np.round(np.nan_to_num(exact[k]), 6).tolist(),
        )
        for k, label, v in probe_rows(grid, concepts)
    ]
    where = None if point is None else [float(point[0]), float(point[1])]
    return dict(u=_arr(u), rows=rows, t=int(t), point=where)


_WEIGHT_PANELS = (  # (key prefix, y axis, domain, title): weights, scales, the push they cause
    ("", "y", [0.7, 1.0], "weight λ, p"),
    ("scale", "y2", [0.36, 0.64], "scale γλ"),
    ("push", "y3", [0.0, 0.3], "push on x_t"),
)


def _panel(key: str) -> dict:
    """The axes of a weights-view series: its prefix's panel (the first one by default)."""
    n = next((i for i, (p, *_) in enumerate(_WEIGHT_PANELS) if p and key.startswith(p)), 0)
    return dict(xaxis=f"x{n + 1}" if n else "x", yaxis=_WEIGHT_PANELS[n][1])


def weights_spec(ts: np.ndarray, stats: dict, title: str) -> dict:
    """Per-step weights: mean line and 10–90 % band over samples; λ's (and posteriors) on top,
    γλ's in the middle, the negative term's push on x_t below (MATH §3.1)."""
    data = []
    for key, (mean, lo, hi) in stats.items():
        axes = _panel(key)
        color = WEIGHT_COLORS.get(key, "#333")
        data.append(
            dict(
                type="scatter",
                x=_arr(np.concatenate([ts, ts[::-1]])),
                y=_arr(np.concatenate([hi, lo[::-1]])),
                fill="toself",
                hoverinfo="skip",
                fillcolor=_alpha(color, 0.18),
                line=dict(width=0),
                showlegend=False,
                **axes,
            )
        )
        data.append(
            dict(
                type="scatter",
                x=_arr(ts),
                y=_arr(mean),
                mode="lines",
                **axes,
                name=WEIGHT_LABELS.get(key, key),
                line=dict(color=color, width=2, dash="dot" if key in EXACT_KEYS else "solid"),
            )
        )
    x = _axis(autorange="reversed")
    last = len(_WEIGHT_PANELS)
    layout = dict(
        template="simple_white",
        font=FONT,
        height=520,
        title=dict(text=title, x=0.02),
        margin=dict(l=55, r=15, t=60, b=45),
        legend=dict(orientation="h", x=0, y=-0.17, yanchor="top"),
    )
    for n, (_, y, domain, text) in enumerate(_WEIGHT_PANELS, 1):
        xname, yname = ("xaxis" if n == 1 else f"xaxis{n}"), ("yaxis" if n == 1 else f"yaxis{n}")
        layout[xname] = {**x, "anchor": y, "showticklabels": n == last, "matches": f"x{last}"}
        layout[yname] = _axis(domain=domain, rangemode="tozero", title=dict(text=text))
    layout[f"xaxis{last}"].pop("matches")
    layout[f"xaxis{last}"]["title"] = dict(text="timestep t  (sampling runs left → right)")
    if not stats:
        layout["annotations"] = [
            dict(
                text="this rule has no negative or positive weight",
                showarrow=False,
                x=0.5,
                y=0.5,
                xref="paper",
                yref="paper",
            )
        ]
    return dict(data=data, layout=layout)


ERROR_SCALE = [[0, "#f7fcf5"], [0.1, "#c7e9c0"], [0.3, "#fdae6b"], [1, "#7f2704"]]


def error_map_spec(
    u: np.ndarray, err: np.ndarray, samples: np.ndarray, lim: float, title: str, log_p=None
) -> dict:
    """The net's relative ε error (res × res, capped at 1 = 100 %) over the plane, the run's
    samples at that t drawn over it (black dots) and the noisy density's isolines."""
    data = [
        dict(
            type="heatmap",
            x=_arr(u),
            y=_arr(u),
            z=_arr(np.clip(np.nan_to_num(err, nan=1.0), 0.0, 1.0)),
            colorscale=ERROR_SCALE,
            zmin=0.0,
            zmax=1.0,
            colorbar=dict(
                title=dict(text="‖ε_net − ε*‖ / ‖ε*‖", side="right"),
                thickness=12,
                len=0.8,
                outlinewidth=0,
                tickformat=".0%",
            ),
            hovertemplate="error %{z:.0%}<extra></extra>",
        )
    ]
    if log_p is not None:
        data.append(_density_lines(u, log_p))
    xy = np.clip(np.nan_to_num(np.asarray(samples, np.float32)), -1e4, 1e4)
    data.append(
        dict(
            type="scattergl",
            x=_arr(xy[:, 0]),
            y=_arr(xy[:, 1]),
            mode="markers",
            name="samples at t",
            marker=dict(color="rgba(20,20,20,0.7)", size=3),
            hoverinfo="skip",
        )
    )
    return dict(data=data, layout=_layout(lim, title))


def _alpha(hex_color: str, a: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{a})"


def outcome_spec(
    u: np.ndarray,
    log_p_target: np.ndarray,
    x0: np.ndarray,
    labels: np.ndarray,
    lim: float,
    title: str,
    scrub: list[dict] | None = None,
) -> dict:
    """Final samples, coloured by outcome, over the ideal target density p(x | p, ¬n); with
    `scrub` (scrub_meta of each knob), a slider per knob under the plot moves them (ui/chart.py)."""
    target = _raster(
        u, [(_peak_one(log_p_target), [[0, "rgba(255,255,255,0)"], [1, "rgba(43,140,190,0.5)"]])]
    )
    layout = _layout(lim, title, images=[target])
    if scrub:
        layout["meta"] = dict(scrub=scrub)
    return dict(data=[_points(x0, labels), *_legend(labels)], layout=layout)


def scrub_meta(knob: str, label: str, values, current: float, x0: np.ndarray, labels) -> dict:
    """One knob's scrub (issue 22), an entry of an outcome figure's layout.meta.scrub: the final
    samples (G, N, 2) and their outcome codes (G, N) at each grid value; while the knob is
    dragged the browser interpolates the samples between neighbouring values, and the legend
    counts those of the nearest grid value (`names`: the legend's name of each code); on
    release the exact run at the chosen value replaces them."""
    return dict(
        knob=knob,
        label=label,
        values=[float(v) for v in values],
        current=float(current),
        xy=_arr(np.asarray(x0, np.float32).ravel()),
        codes=_arr(_codes(np.asarray(labels)).ravel(), np.uint8),
        colors=list(OUTCOME_COLORS.values()),  # of codes 0, 1, 2, as _points draws them
        names=list(OUTCOME_COLORS),  # of codes 0, 1, 2, as _legend names them (with the count)
        size=POINT_SIZE,
        opacity=POINT_OPACITY,
    )


trajectory_figure = _figure_of(trajectory_spec)
field_figure = _figure_of(field_spec)
weights_figure = _figure_of(weights_spec)
error_map_figure = _figure_of(error_map_spec)
outcome_figure = _figure_of(outcome_spec)


# ------------------------------------------------------------------------------------ metrics table
METRICS = (  # key, label, format, better: -1 lower, +1 higher, 0 no ranking
    ("leakage_hard", "leakage (p(n∣x) > ½)", "{:.1%}", -1),
    ("leakage", "leakage, soft mean p(n∣x)", "{:.3f}", -1),
    ("alignment", "positive alignment p(p∣x)", "{:.3f}", 1),
    ("off_support", "off-support rate", "{:.1%}", -1),
    ("nll", "NLL −log p(x)", "{:.2f}", -1),
    ("energy", "energy distance to target", "{:.3f}", -1),
    ("diverged", "diverged samples", "{:d}", -1),
    ("net_error_on_path", "net's relative ε error on the path", "{:.3f}", -1),
)


def metrics_table(names: list[str], values: list[dict | None]) -> str:
    """Markdown table, one column per scene, the better value in bold with ✓ (NaN rows dropped)."""
    head = "| metric | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n"
    rows = []
    for key, label, fmt, better in METRICS:
        vals = [None if v is None else v.get(key) for v in values]
        nums = [float(v) for v in vals if v is not None and np.isfinite(v)]
        if not nums:
            continue
        best = (min(nums) if better < 0 else max(nums)) if len(nums) > 1 and better else None
        cells = []
        for v in vals:
            if v is None or not np.isfinite(v):
                cells.append("–")
                continue
            text = fmt.format(int(v) if fmt == "{:d}" else v)
            win = best is not None and float(v) == best and len(set(nums)) > 1
            cells.append(f"**{text}** ✓" if win else text)
        if key == "energy":
            ref = next((v for v in values if v), {})  # exact-vs-exact: mean ± sd over draws
            base, sd = ref.get("energy_baseline"), ref.get("energy_baseline_sd")
            if base is not None and np.isfinite(base):
                label += f" (baseline {base:.3f}" + (f" ± {sd:.3f})" if sd is not None else ")")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows)


SHORT = {  # METRICS' labels in a projector's one line ({n}, {p}: the concepts' names)
    "leakage_hard": "in {n}",
    "leakage": "p({n}∣x)",
    "alignment": "p({p}∣x)",
    "off_support": "off data",
    "nll": "NLL",
    "energy": "energy",
    "diverged": "diverged",
    "net_error_on_path": "net error",
}


def metrics_line(values: dict, keys: list[str], negative=None, positive=None) -> str:
    """One short line of a column's metrics, e.g. 'off data 99.7% · in C 0.3%' (SHORT labels with
    the concepts' names, METRICS' formats; absent or NaN values skipped): presentation mode's."""
    formats = {key: fmt for key, _, fmt, _ in METRICS}
    parts = []
    for key in keys:
        v = values.get(key)
        if key in formats and v is not None and np.isfinite(v):
            fmt = formats[key]
            label = SHORT[key].format(n=negative or "n", p=positive or "p")
            parts.append(f"{label} {fmt.format(int(v) if fmt == '{:d}' else v)}")
    return " · ".join(parts)


# ------------------------------------------------------------------------------------ sweep curves
SIDE_COLORS = {"left": "#d94801", "right": "#2171b5"}
SWEEP_AXES = {
    "off_support": "off-support rate",
    "energy": "energy distance to the ideal target",
    "leakage_hard": "leakage (p(n∣x) > ½)",
    "leakage": "leakage, soft mean p(n∣x)",
}


def sweep_figure(
    rows: list[dict],
    x: str = "off_support",
    y: str = "leakage_hard",
    current: dict | None = None,
    height: int = 470,
) -> go.Figure:
    """Trade-off curves: one line per (column, rule, τ) through its γ sweep; rows carry a 'side' key.

    Every point's customdata is [side, γ, τ] so that a click can open that setting; `current`
    (side -> (x, y)) marks each column's present setting with a ring.
    """
    curves: dict[tuple, list[dict]] = {}
    for r in rows:
        tau = r["tau"]
        curves.setdefault((r["side"], r["method"], None if tau != tau else tau), []).append(r)
    data, dashes = [], ["solid", "dot", "dash", "dashdot", "longdash"]
    for i, ((side, method, tau), rs) in enumerate(
        sorted(curves.items(), key=lambda kv: str(kv[0]))
    ):
        rs = sorted(rs, key=lambda r: r["gamma"])
        name = f"{side}: {method}" + ("" if tau is None else f" τ={tau:g}")
        taus = [r["tau"] if r["tau"] == r["tau"] else None for r in rs]
        data.append(
            dict(
                type="scatter",
                mode="lines+markers",
                name=name,
                x=[float(r[x]) for r in rs],
                y=[float(r[y]) for r in rs],
                customdata=[[side, r["gamma"], t] for r, t in zip(rs, taus)],
                marker=dict(size=8, color=SIDE_COLORS.get(side, "#333")),
                line=dict(
                    width=1.6,
                    color=SIDE_COLORS.get(side, "#333"),
                    dash=dashes[sum(1 for k in list(curves)[:i] if k[0] == side) % 5],
                ),
                hovertemplate="γ = %{customdata[1]:.3g}<br>"
                + f"{SWEEP_AXES.get(x, x)} = "
                + "%{x:.3g}<br>"
                + f"{SWEEP_AXES.get(y, y)} = "
                + "%{y:.3g}<extra>"
                + name
                + "</extra>",
            )
        )
    for side, (cx, cy) in (current or {}).items():
        data.append(
            dict(
                type="scatter",
                mode="markers",
                x=[cx],
                y=[cy],
                name=f"{side}: now",
                hoverinfo="skip",
                marker=dict(
                    size=18,
                    symbol="circle-open",
                    line=dict(width=2.5),
                    color=SIDE_COLORS.get(side, "#333"),
                ),
            )
        )
    layout = dict(
        template="simple_white",
        font=FONT,
        height=height,
        clickmode="event+select",
        title=dict(text="γ sweep: removal against quality (click a point to open it)", x=0.02),
        margin=dict(l=60, r=15, t=55, b=50),
        legend=dict(orientation="v", x=1.0, xanchor="right", y=1.0),
        xaxis=_axis(title=dict(text=SWEEP_AXES.get(x, x)), rangemode="tozero"),
        yaxis=_axis(title=dict(text=SWEEP_AXES.get(y, y)), rangemode="tozero"),
    )
    return _figure(data, layout)


# ------------------------------------------------------------------------------- presentation mode
FIT_BELOW = 96  # px under a fitted figure: its animation bar (~40) and the metrics line


def presentation(fig: go.Figure, scale: float = 1.45) -> go.Figure:
    """The figure for a projector: fonts and markers scaled up, taller, and shortened to the
    screen in the browser (layout.meta.fit: the pixels to keep below it for the animation bar and
    the metrics line; ui/chart.py)."""
    layout = fig.layout
    fig.update_layout(
        font=dict(size=round(FONT["size"] * scale)),
        height=round((layout.height or 470) * 1.15),
        meta=dict(fit=FIT_BELOW),
    )
    if layout.title and layout.title.font and layout.title.font.size:
        fig.update_layout(title_font_size=round(layout.title.font.size * scale))
    for trace in fig.data:
        marker = getattr(trace, "marker", None)
        if marker is not None and isinstance(marker.size, (int, float)):
            trace.marker.size = marker.size * 1.8
    for frame in fig.frames or ():
        for trace in frame.data:
            if getattr(trace, "marker", None) is not None and isinstance(
                trace.marker.size, (int, float)
            ):
                trace.marker.size *= 1.8
    return fig
