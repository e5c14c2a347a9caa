"""Sweeps of γ (and τ) for one or more rules: the leakage / off-support trade-off curves."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import guidance, metrics, sampler
from .scene import Scene, denoiser

GAMMAS = tuple(float(g) for g in np.round(np.geomspace(0.1, 10.0, 16), 4))
TAUS = (0.1, 0.3, 1.0, 3.0)
COLUMNS = (
    "method",
    "gamma",
    "tau",
    "leakage",
    "leakage_hard",
    "off_support",
    "energy",
    "energy_baseline",
    "energy_baseline_sd",
    "nll",
    "diverged",
    "alignment",
)


def grid_of(method: str, gammas=GAMMAS, taus=TAUS) -> list[dict]:
    """The sweep's settings: γ for every rule, and γ × τ for every rule with a knob τ."""
    params = guidance.rule(method).all_params
    scene_taus = taus if "tau" in params else (None,)
    return [
        {**({} if g is None else {"gamma": g}), **({} if t is None else {"tau": t})}
        for t, g in itertools.product(scene_taus, gammas if "gamma" in params else (None,))
    ]


def sample_grid(scene: Scene, den, mix, settings: list[dict]) -> np.ndarray:
    """(G, N, 2) final samples of the scene with each setting's knobs (overrides of the scene's,
    e.g. {"gamma": 2.0}), in one vmapped call (sampler.sample_sweep): the same initial noise and
    seed for every setting, as sampler.sample of each."""
    knobs = [scene.replace(**s).knobs() for s in settings]
    stacked = {k: jnp.asarray([kn[k] for kn in knobs], jnp.float32) for k in knobs[0]}
    key = jax.random.key(scene.seed)
    return np.asarray(
        sampler.sample_sweep(scene.sampler_config(), den, key, scene.cond(mix), stacked).x0
    )


def run_sweep(scene: Scene, methods=None, gammas=GAMMAS, taus=TAUS, progress=None) -> list[dict]:
    """Rows of COLUMNS: each method's settings sampled in one vmapped call, then exact metrics.

    progress(done, total), if given, is called after each method's samples and each row's metrics.
    """
    methods = methods or [scene.method]
    mix = scene.build_mixture()
    threshold = metrics.preset_threshold(scene.preset) if scene.preset else None
    ref = metrics.reference(mix, scene.positive, scene.negative, scene.n, threshold)
    settings = {m: grid_of(m, gammas, taus) for m in methods}
    total, done, rows = sum(len(s) + 1 for s in settings.values()), 0, []
    for method in methods:
        base = scene.replace(method=method)
        x0 = sample_grid(base, denoiser(base, mix), mix, settings[method])  # (G, N, 2)
        done += 1
        progress and progress(done, total)
        for s, x in zip(settings[method], x0):
            m = metrics.evaluate(mix, x, scene.positive, scene.negative, ref=ref)
            rows.append(
                {
                    "method": method,
                    "gamma": s.get("gamma", float("nan")),
                    "tau": s.get("tau", float("nan")),
                    **{c: m[c] for c in COLUMNS[3:]},
                }
            )
            done += 1
            progress and progress(done, total)
    return rows


def write_csv(rows: list[dict], path: Path):
    """Writes the rows as CSV with COLUMNS as the header."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
