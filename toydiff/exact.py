"""The exact noisy mixture (MATH §2): log p_t, ε*, x̂0 and p(c | x_t), in log space, finite everywhere.

Log-densities take the quadratic form of the differences x − √ᾱ μ_k as (N, K) elementwise arrays:
mixtures of thousands of components (`tree`) stay interactive, and float32 keeps its accuracy
wherever a mixture lies (the expanded form xᵀPx − 2xᵀPμ + μᵀPμ did not).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from array_api_compat import array_namespace

from .mixtures import Array, Mixture

_LOG_2PI = math.log(2 * math.pi)


def concept_table(mix: Mixture) -> jax.Array:
    """(C+1, K) log π_k m_{c,k} per concept, last row log π_k (the null concept ∅); numpy for a
    concrete mixture (no JAX dispatch), jax.numpy when its leaves are traced."""
    # numpy or jax.numpy themselves (both array-API namespaces): array_api_compat's numpy
    # wrapper costs ~0.25 s to import, on the app's first run
    xp = array_namespace(mix.weights, mix.membership, use_compat=False)
    logw = xp.log(mix.weights)
    with np.errstate(divide="ignore"):
        return xp.concat([logw + xp.log(mix.membership), logw[None]], axis=0)


def _concept_logw(mix: Mixture, concept) -> jax.Array:
    """(K,) log-weights of p(x | concept); None is the unconditional mixture."""
    row = len(mix.concepts) if concept is None else mix.concept_index(concept)
    return concept_table(mix)[row]


def blur(mix: Mixture, delta) -> Mixture:
    """The weak model of MATH §2: the same mixture with Σ_k + δ² I (δ may be traced)."""
    leaves, treedef = jax.tree_util.tree_flatten(mix)
    leaves[1] = leaves[1] + jnp.asarray(delta, jnp.float32) ** 2 * jnp.eye(2)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _noisy(mix: Mixture, alpha_bar):
    """Means √ᾱ μ_k (K,2), precisions S_k⁻¹ (K,2,2) and log det S_k (K,), S_k = ᾱΣ_k + (1−ᾱ)I."""
    ab = jnp.asarray(alpha_bar, jnp.float32)
    s = ab * jnp.asarray(mix.covs) + (1 - ab) * jnp.eye(2)
    det = s[:, 0, 0] * s[:, 1, 1] - s[:, 0, 1] * s[:, 1, 0]
    adj = jnp.stack(
        [jnp.stack([s[:, 1, 1], -s[:, 0, 1]], -1), jnp.stack([-s[:, 1, 0], s[:, 0, 0]], -1)], 1
    )
    return jnp.sqrt(ab) * jnp.asarray(mix.means), adj / det[:, None, None], jnp.log(det)


_X_MAX = 1e15  # |coordinate| at which densities are evaluated: d² P_k stays below float32's max


def _component_logits(mix: Mixture, x: Array, alpha_bar):
    """(N, K) log N(x; √ᾱ μ_k, S_k), plus the noisy precisions and P_k √ᾱ μ_k.

    The quadratic form is taken of the differences d = x − √ᾱ μ_k themselves: the expansion
    xᵀPx − 2xᵀPμ + μᵀPμ cancels in float32 (12 nats wrong at a component of sd 1e-3 ten units
    from the origin) and costs the same here. Points past _X_MAX (samples that diverged far beyond
    metrics.DIVERGED_RADIUS) are evaluated at that radius, so that the logits stay finite."""
    m, prec, logdet = _noisy(mix, alpha_bar)
    pm = jnp.einsum("kij,kj->ki", prec, m)  # (K, 2)
    x = jnp.clip(jnp.asarray(x, jnp.float32), -_X_MAX, _X_MAX)  # (N, 2): cheap, unlike (N, K)
    d0, d1 = x[:, None, 0] - m[None, :, 0], x[:, None, 1] - m[None, :, 1]  # (N, K)
    cross = prec[:, 0, 1] + prec[:, 1, 0]
    quad = prec[:, 0, 0] * d0 * d0 + cross * d0 * d1 + prec[:, 1, 1] * d1 * d1
    return -0.5 * quad - 0.5 * logdet - _LOG_2PI, prec, pm


@jax.jit
def _log_prob(mix, x, alpha_bar, logw):
    logits, _, _ = _component_logits(mix, x, alpha_bar)
    norm = jax.nn.logsumexp(jnp.broadcast_to(logw, logits.shape), axis=-1)  # log p(c)
    return jax.nn.logsumexp(logits + logw, axis=-1) - norm


@jax.jit
def _eps(mix, x, alpha_bar, logw):
    """(N, 2) ε* = √(1−ᾱ) Σ_k r_k S_k⁻¹(x − √ᾱ μ_k) with r = softmax(logits + logw) (MATH §2)."""
    logits, prec, pm = _component_logits(mix, x, alpha_bar)
    r = jax.nn.softmax(logits + logw, axis=-1)  # (N, K)
    prec_x = (r @ prec.reshape(-1, 4)).reshape(-1, 2, 2)  # (N, 2, 2) Σ_k r_k S_k⁻¹
    score = -(jnp.einsum("nij,nj->ni", prec_x, x) - r @ pm)  # ∇ log p_t
    return -jnp.sqrt(1 - jnp.asarray(alpha_bar, jnp.float32)) * score


@functools.partial(jax.jit, static_argnames="column")
def _posterior(mix, x, alpha_bar, column=None):
    """(N, C) p(c | x_t) = Σ_k r_k(x_t) m_{c,k} for every concept, or (N,) for one column."""
    logits, _, _ = _component_logits(mix, x, alpha_bar)
    r = jax.nn.softmax(logits + jnp.log(jnp.asarray(mix.weights)), axis=-1)
    m = jnp.asarray(mix.membership)
    return jnp.clip(r @ (m.T if column is None else m[column]), 0.0, 1.0)


def log_prob(mix: Mixture, x: Array, alpha_bar=1.0, concept=None) -> jax.Array:
    """(N,) log p_t(x | c), c = None (unconditional), a concept index or a name."""
    return _log_prob(mix, x, alpha_bar, _concept_logw(mix, concept))


def log_prob_rows(mix: Mixture, x: Array, alpha_bar, logw: Array) -> jax.Array:
    """(N,) log p_t(x) of the mixture re-weighted by component log-weights logw (K,) or (N, K)."""
    return _log_prob(mix, x, alpha_bar, logw)


def eps(mix: Mixture, x: Array, alpha_bar, concept=None) -> jax.Array:
    """(N, 2) exact ε*(x_t, c) = −√(1−ᾱ) ∇ log p_t(x_t | c)."""
    return _eps(mix, x, alpha_bar, _concept_logw(mix, concept))


def eps_rows(mix: Mixture, x: Array, alpha_bar, logw: Array) -> jax.Array:
    """(N, 2) exact ε* with per-sample component log-weights logw (N, K) (rows of concept_table)."""
    return _eps(mix, x, alpha_bar, logw)


def x0(mix: Mixture, x: Array, alpha_bar, concept=None) -> jax.Array:
    """(N, 2) Tweedie estimate x̂0 = (x_t − √(1−ᾱ) ε*) / √ᾱ = E[x_0 | x_t, c]."""
    ab = jnp.asarray(alpha_bar, jnp.float32)
    return (jnp.asarray(x) - jnp.sqrt(1 - ab) * eps(mix, x, ab, concept)) / jnp.sqrt(ab)


def posterior(mix: Mixture, x: Array, alpha_bar, concept) -> jax.Array:
    """(N,) p(c | x_t) = Σ_k r_k(x_t) m_{c,k}."""
    return _posterior(mix, x, alpha_bar, mix.concept_index(concept))


def posteriors(mix: Mixture, x: Array, alpha_bar) -> jax.Array:
    """(N, C) p(c | x_t) for every concept."""
    return _posterior(mix, x, alpha_bar)
