"""Widget state <-> scenes: seeding the sidebar from a link, a scene file or a curated scene, and
writing the URL query back. Streamlit only here; the encoding itself is toydiff.scenes (pure)."""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np
import streamlit as st

from toydiff import guidance, scenes
from toydiff.scene import Scene

CUSTOM = "custom mixture"  # the preset selectbox's entry for an inline (edited or uploaded) mixture
COMMON = (
    "preset",
    "mixture",
    "rotate",
    "positive",
    "negative",
    "score",
    "net",
    "delta",
    "weak",
    "eta",
    "steps",
    "n",
    "seed",
    "schedule",
    "solver",
    "t",
)  # settings the two columns share (one set of sidebar widgets)


def mixture_id(mixture_json: str) -> str:
    """Short stable id of an inline mixture (widget keys of its concept selectors)."""
    return hashlib.sha256(mixture_json.encode()).hexdigest()[:10]


def data_key() -> str:
    """Suffix of the concept selectors' keys: the preset's name, or the inline mixture's id."""
    preset = st.session_state.get("preset", "three_blobs")
    if preset == CUSTOM and "custom_mixture" in st.session_state:
        return f"custom.{mixture_id(st.session_state['custom_mixture'])}"
    return preset


def seed_widgets(pair: dict[str, Scene], heat: str | None = None) -> list[str]:
    """Sets every sidebar widget so that the page shows `pair`; returns warnings (settings the
    shared widgets cannot hold differently per column)."""
    ss, left = st.session_state, pair["left"]
    warnings = [
        f"right column: '{k}' differs from the left column's; both columns use the left's "
        f"({getattr(left, k)!r}) because the sidebar shares it"
        for k in COMMON
        if getattr(pair["right"], k) != getattr(left, k)
    ]
    if left.mixture is not None:
        ss["custom_mixture"] = json.dumps(left.mixture, sort_keys=True)
        ss["preset"] = CUSTOM
    else:
        ss["preset"] = left.preset
    key = data_key()
    ss[f"positive.{key}"], ss[f"negative.{key}"] = left.positive, left.negative
    ss["score"] = (
        left.score
        if left.score != "learned" or not ss.get("score", "").startswith("net:")
        else ss["score"]
    )
    for k in ("delta", "eta", "rotate"):
        ss[k] = float(getattr(left, k))
    for k in ("steps", "n", "seed"):
        ss[k] = int(getattr(left, k))
    ss["schedule"], ss["weak"] = left.schedule, left.weak or "default"
    ss["solver"], ss["net"] = left.solver, left.net
    ss["field_t"] = int(round(left.t))
    if heat:
        ss["field_heat"] = heat
    for side, scene in pair.items():
        ss[f"{side}.method"] = scene.method
        for name, param in guidance.rule(scene.method).all_params.items():
            value = getattr(scene, name)
            ss[f"{side}.{scene.method}.{name}"] = value if param.choices else float(value)
        ss[f"{side}.{scene.method}.interval"] = (int(round(scene.t_lo)), int(round(scene.t_hi)))
        ss[f"{side}.weight_schedule"] = scene.weight_schedule
        ss[f"{side}.g_late"], ss[f"{side}.t_switch"] = float(scene.g_late), int(scene.t_switch)
    return warnings


def load_url_once() -> None:
    """On a session's first run: the link's scenes into the widgets, its problems into 'url_warnings'."""
    ss = st.session_state
    if ss.get("_url_loaded"):
        return
    ss["_url_loaded"] = True
    try:
        params = {k: st.query_params.get_all(k) for k in st.query_params}
    except Exception as e:  # noqa: BLE001 - an unreadable query is reported, never raised
        params, ss["url_warnings"] = {}, [f"query: unreadable ({type(e).__name__})"]
    decoded = scenes.decode_query(params)
    ss["url_warnings"] = [*ss.get("url_warnings", []), *decoded.warnings]
    ss["present"] = decoded.present
    if decoded.scenes is not None:
        heat = scenes.curated(decoded.curated).heat if decoded.curated else None
        ss["url_warnings"] += seed_widgets(decoded.scenes, heat)
        ss["lecture"] = decoded.curated or "—"


def select_curated(name: str) -> None:
    """Callback: open a curated scene (sidebar selector, presentation buttons)."""
    ss = st.session_state
    ss["lecture"] = name
    if name in scenes.NAMES:
        c = scenes.curated(name)
        ss["url_warnings"] = seed_widgets(curated_pairs()[name], c.heat)


def step_curated(delta: int) -> None:
    """Callback: the previous/next curated scene (wrapping around)."""
    names = scenes.NAMES
    current = st.session_state.get("lecture", "—")
    i = names.index(current) if current in names else -1 if delta > 0 else 0
    select_curated(names[(i + delta) % len(names)])


def apply_pending() -> None:
    """Applies changes requested below the sidebar (sweep clicks, uploads, the mixture editor) before
    any widget exists in this run."""
    ss = st.session_state
    pending = ss.pop("_pending", None)
    if not pending:
        return
    if "custom_mixture" in pending:
        ss["custom_mixture"] = pending["custom_mixture"]
        ss["preset"] = CUSTOM
    if "pair" in pending:
        ss["url_warnings"] = seed_widgets(pending["pair"])
    for key, value in pending.get("widgets", {}).items():
        ss[key] = value


@functools.cache
def curated_pairs() -> dict[str, dict[str, Scene]]:
    """Every curated scene's pair of Scenes, built (and validated) once per process."""
    return {c.name: c.scenes() for c in scenes.CURATED}


def current_curated(pair: dict) -> str | None:
    """Name of the curated scene the page shows unchanged, if any."""
    return next((name for name, p in curated_pairs().items() if p == pair), None)


def write_url(pair: dict, present: bool) -> dict[str, str]:
    """Writes the scenes into the URL query (?scene=<name> for an unchanged curated scene)."""
    name = current_curated(pair)
    query = {"scene": name} if name else scenes.encode_query(pair)
    if present:
        query["present"] = "1"
    if st.query_params.to_dict() != query:
        st.query_params.from_dict(query)
    return query


def widget_kwargs(key: str, options=None, **default) -> dict:
    """The widget's default (one of value=, index=, default=): `default` while the key has no
    state, then its current state (index=: its position in `options`). A widget that the browser
    mounts again, as a column's popover opened after a fragment rerun, starts from this default:
    without it, it showed the first option and a key press sent that (γ 0, rule "none")."""
    if key not in st.session_state:
        return default
    ((name, _),) = default.items()
    current = st.session_state[key]
    if name != "index":
        return {name: current}
    return {"index": list(options).index(current)} if current in (options or ()) else {}


def log_values(lo: float, hi: float, default: float) -> list[float]:
    """Round numbers 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k in [lo, hi] (0 first if lo = 0)."""
    start = lo if lo > 0 else hi / 200
    decades = range(int(np.floor(np.log10(start))), int(np.ceil(np.log10(hi))) + 1)
    nice = [
        float(f"{m * 10.0**k:.6g}") for k in decades for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)
    ]
    values = (
        [v for v in nice if start <= v <= hi]
        + [float(default), float(hi)]
        + ([0.0] if lo == 0 else [])
    )
    return sorted(set(values))


def scrub_values(param, count: int = 13) -> tuple[float, ...]:
    """The γ (τ) scrub's grid for a rule parameter (guidance.Param): `count` of the slider's round
    values (log_values), evenly spread, the range's ends kept; one count for every knob, so that
    γ's and τ's sweeps share one compiled sampler. It does not depend on the current value: a γ
    release does not resample γ's grid."""
    values = log_values(param.lo, param.hi, param.default)
    index = np.unique(np.linspace(0, len(values) - 1, min(count, len(values))).round())
    return tuple(values[int(i)] for i in index)
