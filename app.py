"""toydiff app: two guidance rules side by side (nCFG vs CCFG by default) on the same noise seeds.

Run: `streamlit run app.py`. Widgets -> two Scenes -> cached sampler runs and fields -> Plotly views.
No math here: numbers come from `toydiff`, figures from `toydiff.viz.plots`.
"""

from __future__ import annotations

import os
import pathlib

import jax

# Before any JAX operation: reuse compiled samplers across app restarts (≈ 16 ms per load).
# TOYDIFF_JAX_CACHE overrides the folder (the latency benchmark measures a cold start with it).
_CACHE = os.environ.get("TOYDIFF_JAX_CACHE", str(pathlib.Path(__file__).resolve().parent / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

import toydiff  # noqa: E402
from toydiff import exact, fields, guidance, metrics, mixtures, sampler, schedule  # noqa: E402
from toydiff import scene as scene_mod  # noqa: E402
from toydiff.metrics import preset_threshold  # noqa: E402
from toydiff.scene import Scene  # noqa: E402
from toydiff.viz import plots  # noqa: E402
from toydiff.viz.export import outcomes  # noqa: E402

SIDES = {  # the view on open: same seeds, nCFG left, CCFG right, at settings where they differ
    "left": {"method": "ncfg", "gamma": 2.0},
    "right": {"method": "ccfg", "gamma": 2.0, "tau": 1.0},
}
MAX_FRAMES = 50  # animation frames sent to the browser
FIELD_RES = 41  # heatmap grid; arrows on every other point (21 × 21)
BG_RES = 120
SCORE_LABELS = {"exact": "exact oracle", "learned": "learned net", "weak": "weak net"}
SYMBOLS = {"gamma": "γ", "tau": "τ", "w_neg": "w⁻", "prior": "p_T", "temp": "Temp", "offset": "offset",
           "p_min": "p_min", "p_max": "p_max"}
FIELD_TOGGLES = {"uncond": "unconditional ε", "pos": "positive ε", "neg": "negative ε",
                 "guided": "guided ε̂", "term": "guidance term", "step": "step x_t' − x_t"}
HEAT_OPTIONS = {"scale_neg": "effective negative scale γλ⁻", "lam_neg": "rule weight λ⁻",
                "p_neg": "posterior p(n | x_t)", "log_p": "log density log p_t(x)"}
WEIGHT_KEYS = ("lam_neg", "scale_neg", "lam_pos", "scale_pos")


def main():
    st.set_page_config(page_title="toydiff · negative guidance side by side", layout="wide")
    common = common_ui()
    specs = {side: rule_ui(side) for side in SIDES}
    st.title("Negative guidance, side by side")
    st.caption(f"**{common['preset']}**: {mixtures.DESCRIPTIONS[common['preset']]} Both columns start "
               "from the same noise. Grey: data density p(x); red, dotted: where p(negative | x) > ½. "
               "Points: blue allowed, red leaked into the negative concept, grey off the data support.")
    scenes = {side: make_scene(common, spec) for side, spec in specs.items()}
    runs = {side: simulate(s.to_json()) if isinstance(s, Scene) else None for side, s in scenes.items()}
    trajectories_view(scenes, runs)
    metrics_view(scenes, runs)
    field_view(scenes)
    weights_view(scenes, runs)
    outcome_view(scenes, runs)


# ------------------------------------------------------------------------------------------ widgets
def common_ui() -> dict:
    """Sidebar settings shared by both columns: data, concepts, score source, sampler."""
    sb = st.sidebar
    sb.header("Data")
    preset = sb.selectbox("preset", toydiff.PRESETS, key="preset",
                          help="The 2D Gaussian mixture and its named concepts.")
    info = mixtures.preset_info(preset)
    concepts = [None, *load_mixture(preset).concepts]
    name = lambda c: "— none —" if c is None else c
    positive = sb.selectbox("positive concept (optional)", concepts, key=f"positive.{preset}",
                            index=concepts.index(info.positive), format_func=name,
                            help="Concept to steer towards (CFG-style term); rules such as CFG, "
                                 "Perp-Neg and ICG need one.")
    negative = sb.selectbox("negative concept", concepts, key=f"negative.{preset}",
                            index=concepts.index(info.negative), format_func=name,
                            help="Concept to steer away from; its region is shaded red.")
    sb.header("Model and sampler")
    score = sb.radio("score source", scene_mod.SCORES, key="score", horizontal=True,
                     format_func=SCORE_LABELS.get,
                     help="Exact: closed-form ε of the mixture. Learned/weak: the shipped small "
                          "networks (falls back to exact, with a warning, if weights are missing).")
    delta = sb.slider("weak-model blur δ", 0.0, 2.0, 0.3, 0.05, key="delta",
                      help="The exact weak model is the mixture blurred by δ (Σ + δ²I); used by "
                           "autoguidance with exact scores.")
    eta = sb.slider("sampler η", 0.0, 1.0, 0.0, 0.05, key="eta",
                    help="DDIM stochasticity: 0 = deterministic DDIM, 1 = DDPM.")
    steps = sb.slider("steps", 5, 200, 50, 5, key="steps", help="Number of sampling steps.")
    n = sb.select_slider("number of points", [100, 250, 500, 1000, 2000, 5000], 2000, key="n",
                         help="Samples per column (the same noise seeds on both sides).")
    seed = sb.number_input("seed", 0, 2**31 - 1, 0, 1, key="seed",
                           help="Random seed of x_T and of the DDPM noise; shared by both columns.")
    return dict(preset=preset, positive=positive, negative=negative, score=score, delta=float(delta),
                eta=float(eta), steps=int(steps), n=int(n), seed=int(seed))


def rule_ui(side: str) -> dict:
    """Sidebar rule selector of one column and its parameters, generated from the registry."""
    sb = st.sidebar
    sb.header(f"{side.capitalize()} column")
    names = list(guidance.RULES)
    method = sb.selectbox(f"{side} rule", names, index=names.index(SIDES[side]["method"]),
                          key=f"{side}.method", format_func=lambda r: guidance.RULES[r].label,
                          help="Guidance rule of this column (any registered rule).")
    rule = guidance.rule(method)
    spec = {"method": method}
    for name, param in rule.all_params.items():
        default = SIDES[side].get(name, param.default) if method == SIDES[side]["method"] else param.default
        spec[name] = param_ui(f"{side}.{method}.{name}", name, param, default)
    lo, hi = sb.slider("guidance interval t", 0, schedule.T, (0, schedule.T), 10,
                       key=f"{side}.{method}.interval",
                       help="Guidance is applied only for timesteps in [t_lo, t_hi] "
                            "(Kynkäänniemi et al. 2024); outside, the unguided ε is used.")
    return {**spec, "t_lo": float(lo), "t_hi": float(hi)}


def param_ui(key: str, name: str, param: guidance.Param, default: float) -> float:
    """A slider for one rule parameter: log-spaced values for γ and log parameters, else linear."""
    label = f"{SYMBOLS.get(name, name)} ({name})"
    if param.log or name == "gamma":
        values = log_values(param.lo, param.hi, default)
        return float(st.sidebar.select_slider(label, values, default, key=key, format_func=lambda v: f"{v:g}",
                                              help=f"{param.help}; log scale, range [{param.lo:g}, {param.hi:g}]."))
    step = 10.0 ** np.floor(np.log10((param.hi - param.lo) / 200))
    if default:
        step = min(step, 10.0 ** np.floor(np.log10(abs(default))))
    return float(st.sidebar.slider(label, float(param.lo), float(param.hi), float(default), float(step),
                                   key=key, format=f"%.{max(0, int(-np.log10(step)))}f",
                                   help=f"{param.help}; range [{param.lo:g}, {param.hi:g}]."))


def log_values(lo: float, hi: float, default: float) -> list[float]:
    """Round numbers 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k in [lo, hi] (0 first if lo = 0)."""
    start = lo if lo > 0 else hi / 200
    decades = range(int(np.floor(np.log10(start))), int(np.ceil(np.log10(hi))) + 1)
    nice = [float(f"{m * 10.0**k:.6g}") for k in decades for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)]
    values = [v for v in nice if start <= v <= hi] + [float(default), float(hi)] + ([0.0] if lo == 0 else [])
    return sorted(set(values))


def make_scene(common: dict, spec: dict) -> Scene | tuple[str, str]:
    """The column's Scene, or (kind, message) for st.info/st.error when the settings do not fit."""
    rule = guidance.rule(spec["method"])
    if guidance.needs_positive(rule) and common["positive"] is None:
        return "info", f"{rule.label} needs a positive concept: choose one in the sidebar."
    if guidance.needs_negative(rule) and common["negative"] is None:
        return "info", f"{rule.label} needs a negative concept: choose one in the sidebar."
    try:
        return Scene.from_dict({**common, **spec})
    except ValueError as e:
        return "error", f"Invalid settings: {e}"


# ---------------------------------------------------------------------------------- cached compute
@st.cache_resource(show_spinner=False)
def load_mixture(preset: str) -> toydiff.Mixture:
    """The preset mixture, built once."""
    return mixtures.preset(preset)


@st.cache_resource(show_spinner=False)
def load_denoiser(preset: str, score: str, delta: float):
    """(denoiser, warning): the scene's denoiser, or the exact oracle if weights are missing/corrupt."""
    mix = load_mixture(preset)
    scene = Scene(preset=preset, score=score, delta=delta)
    try:
        return scene_mod.denoiser(scene, mix), None
    except Exception as e:  # missing, corrupt or unloadable weights must never take the page down
        warning = (f"No usable {SCORE_LABELS[score]} weights for '{preset}' "
                   f"({type(e).__name__}: {e}); using the exact oracle.")
        return scene_mod.denoiser(Scene(preset=preset, score="exact", delta=delta), mix), warning


@st.cache_data(max_entries=48, show_spinner="sampling…")
def simulate(scene_json: str) -> dict:
    """Sampler run of one scene, as numpy: animation frames, outcomes, weight stats, diverged count."""
    scene = Scene.from_json(scene_json)
    mix = load_mixture(scene.preset)
    den, warning = load_denoiser(scene.preset, scene.score, scene.delta)
    result = sampler.sample(scene.sampler_config(), den, jax.random.key(scene.seed), scene.cond(mix),
                            scene.knobs())  # toydiff.run without the metrics: they come later
    traj = np.asarray(result.traj, np.float32)  # (S+1, N, 2)
    idx = np.unique(np.linspace(0, scene.steps, min(scene.steps + 1, MAX_FRAMES)).round().astype(int))
    ts = np.append(schedule.timesteps(scene.steps), -1)  # state j sits at timestep ts[j]; -1 = x̂0
    x0 = traj[-1]
    lim = fields.extent(mix)
    stats = {}
    for key in WEIGHT_KEYS:
        if key in result.info:
            w = np.asarray(result.info[key], np.float32)  # (S, N)
            stats[key] = (np.nanmean(w, 1), *np.nanpercentile(w, [10, 90], axis=1))
    return dict(frames=np.clip(traj[idx], -1e4, 1e4), frame_ts=ts[idx], x0=np.clip(x0, -1e4, 1e4),
                labels=outcomes(mix, x0, scene.negative, preset_threshold(scene.preset)),
                stats=stats, step_ts=ts[:-1], warning=warning, lim=lim, x0_raw=x0,
                diverged=int(np.sum(np.asarray(metrics.diverged(x0)))))


@st.cache_data(max_entries=48, show_spinner=False)
def metrics_of(scene_json: str) -> dict:
    """metrics.evaluate of the scene's final samples (exact densities; ~0.1 s, so after the figures)."""
    scene = Scene.from_json(scene_json)
    x0 = simulate(scene_json)["x0_raw"]
    return metrics.evaluate(load_mixture(scene.preset), x0, scene.positive, scene.negative,
                            preset_threshold(scene.preset))


@st.cache_data(max_entries=32, show_spinner=False)
def background(preset: str, positive: str | None, negative: str | None, lim: float | None = None) -> dict:
    """Grid densities at t = 0 over [−lim, lim]² (default: the data's extent): log p(x),
    p(negative | x) and the ideal target log p(x | p, ¬n)."""
    mix = load_mixture(preset)
    lim = fields.extent(mix) if lim is None else lim
    g = fields.grid(lim, BG_RES)
    shape = (BG_RES, BG_RES)
    target = exact.log_prob_rows(mix, g, 1.0, mixtures.log_weights(mix, positive, negative))
    return dict(u=np.linspace(-lim, lim, BG_RES, dtype=np.float32), lim=lim,
                log_p=np.asarray(exact.log_prob(mix, g)).reshape(shape),
                p_neg=None if negative is None else np.asarray(exact.posterior(mix, g, 1.0, negative)).reshape(shape),
                log_p_target=np.asarray(target).reshape(shape))


@st.cache_data(max_entries=64, show_spinner=False)
def field_at(scene_json: str, t: int) -> dict:
    """fields.field of the scene on the FIELD_RES grid at timestep t, as numpy."""
    scene = Scene.from_json(scene_json).replace(n=1, seed=0)  # fixed n: one compile per rule/steps
    mix = load_mixture(scene.preset)
    den, _ = load_denoiser(scene.preset, scene.score, scene.delta)
    lim = fields.extent(mix)
    out = fields.field(scene.sampler_config(), den, scene.cond(mix), scene.knobs(),
                       fields.grid(lim, FIELD_RES), float(t))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


# -------------------------------------------------------------------------------------------- views
def title_of(scene: Scene) -> str:
    """Rule label and its parameter values, e.g. 'Negated CFG  γ = 2'."""
    rule = guidance.rule(scene.method)
    params = ", ".join(f"{SYMBOLS.get(k, k)} = {getattr(scene, k):g}" for k in rule.params)
    if (scene.t_lo, scene.t_hi) != (0.0, float(schedule.T)):
        params += f", t ∈ [{scene.t_lo:g}, {scene.t_hi:g}]"
    return f"<b>{rule.label}</b>  {params}"


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
def trajectories_view(scenes: dict, runs: dict):
    st.subheader("Trajectories")
    trails = st.toggle("faint trails", False, key="trails",
                       help="Draw the full paths of 150 samples behind the animation.")
    valid = [runs[side] for side, s in scenes.items() if isinstance(s, Scene)]
    lim = view_extent(valid) if valid else None
    for side, col in columns_for(scenes, messages=True).items():
        scene, run = scenes[side], runs[side]
        bg = background(scene.preset, scene.positive, scene.negative, lim)
        if run["warning"]:
            col.warning(run["warning"])
        off = int(np.sum(~np.all(np.abs(run["x0"]) <= lim, 1)))  # NaN counts as off-screen
        title = f"{title_of(scene)}<br><sup>{run['diverged']} diverged · {off} off-screen</sup>"
        fig = plots.trajectory_figure(plots.background_traces(bg["u"], bg["log_p"], bg["p_neg"]),
                                      run["frames"], run["frame_ts"], run["labels"], bg["lim"], title,
                                      trails=150 if trails else 0)
        col.plotly_chart(fig, theme=None, config=plots.CONFIG, key=f"traj.{side}")
        col.caption(f"{len(run['labels'])} samples, {scene.steps} steps, η = {scene.eta:g}; "
                    f"{run['diverged']} diverged, {off} outside the view.")


def metrics_view(scenes: dict, runs: dict):
    st.subheader("Metrics")
    names = [f"{side}: {guidance.rule(s.method).label}" for side, s in scenes.items() if isinstance(s, Scene)]
    values = [metrics_of(s.to_json()) for s in scenes.values() if isinstance(s, Scene)]
    if values:
        st.markdown(plots.metrics_table(names, values))
        st.caption("Exact densities of the mixture; ✓ marks the better column. Energy distance: to exact "
                   "samples of the ideal target p(x | p, ¬n), the baseline is two exact sample sets.")


@st.fragment
def field_view(scenes: dict):
    st.subheader("Vector field at timestep t")
    left, right = st.columns([3, 2])
    t = left.slider("timestep t", 0, schedule.T - 1, 500, 10, key="field_t",
                    help="Timestep of the field (999 = pure noise, 0 = data). Reruns this view only.")
    heat = right.selectbox("heatmap", list(HEAT_OPTIONS), format_func=HEAT_OPTIONS.get, key="field_heat",
                           help="Colour map under the arrows: the rule's negative weight at x_t.")
    toggles = st.columns(len(FIELD_TOGGLES))
    shown = [name for col, (name, label) in zip(toggles, FIELD_TOGGLES.items())
             if col.checkbox(label, name in ("guided", "term"), key=f"show.{name}",
                             help=f"Draw the {label} field.")]
    cols = columns_for(scenes)
    maps = {side: field_at(scenes[side].to_json(), int(t)) for side in cols}
    zmax = max([float(np.nanmax(f[heat])) for f in maps.values() if heat in f] + [1e-6])
    for side, col in cols.items():
        col.plotly_chart(field_fig(scenes[side], maps[side], heat, zmax, shown, t), theme=None,
                         config=plots.CONFIG, key=f"field.{side}")
    st.caption("Arrow length ∝ magnitude (one scale per panel, long arrows capped). The dotted red line "
               "is p(n | x_t) = ½ at this t; grey lines are the noisy density p_t(x).")


def field_fig(scene: Scene, f: dict, heat: str, zmax: float, shown: list[str], t: int):
    """The field figure of one column from its grid values."""
    mix = load_mixture(scene.preset)
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
    return plots.field_figure(u, grid_map, heat, zmax if heat != "log_p" else None, arrows,
                              2 * (u[1] - u[0]), lim, title, f["log_p"].reshape(FIELD_RES, FIELD_RES), p_neg)


def weights_view(scenes: dict, runs: dict):
    st.subheader("Weights over time")
    for side, col in columns_for(scenes).items():
        run = runs[side]
        stats = {k: v for k, v in run["stats"].items()}
        col.plotly_chart(plots.weights_figure(run["step_ts"], stats, title_of(scenes[side])), theme=None,
                         config=plots.CONFIG, key=f"weights.{side}")
    st.caption("Mean over samples (line) and 10–90 % band. nCFG keeps λ⁻ = 1 everywhere; CCFG's λ⁻ "
               "drops to 0 once a sample no longer resembles the negative concept.")


def outcome_view(scenes: dict, runs: dict):
    st.subheader("Outcome against the ideal target")
    for side, col in columns_for(scenes).items():
        scene, run = scenes[side], runs[side]
        bg = background(scene.preset, scene.positive, scene.negative)
        col.plotly_chart(plots.outcome_figure(bg["u"], bg["log_p_target"], run["x0"], run["labels"],
                                              bg["lim"], title_of(scene)), theme=None,
                         config=plots.CONFIG, key=f"outcome.{side}")
    st.caption("Blue contours: the ideal target p(x | positive, ¬negative) at t = 0.")


if __name__ == "__main__":
    main()
