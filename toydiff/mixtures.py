"""Gaussian mixtures with named concepts (MATH §2): validation, presets and exact sampling."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from array_api_compat import array_namespace

Array = Any  # numpy | jax | torch


@dataclasses.dataclass(frozen=True, eq=False)
class Mixture:
    """K Gaussian components in R² and C concepts with soft memberships m[c, k] in [0, 1]."""

    means: Array  # (K, 2)
    covs: Array  # (K, 2, 2), SPD
    weights: Array  # (K,), normalised to sum 1
    membership: Array  # (C, K)
    concepts: tuple[str, ...]  # (C,) unique names

    def __post_init__(self):
        fields = _validated(self.means, self.covs, self.weights, self.membership, self.concepts)
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def k(self) -> int:
        """Number of components."""
        return self.means.shape[0]

    def concept_index(self, concept: int | str) -> int:
        """Index of a concept given by name or index; ValueError names the valid concepts."""
        if isinstance(concept, (int, np.integer)) and not isinstance(concept, bool):
            if 0 <= concept < len(self.concepts):
                return int(concept)
        elif concept in self.concepts:
            return self.concepts.index(concept)
        raise ValueError(f"unknown concept {concept!r}; valid: {', '.join(self.concepts)}")

    def to_dict(self) -> dict:
        """JSON-ready dict of the mixture's fields."""
        return {
            f.name: np.asarray(getattr(self, f.name)).tolist() for f in dataclasses.fields(self)
        }


# Ranges inside which every computation of the mixture stays finite in float32 (and the property
# tests draw right up to them): exact samples stay far inside metrics.DIVERGED_RADIUS (1e3),
# float32 resolves a component's spread anywhere in the box (spacing at 100: 7.6e-6, 0.8 % of the
# smallest sd), and a covariance's determinant and Cholesky factor keep ~3e-4 relative accuracy
# (at condition 1e6 the float32 determinant is off by 3 %, at 1e7 by 40 %, past it JAX's Cholesky
# returns NaN). Eigenvalue limits are checked on the float32 matrix with 1 % slack for its rounding.
MEAN_MAX = 100.0  # |coordinate| of a mean
EIG_MIN, EIG_MAX = 1e-6, 1e4  # covariance eigenvalues: sd from 1e-3 to 100
COND_MAX = 1e4  # λ_max / λ_min of a covariance
WEIGHT_RATIO_MAX = 1e6  # largest / smallest weight
_SLACK = 1.01


def _validated(means, covs, weights, membership, concepts) -> dict:
    """Float32 numpy fields after checking shapes, values and ranges; ValueError names the bad
    field (and the allowed range)."""
    concepts = tuple(concepts) if isinstance(concepts, (list, tuple)) else concepts
    if not isinstance(concepts, tuple) or not all(isinstance(c, str) and c for c in concepts):
        raise ValueError("concepts: must be a list of non-empty strings")
    if len(set(concepts)) != len(concepts):
        raise ValueError(f"concepts: names must be unique, got {list(concepts)}")
    means, covs, weights, membership = (
        _float_array(name, v)
        for name, v in zip(
            ("means", "covs", "weights", "membership"), (means, covs, weights, membership)
        )
    )
    k = means.shape[0] if means.ndim == 2 else -1
    _check(
        means.ndim == 2 and means.shape[1] == 2 and k > 0,
        "means",
        f"shape (K, 2), got {means.shape}",
    )
    _check(covs.shape == (k, 2, 2), "covs", f"shape ({k}, 2, 2), got {covs.shape}")
    _check(weights.shape == (k,), "weights", f"shape ({k},), got {weights.shape}")
    _check(
        membership.shape == (len(concepts), k),
        "membership",
        f"shape ({len(concepts)}, {k}) = (concepts, components), got {membership.shape}",
    )
    worst = float(np.max(np.abs(means)))
    _check(worst <= MEAN_MAX, "means", f"|value| must be ≤ {MEAN_MAX:g}, got {worst:g}")
    _check(bool(np.all(weights > 0)), "weights", "every weight must be > 0")
    ratio = float(weights.max() / weights.min())
    _check(
        ratio <= WEIGHT_RATIO_MAX,
        "weights",
        f"largest / smallest must be ≤ {WEIGHT_RATIO_MAX:g}, got {ratio:g}",
    )
    if weights.max() > 1e30 or weights.min() < 1e-30:  # float32 would overflow or underflow
        weights = weights / weights.max()
    weights = weights.astype(np.float32)  # normalised in float32, as ever (fingerprints)
    weights = weights / weights.sum()
    membership = membership.astype(np.float32)
    _check(
        bool(np.all((membership >= 0) & (membership <= 1))),
        "membership",
        "values must lie in [0, 1]",
    )
    _check(bool(np.all(membership @ weights > 0)), "membership", "every concept needs a component")
    covs = _checked_covs(covs)
    return dict(
        means=means.astype(np.float32),
        covs=covs,
        weights=weights,
        membership=membership,
        concepts=concepts,
    )


def _checked_covs(covs: np.ndarray) -> np.ndarray:
    """The covariances as float32 after checking symmetry and the eigenvalue ranges of that
    float32 matrix (what every computation uses)."""
    in_range = f"eigenvalues must lie in [{EIG_MIN:g}, {EIG_MAX:g}]"
    big = float(np.max(np.abs(covs)))
    _check(big <= EIG_MAX * _SLACK, "covs", f"{in_range}, got an entry of {big:g}")
    c32 = covs.astype(np.float32)
    sym = np.allclose(c32, np.swapaxes(c32, 1, 2), rtol=1e-5, atol=1e-8)
    c64 = c32.astype(np.float64)
    eig = np.linalg.eigvalsh(0.5 * (c64 + np.swapaxes(c64, 1, 2)))  # (K, 2) ascending
    lo, hi = eig[:, 0], eig[:, 1]
    _check(sym and bool(np.all(lo > 0)), "covs", "must be symmetric positive definite")
    for bad, value in ((lo < EIG_MIN / _SLACK, lo), (hi > EIG_MAX * _SLACK, hi)):
        i = int(np.argmax(bad))
        _check(not bad[i], "covs", f"{in_range}, got {value[i]:g} (component {i})")
    cond = hi / lo
    i = int(np.argmax(cond))
    _check(
        cond[i] <= COND_MAX * _SLACK,
        "covs",
        f"condition number λmax/λmin must be ≤ {COND_MAX:g}, got {cond[i]:g} (component {i})",
    )
    return c32


def _float_array(name: str, value) -> np.ndarray:
    """float64 numpy array of the value (ranges are checked before the float32 cast, so that a
    huge value is named, not silently turned into inf)."""
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: not a numeric array ({e})") from None
    _check(bool(np.all(np.isfinite(out))), name, "values must be finite")
    return out


def _check(ok: bool, name: str, what: str):
    if not ok:
        raise ValueError(f"{name}: {what}")


# Mixture is a pytree so jitted code can take it as a traced argument; unflattening bypasses
# __post_init__ because the leaves may be tracers.
def _unflatten(concepts, leaves):
    mix = object.__new__(Mixture)
    for name, leaf in zip(("means", "covs", "weights", "membership"), leaves):
        object.__setattr__(mix, name, leaf)
    object.__setattr__(mix, "concepts", concepts)
    return mix


jax.tree_util.register_pytree_node(
    Mixture, lambda m: ((m.means, m.covs, m.weights, m.membership), m.concepts), _unflatten
)


# ---------------------------------------------------------------------------------------- sampling
def log_weights(mix: Mixture, positive=None, negative=None):
    """(K,) log π_k m_{p,k} (1 − m_{n,k}): the component weights of p(x | p, ¬n) (MATH §2).

    numpy for a concrete mixture (no JAX dispatch), jax.numpy when its leaves are traced."""
    # numpy or jax.numpy themselves (both array-API namespaces): array_api_compat's numpy
    # wrapper costs ~0.25 s to import, on the app's first run
    xp = array_namespace(mix.weights, mix.membership, use_compat=False)
    logw = xp.log(mix.weights)
    with np.errstate(divide="ignore"):  # log 0 = −inf: a component outside the target
        if positive is not None:
            logw = logw + xp.log(mix.membership[mix.concept_index(positive)])
        if negative is not None:
            logw = logw + xp.log1p(-mix.membership[mix.concept_index(negative)])
    return logw


def sample(key: jax.Array, mix: Mixture, n: int, positive=None, negative=None) -> jax.Array:
    """(n, 2) exact samples of p(x), p(x | p, ¬n) or any of its parts (MATH §2)."""
    logw = log_weights(mix, positive, negative)
    if not np.any(np.isfinite(np.asarray(logw))):
        raise ValueError(f"target p(x | {positive}, not {negative}) is empty: no component left")
    return _draw(key, mix.means, mix.covs, logw, n)


_GUMBEL_MAX_K = 64  # components up to which _draw picks them by Gumbel-max (n × K draws)


@functools.partial(jax.jit, static_argnames="n")
def _draw(key, means, covs, logw, n: int) -> jax.Array:
    comp_key, noise_key = jax.random.split(key)
    if logw.shape[0] <= _GUMBEL_MAX_K:
        k = jax.random.categorical(comp_key, logw, shape=(n,))
    else:  # inverse CDF, O(n log K): Gumbel-max took 5 s for 64 000 samples of the tree's 2032
        k = _inverse_cdf(comp_key, logw, n)
    chol = jnp.linalg.cholesky(covs)
    z = jax.random.normal(noise_key, (n, 2))
    return means[k] + jnp.einsum("nij,nj->ni", chol[k], z)


def _inverse_cdf(key, logw, n: int) -> jax.Array:
    """(n,) component indices with probabilities softmax(logw), by a search in the CDF; a
    component of weight 0 (an empty interval) is never drawn, nor past the last positive one."""
    cdf = jnp.cumsum(jax.nn.softmax(logw))
    k = jnp.searchsorted(cdf, jax.random.uniform(key, (n,)) * cdf[-1], side="right")
    last = logw.shape[0] - 1 - jnp.argmax(jnp.isfinite(logw[::-1]))
    return jnp.minimum(k, last)


# ----------------------------------------------------------------------------------------- presets
class Preset(NamedTuple):
    build: Callable[[], Mixture]
    description: str  # what it teaches, one line
    negative: str | None  # default concepts for the app and scenes
    positive: str | None = None


def _iso(means, std, membership, concepts, weights=None) -> Mixture:
    means = np.asarray(means, np.float32)
    k = len(means)
    std = np.broadcast_to(np.asarray(std, np.float32), (k,))
    covs = np.eye(2, dtype=np.float32) * (std**2)[:, None, None]
    return Mixture(means, covs, np.ones(k) if weights is None else weights, membership, concepts)


def _ring_points(n: int, radius: float, phase: float = np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def three_blobs() -> Mixture:
    """Three separated classes A, B, C on a circle of radius 2.5."""
    return _iso(_ring_points(3, 2.5), 0.35, np.eye(3), ("A", "B", "C"))


def ring() -> Mixture:
    """8 modes on a ring of radius 3; concepts 'even' and 'odd' interleave."""
    return _iso(_ring_points(8, 3.0), 0.3, [[1, 0] * 4, [0, 1] * 4], ("even", "odd"))


def overlap() -> Mixture:
    """Four modes; 'warm' and 'round' share the middle mode, with soft memberships elsewhere."""
    means = [(-2.5, 0.0), (0.0, 0.0), (2.5, 0.0), (0.0, 2.5)]
    membership = [[1.0, 1.0, 0.0, 0.3], [0.0, 1.0, 1.0, 0.7]]
    return _iso(means, 0.4, membership, ("warm", "round"))


def nested() -> Mixture:
    """A 'center' blob surrounded by four 'outer' blobs: the negative sits between allowed modes."""
    means = [(0.0, 0.0), *_ring_points(4, 2.5, np.pi / 4)]
    return _iso(
        means,
        [0.5, 0.35, 0.35, 0.35, 0.35],
        [[1, 0, 0, 0, 0], [0, 1, 1, 1, 1]],
        ("center", "outer"),
        weights=[2, 1, 1, 1, 1],
    )


def grid() -> Mixture:
    """5×5 modes with spacing 2; concepts are rows (row0..row4) and columns (col0..col4)."""
    ij = np.stack(np.meshgrid(np.arange(5), np.arange(5), indexing="ij"), -1).reshape(-1, 2)
    means = 2.0 * (ij[:, ::-1] - 2) * np.array([1, -1])  # row 0 on top
    rows = (ij[None, :, 0] == np.arange(5)[:, None]).astype(np.float32)
    cols = (ij[None, :, 1] == np.arange(5)[:, None]).astype(np.float32)
    names = tuple(f"row{i}" for i in range(5)) + tuple(f"col{j}" for j in range(5))
    return _iso(means, 0.25, np.concatenate([rows, cols]), names)


def tree(depth: int = 7, seed: int = 0) -> Mixture:
    """Two fractal trees A and B of thin anisotropic components (MATH §6), 1016 components each."""
    rng = np.random.default_rng(seed)
    origin, scale = np.array([0.0030, 0.0325]), np.array([1.3136, 1.3844])
    parts = [_branches(rng, origin, angle, depth, scale) for angle in (np.pi / 4, 5 * np.pi / 4)]
    means, covs, weights = (np.concatenate([p[i] for p in parts]) for i in range(3))
    k = len(parts[0][0])
    membership = np.repeat(np.eye(2), k, axis=1)
    return Mixture(means, covs, weights, membership, ("A", "B"))


def _branches(rng, origin, angle0, depth, scale):
    """Means, covs and weights of one tree: 8 components per branch along each segment."""
    frac = np.linspace(0.07, 0.93, 8)
    means, covs, weights, stack = [], [], [], [(origin, angle0, 0)]
    while stack:
        pos, angle, d = stack.pop(0)
        dist = 0.292 * 0.8**d * (1 + 0.2 * rng.standard_normal())
        thick = 0.2 * 0.8**d / dist
        u = np.array([np.cos(angle), np.sin(angle)])
        size = scale * dist * 0.06
        proj = np.outer(u, u)
        cov = (proj + (np.eye(2) - proj) * thick**2) * np.outer(size, size)
        means.append((pos + u * dist * frac[:, None]) * scale)
        covs.append(np.repeat(cov[None], 8, axis=0))
        weights.append(np.full(8, dist * 0.5**d))
        if d + 1 < depth:
            for sign in (1, -1):
                stack.append(
                    (
                        pos + u * dist,
                        angle + sign * 0.7**d * (1 + 0.2 * rng.standard_normal()),
                        d + 1,
                    )
                )
    return np.concatenate(means), np.concatenate(covs), np.concatenate(weights)


_PRESETS = {
    "three_blobs": Preset(
        three_blobs, "Negate one of three classes: the basic nCFG-vs-CCFG picture.", "C"
    ),
    "ring": Preset(
        ring, "Negate every other mode of a ring: repulsion between interleaved modes.", "odd"
    ),
    "overlap": Preset(
        overlap, "Negate a concept that shares a mode: soft memberships and leakage.", "warm"
    ),
    "nested": Preset(
        nested, "The negative sits between the allowed modes: nCFG tears samples apart.", "center"
    ),
    "grid": Preset(
        grid,
        "5×5 modes, rows and columns as concepts: positive and negative together.",
        "col2",
        "row1",
    ),
    "tree": Preset(
        tree, "Two fractal trees of thin components: where guidance loses the fine branches.", "B"
    ),
}
PRESETS = tuple(_PRESETS)
DESCRIPTIONS = {name: p.description for name, p in _PRESETS.items()}


def preset_info(name: str) -> Preset:
    """The preset's builder, description and default concepts; ValueError lists valid names."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return _PRESETS[name]


def preset(name: str) -> Mixture:
    """The named preset mixture; unknown name -> ValueError listing the valid names."""
    return preset_info(name).build()


def extent(mix) -> float:
    """Half-width of a square view that holds the data with a margin."""
    means = np.asarray(mix.means)
    spread = np.sqrt(np.max(np.asarray(mix.covs)[:, [0, 1], [0, 1]]))
    return float(np.ceil(np.max(np.abs(means)) + 4 * spread + 0.5))


def rotation(degrees: float) -> np.ndarray:
    """(2, 2) float64 R turning the plane counter-clockwise by `degrees` about the origin."""
    th = np.deg2rad(degrees)
    return np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])


def rotated(mix: Mixture, degrees: float) -> Mixture:
    """The mixture turned about the origin: means R μ, covariances R Σ Rᵀ (weights, memberships
    and concepts kept). Rules built from norms and inner products do not notice; element-wise
    ones (SLD) do."""
    rot = rotation(degrees)
    covs = np.einsum("ij,kjl,ml->kim", rot, np.asarray(mix.covs, np.float64), rot)
    return dataclasses.replace(
        mix, means=np.asarray(mix.means) @ rot.T, covs=(covs + covs.transpose(0, 2, 1)) / 2
    )
