"""Exact metrics of final samples (MATH §4): leakage, alignment, off-support, NLL, energy distance."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import assets, exact, mixtures
from .mixtures import Mixture

DIVERGED_RADIUS = 1e3  # a sample this far from the origin (or non-finite) counts as diverged
_THRESHOLD_SAMPLES = 100_000
THRESHOLDS = assets.path("thresholds.json")
ENERGY_MAX = 5000  # energy distances use at most this many samples (pairwise matrices are N²)


@jax.jit
def diverged(x: jax.Array) -> jax.Array:
    """(N,) bool: a coordinate is non-finite or the sample left the disc of radius DIVERGED_RADIUS."""
    x = jnp.asarray(x)
    return ~jnp.all(jnp.isfinite(x), -1) | (
        jnp.linalg.norm(jnp.nan_to_num(x), axis=-1) > DIVERGED_RADIUS
    )


def off_support_threshold(mix: Mixture) -> float:
    """The 0.1 % quantile of log p(x) over exact data samples (fixed key): the support's edge."""
    x = mixtures.sample(jax.random.key(0), mix, _THRESHOLD_SAMPLES)
    return float(np.quantile(np.asarray(exact.log_prob(mix, x)), 0.001))


_BLOCK = 1024  # rows of x per block of pairwise distances (B × M floats at a time)
BASELINE_DRAWS = 32  # independent exact-vs-exact energies behind the baseline's mean and sd


@functools.partial(jax.jit, static_argnames="exclude_diagonal")
def _sum_dist(a, b, exclude_diagonal: bool = False) -> jax.Array:
    """Σ_ij ‖a_i − b_j‖ from the coordinate differences themselves, B rows of a at a time (no
    ‖a‖² + ‖b‖² − 2a·b cancellation, whose float32 error on the diagonal alone is ~1e-3 per pair).

    exclude_diagonal (a is b): the pairs i = j are left out by index, whatever their value."""
    n = a.shape[0]
    pad = -n % _BLOCK if n > _BLOCK else 0
    size = min(n, _BLOCK)
    rows = jnp.pad(a, ((0, pad), (0, 0))).reshape(-1, size, 2)
    index = jnp.arange(n + pad).reshape(-1, size)

    def block(args):
        x, i = args
        d0, d1 = x[:, 0:1] - b[None, :, 0], x[:, 1:2] - b[None, :, 1]  # (B, M) each
        keep = (i < n)[:, None]  # padding rows
        if exclude_diagonal:
            keep = keep & (i[:, None] != jnp.arange(b.shape[0])[None])
        return jnp.sum(jnp.where(keep, jnp.sqrt(d0 * d0 + d1 * d1), 0.0))

    return jnp.sum(jax.lax.map(block, (rows, index)))


def _centred(*sets):
    """The sets shifted by one common centre (the mean of the last): the distances are unchanged,
    and the coordinates whose differences are taken sit near 0 wherever the mixture lies."""
    centre = jnp.mean(sets[-1], 0)
    return [s - centre for s in sets]


def _self_mean(y) -> jax.Array:
    """mean_{i≠j} ‖y_i − y_j‖ (the U-statistic's within-set term; NaN for fewer than 2 points)."""
    n = y.shape[0]
    return _sum_dist(y, y, exclude_diagonal=True) / (n * (n - 1))


def _cross_mean(x, y) -> jax.Array:
    return _sum_dist(x, y) / (x.shape[0] * y.shape[0])


@jax.jit
def energy_distance_u(x: jax.Array, y: jax.Array) -> jax.Array:
    """Unbiased (U-statistic) energy distance 2·mean‖X−Y‖ − mean_{i≠j}‖X_i−X_j‖ −
    mean_{i≠j}‖Y_i−Y_j‖ between two sample sets (MATH §4), the `energy` metric: its expectation
    is the energy distance itself, 0 for equal distributions, so one estimate can be slightly
    negative. NaN when a set has fewer than 2 points (no pairs)."""
    x, y = _centred(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    return 2 * _cross_mean(x, y) - _self_mean(x) - _self_mean(y)


@jax.jit
def energy_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """The biased V-statistic 2·mean‖X−Y‖ − mean‖X−X'‖ − mean‖Y−Y'‖ (diagonals included): its
    expectation exceeds the energy distance by E‖X−X'‖/n + E‖Y−Y'‖/m > 0. Not toydiff's metric
    (that is energy_distance_u); kept for tests that compare with a V-statistic baseline."""
    x, y = _centred(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    return 2 * _cross_mean(x, y) - _sum_dist(x, x) / len(x) ** 2 - _sum_dist(y, y) / len(y) ** 2


def _finite(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x[np.all(np.isfinite(x), -1)]


class Reference(NamedTuple):
    """What every evaluation of one target shares: exact target samples and the baselines."""

    threshold: float  # off-support threshold of the mixture
    target: jax.Array  # (M, 2) exact samples of p(x | p, ¬n)
    target_self: float  # mean_{i≠j} ‖Y_i − Y_j‖ over the target samples
    baseline: float  # mean energy of BASELINE_DRAWS independent exact-vs-exact pairs of sets
    baseline_sd: float  # their sample standard deviation (ddof 1): the estimator's own noise


def reference(
    mix: Mixture,
    positive=None,
    negative=None,
    n: int = 2000,
    threshold: float | None = None,
    key: jax.Array | None = None,
    draws: int = BASELINE_DRAWS,
) -> Reference:
    """The shared part of `evaluate` for n samples (n is capped at ENERGY_MAX): the target set, and
    the exact-vs-exact baseline as mean and sd over `draws` (≥ 5) independent pairs of exact sets
    of n samples each (X_d, Y_d), the sizes of `evaluate`'s samples and target set.

    Each pair has its own target set Y_d: an energy against the one target set is one draw of this
    distribution (mean 0, the U-statistic is unbiased). Against one fixed Y, fresh X alone would
    share that set's own offset (on `ring` at n = 2000: −0.001, with an sd of 0.0018 over 100 X)
    and leave its variance out of the sd."""
    if draws < 5:
        raise ValueError(f"draws: the baseline needs at least 5 draws, got {draws}")
    key = jax.random.key(1) if key is None else key
    n = min(n, ENERGY_MAX)
    threshold = off_support_threshold(mix) if threshold is None else threshold
    if not np.any(np.isfinite(np.asarray(mixtures.log_weights(mix, positive, negative)))):
        nan = float("nan")  # p(x | p, ¬n) has no mass: no target, no distance to it
        return Reference(threshold, jnp.zeros((0, 2), jnp.float32), nan, nan, nan)
    target = mixtures.sample(key, mix, n, positive, negative)
    pairs = mixtures.sample(jax.random.fold_in(key, 1), mix, 2 * draws * n, positive, negative)
    base = np.asarray(_null_energies(pairs.reshape(draws, 2, n, 2)), np.float64)
    return Reference(
        threshold,
        target,
        float(_self_mean(_centred(target)[0])),
        float(np.mean(base)),
        float(np.std(base, ddof=1)),
    )


@jax.jit
def _null_energies(pairs) -> jax.Array:
    """(D,) energy_distance_u of each pair of sets in pairs (D, 2, n, 2), one pair at a time."""
    return jax.lax.map(lambda p: energy_distance_u(p[0], p[1]), pairs)


@jax.jit
def _energy_to(x, target, target_self):
    """energy_distance_u(x, target) with the target's within-set term given (computed once)."""
    x, target = _centred(x, target)
    return 2 * _cross_mean(x, target) - _self_mean(x) - target_self


_REFERENCES: dict = {}  # (fingerprint, positive, negative, n, threshold) -> Reference, newest last


def _reference_cached(mix, positive, negative, n, threshold) -> Reference:
    """reference() with the default key, kept for the last 16 targets: evaluate without a ref
    (scene.run) no longer draws the baseline's exact sets again for every run of one target."""
    key = (fingerprint(mix), positive, negative, min(n, ENERGY_MAX), threshold)
    if key not in _REFERENCES:
        _REFERENCES[key] = reference(mix, positive, negative, n, threshold)
        while len(_REFERENCES) > 16:
            _REFERENCES.pop(next(iter(_REFERENCES)))
    return _REFERENCES[key]


def evaluate(
    mix: Mixture,
    x0,
    positive=None,
    negative=None,
    threshold: float | None = None,
    ref: Reference | None = None,
) -> dict[str, float]:
    """Every MATH §4 metric of final samples x0 (N, 2) as Python numbers, NaN where undefined:
    leakage without a negative concept, alignment without a positive one, nll with no finite
    sample, energy with fewer than 2 finite samples (the U-statistic's within-set mean has no
    pair), energy and its baseline when the target p(x | p, ¬n) is empty or for fewer than 2
    samples. Metrics are of the finite samples; the others are counted in non_finite (and
    diverged) and as off-support."""
    x0 = np.asarray(x0, np.float32)
    finite = _finite(x0)
    ref = _reference_cached(mix, positive, negative, len(x0), threshold) if ref is None else ref
    log_p = np.asarray(exact.log_prob(mix, finite)) if len(finite) else np.zeros(0)
    post = lambda c: (
        np.asarray(exact.posterior(mix, finite, 1.0, c)) if len(finite) else np.zeros(0)
    )
    # the U-statistic needs two points in each set for its within-set means: NaN below that
    # (undefined), and for an empty target (a concept whose removal leaves no component)
    energy = (
        _energy_to(finite[:ENERGY_MAX], ref.target, ref.target_self)
        if len(finite) >= 2 and len(ref.target) >= 2
        else np.nan
    )
    out = {
        "n": len(x0),
        "diverged": int(np.sum(np.asarray(diverged(x0)))),
        "non_finite": len(x0) - len(finite),
        "off_support": float((np.sum(log_p < ref.threshold) + len(x0) - len(finite)) / len(x0)),
        "nll": float(-np.mean(log_p)) if len(finite) else float("nan"),
        "energy": float(energy),
        "energy_baseline": ref.baseline,
        "energy_baseline_sd": ref.baseline_sd,
    }
    mean = lambda v: float(np.mean(v)) if len(finite) else float("nan")  # no finite sample
    if negative is not None:
        out["leakage"], out["leakage_hard"] = mean(post(negative)), mean(post(negative) > 0.5)
    else:
        out["leakage"] = out["leakage_hard"] = float("nan")
    out["alignment"] = mean(post(positive)) if positive is not None else float("nan")
    return out


OUTCOME_COLORS = {"allowed": "#2b8cbe", "leaked": "#e34a33", "off-support": "#636363"}


def outcomes(mix: Mixture, x0, negative, threshold: float) -> np.ndarray:
    """(N,) labels: 'off-support' (log p below threshold or non-finite), 'leaked' (p(n|x) > ½), 'allowed'."""
    x0 = np.nan_to_num(np.asarray(x0, np.float32), nan=1e6, posinf=1e6, neginf=-1e6)
    log_p = np.asarray(exact.log_prob(mix, x0))
    leaked = (
        np.asarray(exact.posterior(mix, x0, 1.0, negative)) > 0.5 if negative is not None else 0
    )
    return np.where(log_p < threshold, "off-support", np.where(leaked, "leaked", "allowed"))


def fingerprint(mix: Mixture) -> str:
    """Digest of a mixture's parameters and concept names: says whether a stored value is its own."""
    h = hashlib.sha1("\0".join(mix.concepts).encode())
    for a in (mix.means, mix.covs, mix.weights, mix.membership):
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()[:16]


def _shipped_thresholds() -> dict:
    try:
        return json.loads(THRESHOLDS.read_text())
    except (OSError, ValueError):
        return {}  # missing or corrupt: every threshold is computed instead


@functools.lru_cache(maxsize=32)
def preset_threshold(name: str) -> float:
    """off_support_threshold of a preset: the value in pretrained/thresholds.json when it was
    computed for this very mixture (same fingerprint), else computed (once per process)."""
    mix = mixtures.preset(name)
    shipped = _shipped_thresholds().get(name, {})
    if shipped.get("fingerprint") == fingerprint(mix):
        return float(shipped["threshold"])
    return off_support_threshold(mix)


def write_thresholds(path: Path = THRESHOLDS) -> dict:
    """Computes every preset's threshold and writes pretrained/thresholds.json (`python -m toydiff
    thresholds`): the app then skips 100 000 exact samples per preset on a cold start."""
    out = {}
    for name in mixtures.PRESETS:
        mix = mixtures.preset(name)
        out[name] = {"threshold": off_support_threshold(mix), "fingerprint": fingerprint(mix)}
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out
