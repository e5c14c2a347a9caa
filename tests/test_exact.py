"""The exact oracle against autodiff, Tweedie and finiteness on the whole plane (MATH §2, §5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toydiff
from toydiff import exact, schedule


def random_mixture(rng: np.random.Generator, k: int = 5, c: int = 3) -> toydiff.Mixture:
    """Anisotropic components (random rotations and scales) and overlapping soft memberships."""
    angles = rng.uniform(0, np.pi, k)
    rot = np.stack(
        [
            np.stack([np.cos(angles), -np.sin(angles)], -1),
            np.stack([np.sin(angles), np.cos(angles)], -1),
        ],
        -2,
    )
    scales = rng.uniform(0.1, 1.5, (k, 2))
    covs = rot @ (scales[:, :, None] ** 2 * np.eye(2)) @ np.swapaxes(rot, 1, 2)
    membership = rng.uniform(0, 1, (c, k)) * (rng.uniform(size=(c, k)) < 0.7)
    membership[:, 0] = 1.0  # every concept shares component 0: overlapping concepts
    return toydiff.Mixture(
        rng.normal(0, 3, (k, 2)),
        covs,
        rng.uniform(0.2, 1, k),
        membership,
        tuple(f"c{i}" for i in range(c)),
    )


@pytest.mark.parametrize("seed", range(20))
def test_eps_equals_scaled_autodiff_score(seed):
    rng = np.random.default_rng(seed)
    mix = random_mixture(rng)
    x = jnp.asarray(rng.normal(0, 3, (64, 2)), jnp.float32)
    for alpha_bar in (0.05, 0.5, 0.97):
        for concept in (None, 0, "c2"):
            grad = jax.vmap(
                jax.grad(lambda xi: exact.log_prob(mix, xi[None], alpha_bar, concept)[0])
            )(x)
            want = -np.sqrt(1 - alpha_bar) * np.asarray(grad)
            got = np.asarray(exact.eps(mix, x, alpha_bar, concept))
            rel = np.linalg.norm(got - want) / np.linalg.norm(want)
            assert rel <= 1e-4, (alpha_bar, concept, rel)


def test_log_prob_matches_direct_gaussian_density():
    """Quadratic-feature log-density against scipy-free float64 evaluation of Σ π m N(x; √ᾱμ, S)."""
    rng = np.random.default_rng(7)
    mix = random_mixture(rng)
    x = rng.normal(0, 3, (50, 2))
    ab = 0.3
    s = ab * np.asarray(mix.covs, np.float64) + (1 - ab) * np.eye(2)
    d = x[:, None] - np.sqrt(ab) * np.asarray(mix.means, np.float64)[None]
    quad = np.einsum("nki,kij,nkj->nk", d, np.linalg.inv(s), d)
    dens = np.exp(-0.5 * quad) / (2 * np.pi * np.sqrt(np.linalg.det(s)))
    w = np.asarray(mix.weights, np.float64) * np.asarray(mix.membership, np.float64)[1]
    want = np.log(dens @ (w / w.sum()))
    got = np.asarray(exact.log_prob(mix, x, ab, 1))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_posterior_is_bayes_rule():
    """p(c | x) = p(x | c) p(c) / p(x) with p(c) = Σ_k π_k m_{c,k}."""
    mix = random_mixture(np.random.default_rng(3))
    x = np.random.default_rng(4).normal(0, 2, (40, 2))
    p_c = float(np.asarray(mix.weights) @ np.asarray(mix.membership)[2])
    want = np.exp(exact.log_prob(mix, x, 0.6, 2) - exact.log_prob(mix, x, 0.6)) * p_c
    np.testing.assert_allclose(exact.posterior(mix, x, 0.6, "c2"), want, rtol=1e-4, atol=1e-6)


def test_x0_is_posterior_mean_for_one_gaussian():
    """For one Gaussian N(μ, Σ): E[x0 | x_t] = μ + √ᾱ Σ S⁻¹ (x_t − √ᾱ μ)."""
    mu, cov = np.array([1.0, -2.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
    mix = toydiff.Mixture(mu[None], cov[None], [1.0], [[1.0]], ("only",))
    x, ab = np.random.default_rng(0).normal(0, 2, (10, 2)), 0.4
    s = ab * cov + (1 - ab) * np.eye(2)
    want = mu + np.sqrt(ab) * (x - np.sqrt(ab) * mu) @ np.linalg.solve(s, cov).T
    np.testing.assert_allclose(exact.x0(mix, x, ab), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", toydiff.PRESETS)
def test_every_exact_quantity_is_finite_on_the_plane(name):
    mix = toydiff.preset(name)
    u = np.linspace(-20, 20, 200, dtype=np.float32)
    x = np.stack(np.meshgrid(u, u), -1).reshape(-1, 2)
    ab = schedule.alpha_bars("linear")
    for t in (0, 1, 10, 500, 999):
        for concept in (None, mix.concepts[-1]):
            for value in (
                exact.log_prob(mix, x, ab[t], concept),
                exact.eps(mix, x, ab[t], concept),
                exact.x0(mix, x, ab[t], concept),
            ):
                assert np.isfinite(np.asarray(value)).all(), (name, t, concept)
        post = np.asarray(exact.posteriors(mix, x, ab[t]))
        assert np.isfinite(post).all() and post.min() >= 0 and post.max() <= 1
    assert np.isfinite(np.asarray(exact.log_prob(mix, x))).all()  # ᾱ = 1: the clean density
