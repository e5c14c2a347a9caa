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

from . import exact, mixtures
from .mixtures import Mixture

DIVERGED_RADIUS = 1e3  # a sample this far from the origin (or non-finite) counts as diverged
_THRESHOLD_SAMPLES = 100_000
THRESHOLDS = Path(__file__).resolve().parents[1] / "pretrained" / "thresholds.json"
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


@jax.jit
def _mean_dist(a, b) -> jax.Array:
    sq = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None] - 2 * a @ b.T
    return jnp.mean(jnp.sqrt(jnp.maximum(sq, 0.0)))


@jax.jit
def energy_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """Energy distance 2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖ between two sample sets (V-statistic)."""
    return 2 * _mean_dist(x, y) - _mean_dist(x, x) - _mean_dist(y, y)


def _finite(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x[np.all(np.isfinite(x), -1)]


class Reference(NamedTuple):
    """What every evaluation of one target shares: exact target samples and the baselines."""

    threshold: float  # off-support threshold of the mixture
    target: jax.Array  # (M, 2) exact samples of p(x | p, ¬n)
    target_self: float  # E‖Y−Y'‖ over the target samples
    baseline: float  # energy distance of fresh exact target samples to the target samples


def reference(
    mix: Mixture,
    positive=None,
    negative=None,
    n: int = 2000,
    threshold: float | None = None,
    key: jax.Array | None = None,
) -> Reference:
    """The shared part of `evaluate` for n samples (n is capped at ENERGY_MAX)."""
    key = jax.random.key(1) if key is None else key
    n = min(n, ENERGY_MAX)
    target = mixtures.sample(key, mix, n, positive, negative)
    fresh = mixtures.sample(jax.random.fold_in(key, 1), mix, n, positive, negative)
    threshold = off_support_threshold(mix) if threshold is None else threshold
    return Reference(
        threshold, target, float(_mean_dist(target, target)), float(energy_distance(fresh, target))
    )


@jax.jit
def _energy_to(x, target, target_self):
    return 2 * _mean_dist(x, target) - _mean_dist(x, x) - target_self


def evaluate(
    mix: Mixture,
    x0,
    positive=None,
    negative=None,
    threshold: float | None = None,
    ref: Reference | None = None,
) -> dict[str, float]:
    """Every MATH §4 metric of final samples x0 (N, 2) as Python numbers (NaN where undefined)."""
    x0 = np.asarray(x0, np.float32)
    finite = _finite(x0)
    ref = reference(mix, positive, negative, len(x0), threshold) if ref is None else ref
    log_p = np.asarray(exact.log_prob(mix, finite)) if len(finite) else np.zeros(0)
    post = lambda c: (
        np.asarray(exact.posterior(mix, finite, 1.0, c)) if len(finite) else np.zeros(0)
    )
    energy = _energy_to(finite[:ENERGY_MAX], ref.target, ref.target_self) if len(finite) else np.nan
    out = {
        "n": len(x0),
        "diverged": int(np.sum(np.asarray(diverged(x0)))),
        "non_finite": len(x0) - len(finite),
        "off_support": float((np.sum(log_p < ref.threshold) + len(x0) - len(finite)) / len(x0)),
        "nll": float(-np.mean(log_p)) if len(finite) else float("nan"),
        "energy": float(energy),
        "energy_baseline": ref.baseline,
    }
    out["leakage"] = float(np.mean(post(negative))) if negative is not None else float("nan")
    out["leakage_hard"] = (
        float(np.mean(post(negative) > 0.5)) if negative is not None else float("nan")
    )
    out["alignment"] = float(np.mean(post(positive))) if positive is not None else float("nan")
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
