"""toydiff app: two guidance rules side by side (nCFG vs CCFG by default) on the same noise seeds.

Run: `streamlit run app.py`. Widgets -> two Scenes -> cached sampler runs and fields -> Plotly views.
No math here: numbers come from `toydiff`, figures from `toydiff.viz.plots`.
"""

from __future__ import annotations

import streamlit as st

from ui import chart

# First, before the heavy imports below (JAX alone takes ~1 s): the browser starts loading
# plotly.js (1.5 MB, ~0.2 s to evaluate in software-rendered Chromium) while this script imports,
# samples and builds the first figures.
chart.preload()

import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402

import jax  # noqa: E402

# Before any JAX operation: reuse compiled samplers across app restarts (≈ 16 ms per load).
# TOYDIFF_JAX_CACHE overrides the folder (the latency benchmark measures a cold start with it);
# an empty value switches the cache off (the test process, which runs the app in-process).
_CACHE = os.environ.get(
    "TOYDIFF_JAX_CACHE", str(pathlib.Path(__file__).resolve().parent / ".jax_cache")
)
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

import numpy as np  # noqa: E402

import toydiff  # noqa: E402
from toydiff import checkpoint, fields, guidance, mixtures, plugins, sampler, schedule, solvers  # noqa: E402
from toydiff import scene as scene_mod  # noqa: E402
from toydiff import scenes as scenes_mod  # noqa: E402
from toydiff.atlas import evaluations, scale_convention  # noqa: E402
from toydiff.scene import Scene  # noqa: E402
from toydiff.viz import plots  # noqa: E402
from ui import atlas, panels, state  # noqa: E402
from ui.compute import (  # noqa: E402
    FIELD_RES,
    SCORE_LABELS,
    background,
    denoiser_for,
    error_at,
    field_at,
    load_mixture,
    metrics_of,
    mix_key,
    mixture_of,
    probe_at,
    run_key,
    scrub_at,
    simulate,
    threshold_of,
)
from ui.state import CUSTOM  # noqa: E402

SIDES = {  # the view on open: same seeds, nCFG left, CCFG right, at settings where they differ
    "left": {"method": "ncfg", "gamma": 2.0},
    "right": {"method": "ccfg", "gamma": 2.0, "tau": 1.0},
}
SYMBOLS = {
    "gamma": "γ",
    "gamma_pos": "γ_p",
    "tau": "τ",
    "tau_schedule": "τ schedule",
    "w_neg": "w⁻",
    "prior": "p_T",
    "temp": "Temp",
    "offset": "offset",
    "p_min": "p_min",
    "p_max": "p_max",
}
FIELD_TOGGLES = {
    "uncond": "unconditional ε",
    "pos": "positive ε",
    "neg": "negative ε",
    "guided": "guided ε̂",
    "term": "guidance term",
    "step": "step x_t' − x_t",
}
HEAT_OPTIONS = {
    "scale_neg": "effective negative scale γλ⁻",
    "lam_neg": "rule weight λ⁻",
    "p_neg": "posterior p(n | x_t)",
    "log_p": "log density log p_t(x)",
}
NONE = "— none —"  # the concept selectors' "no concept" entry
GUIDE = """\
**Reading the page.** The two columns start from the same noise and differ only in their rule.
*Trajectories*: the samples travel from noise (t = 999) to data (t = 0); ▶ plays it, the frame
slider scrubs both ways. *Vector field*: arrows of the guided ε̂ and of the guidance term at the
timestep of its slider, over the rule's negative weight: CCFG's attenuation map λ⁻ fades to 0 where
a sample no longer resembles the negative concept, nCFG's weight is γ everywhere. *Weights over
time* follows λ⁻ along the samples' paths, *Outcome* compares the final samples with the ideal
target p(x | ¬negative).

**Try** raising γ in both columns: nCFG pushes samples off the data (grey), CCFG keeps them on the
allowed blobs (blue). The sidebar's curated scenes open prepared comparisons with captions. The
address bar always holds the link to this view; *Share* copies it or saves the scene as a file.
"""
WEAK_LABELS = {  # "default" stands for None: a None state makes Streamlit show no selection
    "default": "default (blur with exact scores, else the shipped net)",
    "small": "small net (fewer units)",
    "short": "main net stopped early",
    "blur": "exact mixture blurred by δ",
}


def main():
    present = presentation_flag()
    st.set_page_config(
        page_title="toydiff · negative guidance side by side",
        layout="wide",
        initial_sidebar_state="collapsed" if present else "auto",
    )
    try:  # rules and solvers registered from outside ($TOYDIFF_PLUGINS, entry points)
        plugins.load()
    except ValueError as e:
        st.error(str(e))
    state.load_url_once()
    state.apply_pending()
    present = lecture_ui()
    common = common_ui()
    panels.page_style(present)
    body(common, present)


@st.fragment
def body(common: dict, present: bool):
    """Everything but the sidebar. A rule control (γ, τ, …) reruns only this: Streamlit's browser
    side re-renders every element a rerun sends, and the sidebar would add its ~25 widgets."""
    top = st.container()
    main_area = st.container() if present else None  # a projector: the rules below the picture
    specs = {}
    for side, col in zip(SIDES, st.columns(2, gap="medium")):  # one row: the picture comes first
        with col.popover(
            f"⚙ {side} column: rule and knobs",
            key=f"{side}.rules",
            width="stretch",
            help="The column's guidance rule, its γ, τ, …, its guidance interval and weight "
            "schedule; the plot's title shows them.",
        ):
            specs[side] = rule_ui(side, st)
    scenes = {side: make_scene(common, spec) for side, spec in specs.items()}
    pair = {side: s for side, s in scenes.items() if isinstance(s, Scene)}
    name = state.write_url(pair, present).get("scene") if len(pair) == 2 else None
    with top:
        header(common, name, present)
        for message in st.session_state.pop("url_warnings", []):
            st.warning(message)
        if present and st.session_state.pop("_nav_clicked", False):
            st.rerun(scope="app")  # the next scene's widgets are applied at the app's top
    net = common["session_net"]
    runs = {
        side: simulate(run_key(s), net) if isinstance(s, Scene) else None
        for side, s in scenes.items()
    }
    with main_area or st.container():
        trajectories_view(scenes, runs, net, present)
        metrics_view(scenes, net, present, name)
    if present:
        return
    field_view(scenes, net)
    weights_view(scenes, runs, net)
    outcome_view(scenes, runs, net)
    st.divider()
    tab_views = {  # the open tab's elements rerender on every move: the first one is light
        "Guide": lambda: st.markdown(GUIDE),
        "Share": lambda: panels.share_ui(pair),
        "γ sweep": lambda: panels.sweep_ui(pair, net, denoiser_for),
        "Export for slides": lambda: panels.export_ui(
            pair,
            runs,
            {side: metrics_of(run_key(s), net) for side, s in pair.items()},
            mixture_of,
            threshold_of,
        ),
        "Mixture editor": lambda: panels.editor_ui(data_mixture(common)),
        "Train a net": lambda: panels.train_ui(common, data_mixture(common)),
        "Method atlas": atlas.atlas_ui,
    }
    # only the open tab runs (a tab click reruns this fragment): a slider move skips the rest
    for tab, view in zip(
        st.tabs(list(tab_views), key="tab", on_change="rerun"), tab_views.values()
    ):
        if tab.open:
            with tab:
                view()


def data_mixture(common: dict) -> toydiff.Mixture:
    """The sidebar's data: the preset's mixture or the session's edited one."""
    return load_mixture(common["preset"] or st.session_state["custom_mixture"])


def presentation_flag() -> bool:
    """Presentation mode: the session's toggle, or on a session's first run the link's ?present=1."""
    if "present" in st.session_state:
        return bool(st.session_state["present"])
    try:
        return str(st.query_params.get("present", "0")).lower() in ("1", "true", "yes", "on", "")
    except Exception:  # noqa: BLE001 - never fail before the page exists
        return False


def first_sentence(text: str) -> tuple[str, str]:
    """(the first sentence, the rest) of a caption: one line on the page, the rest folded."""
    head, dot, rest = text.partition(". ")
    return (head + dot).strip(), rest.strip()


def header(common: dict, name: str | None, present: bool):
    """Title and a one-line caption (the rest in its ? tooltip): the curated scene's, or the
    data's description; in presentation mode ◀ ▶ beside the title."""
    if name:
        title, caption = scenes_mod.curated(name).title, scenes_mod.curated(name).caption
    else:
        title = "Negative guidance, side by side"
        what = mixtures.DESCRIPTIONS[common["preset"]] if common["preset"] else "An edited mixture."
        caption = (
            f"**{common['preset'] or CUSTOM}**: {what} Both columns start from the same noise. "
            "Grey: data density p(x); red, dotted: where p(negative | x) > ½. Points: blue "
            "allowed, red leaked into the negative concept, grey off the data support."
        )
    line, rest = first_sentence(caption)
    if present:
        panels.presentation_title(title)
    else:
        st.title(title)
    st.caption(
        f"<span class='lecture-caption'>{line}</span>" if present else line,
        help=rest or None,
        unsafe_allow_html=True,
    )


# ------------------------------------------------------------------------------------------ widgets
def lecture_ui() -> bool:
    """Sidebar: the curated scenes and presentation mode; returns whether presentation mode is on."""
    sb = st.sidebar
    sb.header("Lecture")
    names = ["—", *scenes_mod.NAMES]
    titles = {c.name: c.title for c in scenes_mod.CURATED}
    sb.selectbox(
        "curated scene",
        names,
        key="lecture",
        format_func=lambda n: titles.get(n, "— (free) —"),
        on_change=lambda: state.select_curated(st.session_state["lecture"]),
        help="Open a prepared scene: both columns, the data and t, with a caption saying what "
        "to look at. Each has its own link (?scene=name).",
    )
    return sb.toggle(
        "presentation mode",
        key="present",
        help="Large fonts and markers, one scene per screen, ◀ ▶ through the curated "
        "scenes; the link gets ?present=1 (sidebar collapsed on open).",
    )


def common_ui() -> dict:
    """Sidebar settings shared by both columns: data, concepts, score source, sampler."""
    sb, ss = st.sidebar, st.session_state
    sb.header("Data")
    options = [*toydiff.PRESETS, *([CUSTOM] if "custom_mixture" in ss else [])]
    if ss.get("preset") not in options:
        ss["preset"] = "three_blobs"
    choice = sb.selectbox(
        "preset",
        options,
        key="preset",
        help="The 2D Gaussian mixture and its named concepts (the mixture editor tab adds a custom one).",
    )
    preset = None if choice == CUSTOM else choice
    mixture = json.loads(ss["custom_mixture"]) if preset is None else None
    mix = load_mixture(preset or ss["custom_mixture"])
    info = mixtures.preset_info(preset) if preset else mixtures.Preset(None, "", mix.concepts[-1])
    concepts = [
        NONE,
        *mix.concepts,
    ]  # a string, not None: a None value would show as "no selection"
    data = state.data_key()
    for k in (f"positive.{data}", f"negative.{data}"):
        if k in st.session_state and st.session_state[k] is None:
            st.session_state[k] = NONE
    index = lambda c: concepts.index(NONE if c is None else c)
    positive = sb.selectbox(
        "positive concept (optional)",
        concepts,
        key=f"positive.{data}",
        **state.widget_kwargs(f"positive.{data}", concepts, index=index(info.positive)),
        help="Concept to steer towards (CFG-style term); rules such as CFG, Perp-Neg and ICG need one.",
    )
    negative = sb.selectbox(
        "negative concept",
        concepts,
        key=f"negative.{data}",
        **state.widget_kwargs(f"negative.{data}", concepts, index=index(info.negative)),
        help="Concept to steer away from; its region is shaded red.",
    )
    rotate = sb.slider(
        "turn the plane (°)",
        -360.0,
        360.0,
        key="rotate",
        step=15.0,
        **state.widget_kwargs("rotate", value=0.0),
        help="Turns the data about the origin; learned nets answer in their own frame. Rules "
        "built from norms and inner products (CFG, CCFG, APG) do not notice, element-wise ones "
        "(SLD) change their answer.",
    )
    sb.header("Model and sampler")
    nets = panels.user_nets(preset or ss["custom_mixture"])
    if ss.get("score") not in (*scene_mod.SCORES, *nets):
        ss["score"] = "exact"
    score = sb.radio(
        "score source",
        [*scene_mod.SCORES, *nets],
        key="score",
        horizontal=True,
        format_func=lambda s: SCORE_LABELS.get(s) or nets[s],
        help="Exact: closed-form ε of the mixture. Learned/weak: the shipped small "
        "networks (falls back to exact, with a warning, if weights are missing). "
        "Nets you train in this session appear here too (not part of links).",
    )
    net_kind = sb.radio(
        "learned net",
        scene_mod.NETS,
        key="net",
        horizontal=True,
        disabled=score == "exact",
        help="Standard: trained, as a real model, only where the data's noisy versions lie "
        "(x_t ~ p_t); guidance that leaves them meets its errors (the error map shows where). "
        "Everywhere: the same net trained with the exact ε* on the whole view box too.",
    )
    delta = sb.slider(
        "weak-model blur δ",
        0.0,
        max(2.0, ss.get("delta", 0.0)),
        key="delta",
        step=0.05,
        **state.widget_kwargs("delta", value=0.3),
        help="The exact weak model is the mixture blurred by δ (Σ + δ²I); used by "
        "autoguidance and CFG with a weak ∅ with exact scores.",
    )
    weak = sb.selectbox(
        "autoguidance guide",
        ["default", *scene_mod.WEAK_MODELS],
        key="weak",
        format_func=lambda w: WEAK_LABELS.get(w) or weak_label(preset),
        help="The weak model autoguidance extrapolates away from (and whose ε_∅ CFG with a "
        "weak ∅ uses): the guide net shipped for the preset, a net of lower capacity, the main net "
        "stopped early, or the exact mixture blurred by δ. Default: blur with exact scores, "
        "the shipped weak net with learned ones.",
    )
    eta = sb.slider(
        "sampler η",
        0.0,
        1.0,
        key="eta",
        step=0.05,
        **state.widget_kwargs("eta", value=0.0),
        help="Stochasticity of the ddim and dpmpp_2m_sde solvers: 0 = their ODE (deterministic "
        "DDIM, DPM-Solver++(2M)), 1 = DDPM / the SDE.",
    )
    steps = sb.slider(
        "steps",
        min(5, ss.get("steps", 5)),
        max(200, ss.get("steps", 0)),
        key="steps",
        step=5,
        **state.widget_kwargs("steps", value=50),
        help="Number of sampling steps.",
    )
    n_options = sorted({100, 250, 500, 1000, 2000, 5000, int(ss.get("n", 2000))})
    n = sb.select_slider(
        "number of points",
        n_options,
        key="n",
        **state.widget_kwargs("n", value=2000),
        help="Samples per column (the same noise seeds on both sides).",
    )
    seed = sb.number_input(
        "seed",
        0,
        2**31 - 1,
        key="seed",
        step=1,
        **state.widget_kwargs("seed", value=0),
        help="Random seed of x_T and of the DDPM noise; shared by both columns.",
    )
    schedule_kind = sb.selectbox(
        "noise schedule",
        schedule.SCHEDULES,
        key="schedule",
        help="Discrete VP schedule of the sampler (the nets were trained on linear).",
    )
    solver = sb.selectbox(
        "solver",
        list(solvers.SOLVERS),
        key="solver",
        format_func=lambda s: f"{s}: {solvers.SOLVERS[s].help}",
        help="How a step moves x_t (toydiff.solvers): DDIM(η) on the schedule's timesteps, Euler "
        "or Heun on the EDM σ grid, Euler on the rectified-flow path, DPM-Solver++(2M) SDE "
        "(second order; η as for DDIM). Every path shares the same exact mixture and nets. A "
        "rule whose state filters the DDPM chain (tracked DNG, FBG) needs ddim.",
    )
    return dict(
        preset=preset,
        mixture=mixture,
        positive=None if positive == NONE else positive,
        negative=None if negative == NONE else negative,
        score="learned" if score in nets else score,
        session_net=score if score in nets else None,
        net=net_kind,
        delta=float(delta),
        weak=None if weak == "default" else weak,
        eta=float(eta),
        steps=int(steps),
        n=int(n),
        seed=int(seed),
        schedule=schedule_kind,
        solver=solver,
        t=float(ss.get("field_t", 500)),
        rotate=float(rotate),
    )


def weak_label(preset: str | None) -> str:
    """The 'shipped' guide's entry: the preset's recipe (checkpoint.weak_nets), e.g. tree's own."""
    return f"shipped weak net ({checkpoint.weak_nets(preset)['shipped'].help})"


def rule_help(name: str) -> str:
    """The rule selector's help: its network evaluations per step and how its scale maps onto
    CFG's γ (toydiff.atlas), for the rule shown."""
    r = guidance.RULES.get(name)
    if r is None:
        return "Guidance rule of this column (any registered rule)."
    return (
        f"Guidance rule of this column (any registered rule). {r.label}: "
        f"{evaluations(r)} network evaluations per step; scale: {scale_convention(r.name)}. "
        "The Method atlas tab lists every rule."
    )


def rule_ui(side: str, box) -> dict:
    """Rule selector of one column and its parameters (generated from the registry) in `box`."""
    sb = box
    sb.markdown(f"**{side.capitalize()} column**")
    names = list(guidance.RULES)
    method = sb.selectbox(
        f"{side} rule",
        names,
        key=f"{side}.method",
        format_func=lambda r: guidance.RULES[r].label,
        **state.widget_kwargs(f"{side}.method", names, index=names.index(SIDES[side]["method"])),
        help=rule_help(st.session_state.get(f"{side}.method", SIDES[side]["method"])),
    )
    rule = guidance.rule(method)
    spec = {"method": method}
    for name, param in rule.all_params.items():
        default = (
            SIDES[side].get(name, param.initial)
            if method == SIDES[side]["method"]
            else param.initial
        )
        spec[name] = param_ui(box, f"{side}.{method}.{name}", name, param, default)
    key = f"{side}.{method}.interval"
    lo, hi = sb.slider(
        "guidance interval t",
        0,
        schedule.T,
        key=key,
        step=10,
        **state.widget_kwargs(key, value=(0, schedule.T)),
        help="Guidance is applied only for timesteps in [t_lo, t_hi] "
        "(Kynkäänniemi et al. 2024); outside, the unguided ε is used.",
    )
    spec.update(t_lo=float(lo), t_hi=float(hi))
    if "gamma" in rule.params:
        spec.update(schedule_ui(side, sb))
    return spec


def schedule_ui(side: str, sb) -> dict:
    """A column's weight schedule g(t) on γ (toydiff.guidance.weight); the window's settings."""
    key = f"{side}.weight_schedule"
    kind = sb.selectbox(
        "weight schedule g(t) on γ",
        guidance.WEIGHT_SCHEDULES,
        key=key,
        **state.widget_kwargs(key, guidance.WEIGHT_SCHEDULES, index=0),
        help="γ·g(t) at each step: constant; linear up 2(1 − t/T) or down 2t/T; triangle "
        "2(1 − |2t/T − 1|) (TV-CFG), each averaging γ over t; window: γ until the switch, then "
        "g_late·γ (0: no guidance late, < 0: pulled towards the concept). Drawn in the weights "
        "over time.",
    )
    out = {"weight_schedule": kind}
    if kind == "window":
        key = f"{side}.g_late"
        out["g_late"] = float(
            sb.slider(
                "g after the switch",
                -1.0,
                1.0,
                key=key,
                step=0.1,
                **state.widget_kwargs(key, value=0.0),
                help="The factor on γ for t below the switch.",
            )
        )
        key = f"{side}.t_switch"
        out["t_switch"] = float(
            sb.slider(
                "switch t",
                0,
                schedule.T,
                key=key,
                step=10,
                **state.widget_kwargs(key, value=schedule.T // 2),
                help="g = 1 for t at or above it (early, noisy steps), g_late below.",
            )
        )
    return out


def param_ui(box, key: str, name: str, param: guidance.Param, default: float) -> float:
    """A slider for one rule parameter: log-spaced values for γ and log parameters, else linear."""
    label = f"{SYMBOLS.get(name, name)} ({name})"
    if param.choices:
        return box.selectbox(
            label,
            param.choices,
            key=key,
            **state.widget_kwargs(key, param.choices, index=param.choices.index(default)),
            help=param.help,
        )
    current = float(
        st.session_state.get(key, default)
    )  # a link or a sweep click may hold any value
    if param.log or name == "gamma":
        values = sorted(set(state.log_values(param.lo, param.hi, default)) | {current})
        return float(
            box.select_slider(
                label,
                values,
                key=key,
                format_func=lambda v: f"{v:g}",
                **state.widget_kwargs(key, value=default),
                help=f"{param.help}; log scale, range [{param.lo:g}, {param.hi:g}].",
            )
        )
    step = 10.0 ** np.floor(np.log10((param.hi - param.lo) / 200))
    if default:
        step = min(step, 10.0 ** np.floor(np.log10(abs(default))))
    return float(
        box.slider(
            label,
            float(param.lo),
            float(param.hi),
            key=key,
            step=float(step),
            format=f"%.{max(0, int(-np.log10(step)))}f",
            **state.widget_kwargs(key, value=float(default)),
            help=f"{param.help}; range [{param.lo:g}, {param.hi:g}].",
        )
    )


def make_scene(common: dict, spec: dict) -> Scene | tuple[str, str]:
    """The column's Scene, or (kind, message) for st.info/st.error when the settings do not fit."""
    rule = guidance.rule(spec["method"])
    if guidance.needs_positive(rule) and common["positive"] is None:
        return "info", f"{rule.label} needs a positive concept: choose one in the sidebar."
    if guidance.needs_negative(rule) and common["negative"] is None:
        return "info", f"{rule.label} needs a negative concept: choose one in the sidebar."
    try:
        return Scene.from_dict({**{k: v for k, v in common.items() if k != "session_net"}, **spec})
    except ValueError as e:
        return "error", f"Invalid settings: {e}"


# -------------------------------------------------------------------------------------------- views
def title_of(scene: Scene) -> str:
    """Rule label and its parameter values, e.g. 'Negated CFG  γ = 2'."""
    rule = guidance.rule(scene.method)
    shown = [
        f"{SYMBOLS.get(k, k)} = {getattr(scene, k):g}"
        for k, p in rule.params.items()
        if not p.choices and (not p.pos_only or scene.positive is not None)
    ]
    shown += [
        f"{SYMBOLS.get(k, k)}: {getattr(scene, k)}"
        for k, p in rule.params.items()
        if p.choices and getattr(scene, k) != p.initial
    ]
    if (scene.t_lo, scene.t_hi) != (0.0, float(schedule.T)):
        shown.append(f"t ∈ [{scene.t_lo:g}, {scene.t_hi:g}]")
    eta = sampler.effective_eta(scene.method, scene.eta)
    if eta != scene.eta:
        shown.append(f"η = {eta:g} (its posterior filters a stochastic chain)")
    return f"<b>{rule.label}</b>  {', '.join(shown)}"


def columns_for(scenes: dict, messages: bool = False) -> dict:
    """One Streamlit column per valid side; with `messages`, invalid sides show their info/error."""
    cols = dict(zip(scenes, st.columns(len(scenes), gap="medium")))
    for side, s in scenes.items():
        if messages and not isinstance(s, Scene):
            getattr(cols[side], s[0])(s[1])
    return {side: col for side, col in cols.items() if isinstance(scenes[side], Scene)}


def view_extent(runs: list[dict]) -> float:
    """Half-width shared by both trajectory views: the data's extent, widened (up to 4×) so that
    98 % of the final samples of either column are in view."""
    lim = runs[0]["lim"]
    spread = max(float(np.nanquantile(np.abs(r["x0"]).max(1), 0.98)) for r in runs)
    return float(np.ceil(min(4 * lim, max(lim, 1.1 * spread))))


@st.fragment
def trajectories_view(scenes: dict, runs: dict, net: str | None, present: bool = False):
    trails = (
        False
        if present
        else st.toggle(
            "faint trails",
            False,
            key="trails",
            help="Draw the full paths of 150 samples behind the animation.",
        )
    )
    valid = [runs[side] for side, s in scenes.items() if isinstance(s, Scene)]
    lim = view_extent(valid) if valid else None
    for side, col in columns_for(scenes, messages=True).items():
        scene, run = scenes[side], runs[side]
        if run["warning"]:
            col.warning(run["warning"])
        off = int(np.sum(~np.all(np.abs(run["x0"]) <= lim, 1)))  # NaN counts as off-screen

        def figure(scene=scene, run=run, off=off):
            bg = background(mix_key(scene), scene.positive, scene.negative, lim)
            title = f"{title_of(scene)}<br><sup>{run['diverged']} diverged · {off} off-screen</sup>"
            args = (
                plots.background(bg["u"], bg["log_p"], bg["p_neg"]),
                run["frames"],
                run["frame_ts"],
                run["labels"],
                bg["lim"],
                title,
                150 if trails else 0,
            )
            if present:
                return plots.presentation(plots.trajectory_figure(*args))
            return plots.trajectory_spec(*args)  # a dict: no plotly Frame objects to build

        draw(col, "traj", side, scene, net, figure, lim, trails, present)
        if not present:  # the figure's subtitle says it on a projector
            col.caption(
                f"{len(run['labels'])} samples, {scene.steps} steps, η = "
                f"{sampler.effective_eta(scene.method, scene.eta):g}; "
                f"{run['diverged']} diverged, {off} outside the view."
            )


def metrics_view(scenes: dict, net: str | None = None, present: bool = False, name=None):
    if present:  # one line per column: the metrics its claims are about
        claims = scenes_mod.curated(name).claims if name else ()
        for side, col in columns_for(scenes).items():
            keys = list(dict.fromkeys(c.metric for c in claims if c.column == side))
            values = metrics_of(run_key(scenes[side]), net)
            col.markdown(
                "<div class='metric-line'>"
                + plots.metrics_line(
                    values,
                    keys or ["off_support", "leakage_hard"],
                    scenes[side].negative,
                    scenes[side].positive,
                )
                + "</div>",
                unsafe_allow_html=True,
            )
        return
    st.subheader("Metrics")
    names = [
        f"{side}: {guidance.rule(s.method).label}"
        for side, s in scenes.items()
        if isinstance(s, Scene)
    ]
    values = [metrics_of(run_key(s), net) for s in scenes.values() if isinstance(s, Scene)]
    if values:
        st.markdown(plots.metrics_table(names, values))
        st.caption(
            "Exact densities of the mixture; ✓ marks the better column. Energy distance: to exact "
            "samples of the ideal target p(x | p, ¬n), unbiased (it can be slightly negative); the "
            "baseline is its mean ± sd over pairs of independent exact sample sets of that size."
        )


@st.fragment
def field_view(scenes: dict, net: str | None = None):
    st.subheader("Vector field at timestep t")
    left, right = st.columns([3, 2])
    t = left.slider(
        "timestep t",
        0,
        schedule.T - 1,
        key="field_t",
        step=10,
        **state.widget_kwargs("field_t", value=500),
        help="Timestep of the field (999 = pure noise, 0 = data). Reruns this view only.",
    )
    scenes = {
        side: dataclasses.replace(s, t=float(t)) if isinstance(s, Scene) else s
        for side, s in scenes.items()
    }
    pair = {side: s for side, s in scenes.items() if isinstance(s, Scene)}
    if len(pair) == 2:  # the fragment reran alone: keep the link's t current
        state.write_url(pair, bool(st.session_state.get("present")))
    heat = right.selectbox(
        "heatmap",
        list(HEAT_OPTIONS),
        format_func=HEAT_OPTIONS.get,
        key="field_heat",
        help="Colour map under the arrows: the rule's negative weight at x_t.",
    )
    shown = st.pills(
        "arrows",
        list(FIELD_TOGGLES),
        selection_mode="multi",
        format_func=FIELD_TOGGLES.get,
        key="show",
        **state.widget_kwargs("show", default=["guided", "term"]),
        help="The fields drawn as arrows: ε of the unconditional, positive and negative "
        "branches, the guided ε̂, the guidance term ε̂ − ε, or the sampler's step.",
    )  # one widget, not six checkboxes in six columns: a t move reruns this view's every element
    cols = columns_for(scenes)
    maps = {side: field_at(run_key(scenes[side]), int(t), net) for side in cols}
    zmax = max([float(np.nanmax(f[heat])) for f in maps.values() if heat in f] + [1e-6])
    point = st.session_state.get("probe")
    for side, col in cols.items():
        key = run_key(scenes[side])
        at = probe_at(key, int(t), net, tuple(point)) if point else None
        make = lambda side=side, at=at: field_fig(
            scenes[side], maps[side], heat, zmax, shown, t, (at, point)
        )
        on = {"probe": functools.partial(_probe_released, f"field.{side}")}
        draw(col, "field", side, scenes[side], net, make, t, heat, zmax, shown, point, on=on)
    st.caption(
        "Arrow length ∝ magnitude (one scale per panel, long arrows capped). The dotted red line "
        "is p(n | x_t) = ½ at this t; grey lines are the noisy density p_t(x). Press or drag on "
        "either field to probe a point: both columns read out p(c | x_t), their weights and "
        "predictions there (interpolated while you drag, exact once you let go)."
    )
    learned = {s_: s for s_, s in scenes.items() if isinstance(s, Scene) and s.score == "learned"}
    if learned:
        error_view(learned, maps, int(t), net)


def error_view(scenes: dict, maps: dict, t: int, net: str | None):
    """The learned net's relative ε error at t with the run's samples at that t (issue 19)."""
    st.markdown("**Where the net is wrong at this t**")
    for side, col in columns_for(scenes).items():
        scene = scenes[side]
        run = simulate(run_key(scene), net)
        frame = int(np.argmin(np.abs(run["frame_ts"] - t)))
        err = error_at(run_key(scene), t, net)
        lim = fields.extent(mixture_of(scene))
        u = np.linspace(-lim, lim, FIELD_RES, dtype=np.float32)
        title = f"{title_of(scene)}<br><sup>net error at t = {t}, samples at t = {run['frame_ts'][frame]}</sup>"
        make = lambda err=err, run=run, frame=frame, u=u, lim=lim, title=title, side=side: (
            plots.error_map_spec(
                u,
                err.reshape(FIELD_RES, FIELD_RES),
                run["frames"][frame],
                lim,
                title,
                maps[side]["log_p"].reshape(FIELD_RES, FIELD_RES) if side in maps else None,
            )
        )
        draw(col, "error", side, scene, net, make, t)
    st.caption(
        "Relative error ‖ε_net − ε*‖ / max(‖ε*‖, 0.1) of the learned net against the exact oracle, "
        "the worst of the rule's branches, capped at 100 %; black dots are the run's samples at the "
        "nearest shown step. The metrics' net error on path averages it where the samples went."
    )


def field_fig(
    scene: Scene, f: dict, heat: str, zmax: float, shown: list[str], t: int, probe=(None, None)
):
    """The field figure of one column from its grid values; probe: (the exact values at the
    probe point, the point), both None before the first probe."""
    mix = mixture_of(scene)
    lim = fields.extent(mix)
    u = np.linspace(-lim, lim, FIELD_RES, dtype=np.float32)
    g = fields.grid(lim, FIELD_RES)
    sub = np.zeros((FIELD_RES, FIELD_RES), bool)
    sub[::2, ::2] = True
    sub = sub.ravel()
    key_of = lambda name: f"eps_{name}" if name in ("uncond", "pos", "neg") else name
    arrows = {name: (g[sub], f[key_of(name)][sub]) for name in shown if key_of(name) in f}
    grid_map = f.get(heat, np.zeros(len(g), np.float32)).reshape(FIELD_RES, FIELD_RES)
    p_neg = f["p_neg"].reshape(FIELD_RES, FIELD_RES) if scene.negative is not None else None
    title = f"{title_of(scene)}<br><sup>t = {t}</sup>"
    return plots.field_spec(
        u,
        grid_map,
        heat,
        zmax if heat != "log_p" else None,
        arrows,
        2 * (u[1] - u[0]),
        lim,
        title,
        f["log_p"].reshape(FIELD_RES, FIELD_RES),
        p_neg,
        plots.probe_meta(u[::PROBE_STRIDE], _probe_grid(f), mix.concepts, t, *probe),
    )


PROBE_STRIDE = 4  # the probe's grid: every 4th field point, 11 × 11 (it rides in every field
# figure a t move sends); the exact values come on release


def _probe_grid(f: dict) -> dict:
    """The field's values on the probe's grid, which the browser interpolates while dragging."""
    s = PROBE_STRIDE
    return {
        k: v.reshape(FIELD_RES, FIELD_RES, *v.shape[1:])[::s, ::s].reshape(-1, *v.shape[1:])
        for k, v in f.items()
    }


def _probe_released(key: str):
    """The probe was let go on chart `key`: both columns' fields show it (a rerun of the view)."""
    point = chart.value_of(key, "probe")
    if point is not None:
        st.session_state["probe"] = [round(float(point[0]), 3), round(float(point[1]), 3)]


def weights_view(scenes: dict, runs: dict, net: str | None):
    st.subheader("Weights over time")
    for side, col in columns_for(scenes).items():
        run, scene = runs[side], scenes[side]
        make = lambda run=run, scene=scene: plots.weights_spec(
            run["step_ts"], run["stats"], title_of(scene)
        )
        draw(col, "weights", side, scene, net, make)
    st.caption(
        "Mean over samples (line) and 10–90 % band. nCFG keeps λ⁻ = 1 everywhere; CCFG's λ⁻ "
        "drops once a sample no longer resembles the negative concept, and rises again in the "
        "last steps, where Δ_n carries √(1−ᾱ_t) → 0: the bottom panel, the push |b_t|·γλ⁻‖Δ_n‖ "
        "that the negative term gives x_t in each step, shows how much that late weight moves "
        "the samples. DNG's and FBG's panels draw what they tracked (DNG: the posterior, FBG: λ⁺) "
        "beside its exact value at the same x_t (dotted)."
    )


SCRUB_KNOBS = ("gamma", "tau")  # the knobs a column's outcome view scrubs, where its rule has them


def outcome_view(scenes: dict, runs: dict, net: str | None):
    head, switch = st.columns([3, 2], vertical_alignment="bottom")
    head.subheader("Outcome against the ideal target")
    scrub_on = switch.toggle(
        "drag γ, τ under the plots",
        False,
        key="scrub",
        help="Samples each column at 13 values of γ (and of τ) in one vmapped call, so that a "
        "slider under its plot moves the samples with no server round trip while you drag; "
        "let go and the column runs at that value. Costs 13 runs per knob and column after "
        "every change (seconds on the tree).",
    )
    for side, col in columns_for(scenes).items():
        scene, run = scenes[side], runs[side]
        params = guidance.rule(scene.method).all_params
        knobs = [k for k in SCRUB_KNOBS if k in params] if scrub_on else []
        grids = {k: state.scrub_values(params[k]) for k in knobs}

        def figure(scene=scene, run=run, grids=grids):
            bg = background(mix_key(scene), scene.positive, scene.negative)
            scrub = [
                plots.scrub_meta(
                    k,
                    SYMBOLS.get(k, k),
                    values,
                    getattr(scene, k),
                    **scrub_at(run_key(scene.replace(**{k: values[0]})), net, k, values),
                )
                for k, values in grids.items()
            ]
            return plots.outcome_spec(
                bg["u"],
                bg["log_p_target"],
                run["x0"],
                run["labels"],
                bg["lim"],
                title_of(scene),
                scrub,
            )

        on = {"scrub": functools.partial(_scrub_released, f"outcome.{side}", side, scene.method)}
        draw(col, "outcome", side, scene, net, figure, scrub_on, on=on)
    st.caption(
        "Blue shade: the ideal target density p(x | positive, ¬negative) at t = 0."
        + (
            " Drag γ (or τ) under a plot: its samples move between runs at neighbouring values, "
            "sampled together beforehand; let go and the column runs at that value."
            if scrub_on
            else ""
        )
    )


def _scrub_released(key: str, side: str, method: str):
    """A scrub slider was let go: the column's knob takes its value (the exact run follows)."""
    report = chart.value_of(key, "scrub")
    if report and report.get("knob") in SCRUB_KNOBS:
        st.session_state[f"{side}.{method}.{report['knob']}"] = float(report["value"])


def draw(col, view: str, side: str, scene: Scene, net: str | None, make, *settings, on=None):
    """One column's view in `col` (chart key "view.side"). `make()` builds the figure only on a
    miss of the figure cache shared by all sessions (ui/chart.py), keyed by what determines it:
    the view, the sampler run (scene without t, net) and the view's own settings. on: the
    chart's reports from the browser (chart.show)."""
    key = json.dumps([view, run_key(scene), net, *settings])
    chart.show(make, f"{view}.{side}", plots.CONFIG, col, cache_key=key, on=on)


if __name__ == "__main__":  # the sidebar names each page for what it shows
    st.navigation(
        [
            st.Page(main, title="Guidance, side by side", default=True),
            st.Page("pages/1_Real_model.py", title="Real image model", url_path="Real_model"),
        ]
    ).run()
