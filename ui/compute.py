"""The app's cached calls into toydiff (st.cache_resource for mixtures and denoisers, st.cache_data
for numpy results), keyed by scene JSON. No math: toydiff computes, this module caches."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys

import jax
import numpy as np
import streamlit as st

import toydiff
from toydiff import denoisers, exact, fields, metrics, mixtures, sampler, schedule, sweep
from toydiff import scene as scene_mod
from toydiff.metrics import outcomes, preset_threshold
from toydiff.scene import Scene

from .state import CUSTOM
from .training import net_denoiser

MAX_FRAMES = 101  # animation frames sent to the browser (100 steps: every state)
FIELD_RES = 41  # heatmap grid; arrows on every other point (21 × 21)
BG_RES = 120
SCORE_LABELS = {"exact": "exact oracle", "learned": "learned net", "weak": "weak net"}
WEIGHT_KEYS = (
    "lam_neg",
    "p_neg",
    "p_exact",
    "scale_neg",
    "lam_pos",
    "lam_exact",
    "scale_pos",
    "push_neg",
)
# Memory bounds per server process (all sessions together); README "Deployment" lists them.
CACHE_ENTRIES = int(
    os.environ.get("TOYDIFF_CACHE_ENTRIES", "48")
)  # sampler runs (~1 MB each), metrics
CACHE_TTL = float(os.environ.get("TOYDIFF_CACHE_TTL", "0")) or None  # seconds; 0 = no expiry
RESOURCE_ENTRIES = int(os.environ.get("TOYDIFF_RESOURCE_ENTRIES", "32"))  # mixtures, denoisers


def mix_key(scene: Scene) -> str:
    """Cache key of a scene's data: the preset's name or the inline mixture's canonical JSON; a
    turned plane (rotate ≠ 0): the JSON of {preset, mixture, rotate}."""
    if scene.rotate:
        data = {"preset": scene.preset, "mixture": scene.mixture, "rotate": scene.rotate}
        return json.dumps(data, sort_keys=True)
    return scene.preset if scene.preset is not None else json.dumps(scene.mixture, sort_keys=True)


def data_of(key: str) -> dict:
    """The Scene keys preset, mixture and rotate of a mix_key."""
    if key in toydiff.PRESETS:
        return {"preset": key, "mixture": None, "rotate": 0.0}
    data = json.loads(key)
    if set(data) == {"preset", "mixture", "rotate"}:  # a mixture has other fields
        return data
    return {"preset": None, "mixture": data, "rotate": 0.0}


def run_key(scene: Scene) -> str:
    """Cache key of a sampler run: the scene JSON without the field view's t (it changes no sample)."""
    return dataclasses.replace(scene, t=500.0).to_json()


def mixture_of(scene: Scene) -> toydiff.Mixture:
    return load_mixture(mix_key(scene))


def threshold_of(scene: Scene) -> float:
    """Off-support threshold: the preset's, or computed from the inline mixture (as the CLI does)."""
    return preset_threshold(scene.preset) if scene.preset else inline_threshold(mix_key(scene))


@st.cache_resource(max_entries=RESOURCE_ENTRIES, show_spinner=False)
def load_mixture(key: str) -> toydiff.Mixture:
    """The preset mixture (key = its name) or an inline one (key = its JSON), built once."""
    if key in toydiff.PRESETS:
        return mixtures.preset(key)
    return Scene(**data_of(key)).build_mixture()


@st.cache_data(max_entries=16, show_spinner=False)
def inline_threshold(key: str) -> float:
    return metrics.off_support_threshold(load_mixture(key))


@st.cache_resource(max_entries=RESOURCE_ENTRIES, show_spinner=False)
def load_denoiser(
    key: str,
    score: str,
    delta: float,
    net: str | None = None,
    method: str = "cfg",
    weak: str | None = None,
    kind: str = "standard",
):
    """(denoiser, warning): the scene's denoiser, or the exact oracle if weights are missing/corrupt.
    net: a session-trained net's id; kind: the shipped net kind (Scene.net)."""
    mix, data = load_mixture(key), data_of(key)
    if net is not None:
        found = net_denoiser(net, mix)  # trained on the unturned data: asked in its frame
        if found is not None and data["rotate"]:
            found = denoisers.turned_denoiser(found, mix, data["rotate"])
        if found is not None:
            return found, None
        score = "learned"  # the session net is gone (store full): say so below
    preset = data["preset"]
    scene = Scene(
        **data,
        score=score,
        delta=delta,
        negative=None,
        method=method,  # its rule says which weak branch: guide, SIMS net or skipped layer
        weak=weak,
        net=kind,
    )
    try:
        if net is not None:
            raise LookupError(f"session net {net} is no longer available")
        return scene_mod.denoiser(scene, mix), None
    except Exception as e:  # missing, corrupt or unloadable weights must never take the page down
        warning = (
            f"No usable {SCORE_LABELS[score]} ({kind}) weights for '{preset or CUSTOM}' "
            f"({type(e).__name__}: {e}); using the exact oracle."
        )
        return scene_mod.denoiser(dataclasses.replace(scene, score="exact"), mix), warning


def scene_denoiser(scene: Scene, net: str | None = None):
    """(denoiser, warning) of a scene (cached): load_denoiser of its settings."""
    args = (scene.score, scene.delta, net, scene.method, scene.weak, scene.net)
    return load_denoiser(mix_key(scene), *args)


def denoiser_for(scene: Scene, net: str | None = None):
    """The scene's denoiser (cached) without the warning."""
    return scene_denoiser(scene, net)[0]


@st.cache_data(max_entries=CACHE_ENTRIES, ttl=CACHE_TTL, show_spinner="sampling…")
def simulate(scene_json: str, net: str | None = None) -> dict:
    """Sampler run of one scene, as numpy: animation frames, outcomes, weight stats, diverged count."""
    # one line per real run: benchmarks/load.py counts them (cache hits print nothing)
    digest = hashlib.sha1(scene_json.encode()).hexdigest()[:12]
    print(f"toydiff: sampled {digest} net={net}", file=sys.stderr, flush=True)
    scene = Scene.from_json(scene_json)
    mix = mixture_of(scene)
    den, warning = scene_denoiser(scene, net)
    result = sampler.sample(
        scene.sampler_config(), den, jax.random.key(scene.seed), scene.cond(mix), scene.knobs()
    )  # toydiff.run without the metrics: they come later
    traj = np.asarray(result.traj, np.float32)  # (S+1, N, 2)
    idx = np.unique(
        np.linspace(0, scene.steps, min(scene.steps + 1, MAX_FRAMES)).round().astype(int)
    )
    ts = np.append(schedule.timesteps(scene.steps), -1)  # state j sits at timestep ts[j]; -1 = x̂0
    x0 = traj[-1]
    lim = fields.extent(mix)
    info = dict(result.info)
    if "p_neg" in info:  # the posterior the rule used beside the exact one at the same x_t
        info["p_exact"] = scene_mod.exact_p_neg(scene, mix, result)
    if "log_r" in info:  # FBG: the λ it used beside the λ of the exact ratio r at the same x_t
        info["lam_exact"] = scene_mod.exact_fbg_lam(scene, mix, result)
    stats = {}
    for key in WEIGHT_KEYS:
        if key in info:
            w = np.asarray(info[key], np.float32)  # (S, N)
            band = np.nanpercentile if np.isnan(w).any() else np.percentile  # 7× faster
            stats[key] = (np.nanmean(w, 1), *band(w, [10, 90], axis=1))
    return dict(
        frames=np.clip(traj[idx], -1e4, 1e4),
        frame_ts=ts[idx],
        x0=np.clip(x0, -1e4, 1e4),
        labels=outcomes(mix, x0, scene.negative, threshold_of(scene)),
        stats=stats,
        step_ts=ts[:-1],
        warning=warning,
        lim=lim,
        x0_raw=x0,
        diverged=int(np.sum(np.asarray(metrics.diverged(x0)))),
        run_metrics=scene_mod.run_metrics(scene, mix, den, result),
    )


@st.cache_data(max_entries=CACHE_ENTRIES, ttl=CACHE_TTL, show_spinner=False)
def metrics_of(scene_json: str, net: str | None = None) -> dict:
    """metrics.evaluate of the scene's final samples (exact densities), with the target's shared
    reference (exact samples and baselines) computed once per target and sample count, and the
    run's own metrics (scene.run_metrics): the keys of toydiff.run's."""
    scene, run = Scene.from_json(scene_json), simulate(scene_json, net)
    x0 = run["x0_raw"]
    ref = reference_of(mix_key(scene), scene.positive, scene.negative, len(x0))
    out = metrics.evaluate(
        mixture_of(scene), x0, scene.positive, scene.negative, ref.threshold, ref
    )
    return {**out, **run["run_metrics"]}


@st.cache_resource(max_entries=RESOURCE_ENTRIES, show_spinner=False)
def reference_of(key: str, positive, negative, n: int) -> metrics.Reference:
    """metrics.reference of a target p(x | positive, ¬negative) for n samples (read-only)."""
    mix, preset = load_mixture(key), data_of(key)["preset"]
    threshold = preset_threshold(preset) if preset else inline_threshold(key)  # as threshold_of
    return metrics.reference(mix, positive, negative, n, threshold)


@st.cache_data(max_entries=32, show_spinner=False)
def background(
    key: str, positive: str | None, negative: str | None, lim: float | None = None
) -> dict:
    """Grid densities at t = 0 over [−lim, lim]² (default: the data's extent): log p(x),
    p(negative | x) and the ideal target log p(x | p, ¬n)."""
    mix = load_mixture(key)
    lim = fields.extent(mix) if lim is None else lim
    g = fields.grid(lim, BG_RES)
    shape = (BG_RES, BG_RES)
    target = exact.log_prob_rows(mix, g, 1.0, mixtures.log_weights(mix, positive, negative))
    return dict(
        u=np.linspace(-lim, lim, BG_RES, dtype=np.float32),
        lim=lim,
        log_p=np.asarray(exact.log_prob(mix, g)).reshape(shape),
        p_neg=None
        if negative is None
        else np.asarray(exact.posterior(mix, g, 1.0, negative)).reshape(shape),
        log_p_target=np.asarray(target).reshape(shape),
    )


@st.cache_data(max_entries=64, show_spinner=False)
def field_at(scene_json: str, t: int, net: str | None = None) -> dict:
    """fields.field of the scene on the FIELD_RES grid at timestep t, as numpy."""
    lim = fields.extent(mixture_of(Scene.from_json(scene_json)))
    return _field(scene_json, t, net, fields.grid(lim, FIELD_RES))


@st.cache_data(max_entries=CACHE_ENTRIES, ttl=CACHE_TTL, show_spinner=False)
def scrub_at(scene_json: str, net: str | None, knob: str, values: tuple[float, ...]) -> dict:
    """The scrub of one knob (issue 22): the scene's final samples at each of `values`
    (sweep.sample_grid: one vmapped call) and their outcome labels, as numpy (G, N, 2), (G, N)."""
    scene = Scene.from_json(scene_json)
    mix = mixture_of(scene)
    den, _ = scene_denoiser(scene, net)
    x0 = sweep.sample_grid(scene, den, mix, [{knob: v} for v in values])
    labels = np.stack([outcomes(mix, x, scene.negative, threshold_of(scene)) for x in x0])
    return dict(x0=np.clip(x0, -1e4, 1e4), labels=labels)


@st.cache_data(max_entries=64, show_spinner=False)
def probe_at(scene_json: str, t: int, net: str | None, point: tuple[float, float]) -> dict:
    """fields.field of the scene at one point and timestep t: the probe's exact readout."""
    return _field(scene_json, t, net, np.asarray([point], np.float32))


def _field(scene_json: str, t: int, net: str | None, x: np.ndarray) -> dict:
    scene = Scene.from_json(scene_json)
    scene = dataclasses.replace(scene, n=1, seed=0)  # fixed n: one compile per rule/steps
    mix = mixture_of(scene)
    den, _ = scene_denoiser(scene, net)
    out = fields.field(scene.sampler_config(), den, scene.cond(mix), scene.knobs(), x, float(t))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


@st.cache_data(max_entries=64, show_spinner=False)
def error_at(scene_json: str, t: int, net: str | None = None) -> np.ndarray:
    """(FIELD_RES²,) the worst relative ε error over the rule's branches at timestep t
    (fields.net_error) of the scene's learned denoiser, on the FIELD_RES grid."""
    scene = dataclasses.replace(Scene.from_json(scene_json), n=1, seed=0)
    mix = mixture_of(scene)
    den, _ = scene_denoiser(scene, net)
    g = fields.grid(fields.extent(mix), FIELD_RES)
    err = fields.net_error(scene.sampler_config(), den, scene.cond(mix), g, float(t))
    return np.asarray(err, np.float32).max(0)
