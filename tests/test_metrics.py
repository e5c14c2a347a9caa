"""Metrics against independent computations (MATH §4)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

import toydiff
from toydiff import metrics, mixtures
from toydiff.scene import Scene, run

BLOBS = toydiff.preset("three_blobs")


def test_v_statistic_energy_distance_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (300, 2)), rng.normal(0.5, 1.2, (200, 2))
    want = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    np.testing.assert_allclose(metrics.energy_distance(x, y), want, rtol=1e-4)


def _u_statistic_loop(x, y) -> float:
    """The unbiased energy distance by an explicit float64 double loop over the pairs (MATH §4)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    dist = lambda a, b: float(np.sqrt(np.sum((a - b) ** 2)))
    cross = sum(dist(a, b) for a in x for b in y) / (len(x) * len(y))
    within = lambda s: sum(dist(s[i], s[j]) for i, j in itertools.permutations(range(len(s)), 2))
    return 2 * cross - within(x) / (len(x) * (len(x) - 1)) - within(y) / (len(y) * (len(y) - 1))


@pytest.mark.parametrize(
    "n, m, offset, scale",
    [
        (2, 2, 0.0, 1.0),
        (3, 7, 0.0, 1.0),
        (40, 33, 0.0, 1.0),
        (1100, 2, 0.0, 1.0),
        (25, 30, 900.0, 0.01),
    ],
)
def test_energy_u_statistic_is_the_double_loop(n, m, offset, scale):
    # 1100 rows span two blocks of pairwise distances; the last case sits 900 from the origin
    # with spread 0.01, where ‖a‖² + ‖b‖² − 2a·b in float32 would lose every digit
    rng = np.random.default_rng(n)
    x = (offset + scale * rng.normal(0, 1, (n, 2))).astype(np.float32)
    y = (offset + scale * rng.normal(0.3, 1.5, (m, 2))).astype(np.float32)
    want = _u_statistic_loop(x, y) if n * m < 10_000 else None
    if want is None:  # the large set: the same sums by scipy, still float64
        want = (
            2 * cdist(x, y).mean()
            - cdist(x, x).sum() / (n * (n - 1))
            - cdist(y, y).sum() / (m * (m - 1))
        )
    got = float(metrics.energy_distance_u(x, y))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * scale)


def test_energy_u_statistic_of_a_set_with_itself_and_duplicates():
    # the diagonal is left out by index: a set against itself scores −mean_{i≠j}... + ... exactly
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (50, 2)).astype(np.float32)
    n = len(x)
    want = 2 * cdist(x, x).mean() - 2 * cdist(x, x).sum() / (n * (n - 1))  # = −2·mean_{i≠j}/n
    np.testing.assert_allclose(float(metrics.energy_distance_u(x, x)), want, rtol=1e-5)
    twice = np.concatenate([x, x])  # coincident points are pairs i ≠ j at distance 0: counted
    np.testing.assert_allclose(
        float(metrics.energy_distance_u(twice, x)), _u_statistic_loop(twice, x), rtol=1e-5
    )
    assert np.isnan(float(metrics.energy_distance_u(x[:1], x)))  # one point has no pairs


def test_energy_u_statistic_is_unbiased_and_the_v_statistic_is_not():
    # X, Y ~ N(0, I₂) independently: the energy distance is 0; X − X' ~ N(0, 2I) so
    # E‖X − X'‖ = √2·√(π/2) = √π, and the V-statistic's bias is E‖X−X'‖/n + E‖Y−Y'‖/m = √π(1/n + 1/m)
    n, m, draws = 40, 25, 4000
    keys = jax.random.split(jax.random.key(3), 2)
    xs = jax.random.normal(keys[0], (draws, n, 2))
    ys = jax.random.normal(keys[1], (draws, m, 2))
    u = np.asarray(jax.vmap(metrics.energy_distance_u)(xs, ys), np.float64)
    v = np.asarray(jax.vmap(metrics.energy_distance)(xs, ys), np.float64)
    se_u, se_v = u.std(ddof=1) / np.sqrt(draws), v.std(ddof=1) / np.sqrt(draws)
    assert abs(u.mean()) < 4 * se_u
    bias = np.sqrt(np.pi) * (1 / n + 1 / m)
    assert abs(v.mean() - bias) < 4 * se_v and bias > 20 * se_u  # a bias far beyond the noise
    np.testing.assert_allclose(v - u, np.asarray(_v_minus_u(xs, ys)), rtol=1e-4, atol=1e-6)


def _v_minus_u(xs, ys):
    """V − U from the within-set sums alone: S_x/n² − S_x/(n(n−1)) = −S_x/(n²(n−1)), same for y."""
    n, m = xs.shape[1], ys.shape[1]
    within = lambda s: jnp.sum(jnp.sqrt(jnp.sum((s[:, :, None] - s[:, None]) ** 2, -1)), (1, 2))
    return within(xs) / (n**2 * (n - 1)) + within(ys) / (m**2 * (m - 1))


def test_baseline_is_mean_and_sd_of_independent_exact_pairs():
    # one standard Gaussian component: the baseline draws are U-statistics of independent
    # N(0, I) sets, so their mean is 0 and their sd is that of many such statistics (numpy)
    mix = mixtures.Mixture(np.zeros((1, 2)), np.eye(2)[None], [1.0], [[1.0]], ("all",))
    n = 60
    ref = metrics.reference(mix, n=n, threshold=0.0, draws=64)
    rng = np.random.default_rng(0)
    null = [
        (lambda x, y: _u_statistic_cdist(x, y))(rng.normal(size=(n, 2)), rng.normal(size=(n, 2)))
        for _ in range(2000)
    ]
    sd = np.std(null, ddof=1)
    assert abs(ref.baseline) < 4 * sd / np.sqrt(64)
    assert 0.7 * sd < ref.baseline_sd < 1.3 * sd  # 64 draws: the sd is known to ≈ ±9 % (1σ)
    assert metrics.BASELINE_DRAWS >= 5
    with pytest.raises(ValueError, match="draws"):
        metrics.reference(mix, n=n, threshold=0.0, draws=4)
    # evaluate reports the reference's numbers, and its energy is the U-statistic to the target
    x = rng.normal(0.2, 1.0, (n, 2)).astype(np.float32)
    m = metrics.evaluate(mix, x, ref=metrics.reference(mix, n=n, threshold=0.0))
    default = metrics.reference(mix, n=n, threshold=0.0)
    assert (
        m["energy_baseline"] == default.baseline and m["energy_baseline_sd"] == default.baseline_sd
    )
    assert m["energy_baseline_sd"] > 0
    np.testing.assert_allclose(m["energy"], _u_statistic_cdist(x, default.target), rtol=1e-4)


def _u_statistic_cdist(x, y) -> float:
    n, m = len(x), len(y)
    return (
        2 * cdist(x, y).mean()
        - cdist(x, x).sum() / (n * (n - 1))
        - cdist(y, y).sum() / (m * (m - 1))
    )


@pytest.mark.parametrize("name", toydiff.PRESETS)
def test_unguided_exact_sampling_is_within_the_baseline_noise(name):
    # the acceptance check of the unbiased energy: 50 DDIM steps of the exact score, n = 2000
    scene = Scene.from_dict({"preset": name, "method": "none", "negative": None, "positive": None})
    _, m = run(scene)
    assert m["n"] == 2000 and m["non_finite"] == 0
    assert abs(m["energy"]) <= 3 * m["energy_baseline_sd"]
    assert abs(m["energy_baseline"]) <= 3 * m["energy_baseline_sd"] / np.sqrt(
        metrics.BASELINE_DRAWS
    )


def test_metrics_of_points_placed_by_hand():
    means = np.asarray(BLOBS.means)
    far = np.array([[50.0, 50.0], [np.nan, 0.0], [1e4, 0.0]])
    x0 = np.concatenate([np.repeat(means, [5, 3, 2], axis=0), far])  # 2 of 13 on C, 3 broken
    m = metrics.evaluate(BLOBS, x0, "A", "C")
    assert m["non_finite"] == 1 and m["diverged"] == 2  # NaN and the point beyond 1e3
    finite = (
        12  # leakage is over finite samples: C's side of the plane holds 2 + the point at x = 1e4
    )
    np.testing.assert_allclose(m["leakage_hard"], 3 / finite)
    np.testing.assert_allclose(m["alignment"], 6 / finite, atol=1e-4)  # 5 on A, and (50, 50)
    np.testing.assert_allclose(m["off_support"], 3 / 13)  # two far points + the NaN


def test_off_support_threshold_is_the_data_quantile():
    thr = metrics.off_support_threshold(BLOBS)
    x = mixtures.sample(jax.random.key(9), BLOBS, 50_000)
    m = metrics.evaluate(BLOBS, x, None, None, thr)
    np.testing.assert_allclose(m["off_support"], 0.001, atol=0.0006)
    # an isotropic 2D Gaussian's log-density quantile has a closed form: r² ~ χ²₂, P(r² > q) = e^{−q/2}
    q = -2 * np.log(0.001)
    want = np.log(1 / 3) - np.log(2 * np.pi * 0.35**2) - q / 2
    np.testing.assert_allclose(thr, want, atol=0.1)


def test_shipped_thresholds_are_the_computed_ones(tmp_path, monkeypatch):
    shipped = metrics._shipped_thresholds()
    assert set(shipped) == set(toydiff.PRESETS)
    for name in toydiff.PRESETS:  # every stored value belongs to today's mixture
        assert shipped[name]["fingerprint"] == metrics.fingerprint(toydiff.preset(name))
    for name in ("three_blobs", "ring"):  # and equals a fresh computation
        fresh = metrics.off_support_threshold(toydiff.preset(name))
        np.testing.assert_allclose(shipped[name]["threshold"], fresh, rtol=1e-5)
    # a stale fingerprint or a corrupt file is ignored: the threshold is computed again
    bad = tmp_path / "thresholds.json"
    bad.write_text('{"three_blobs": {"threshold": 99.0, "fingerprint": "stale"}}')
    monkeypatch.setattr(metrics, "THRESHOLDS", bad)
    metrics.preset_threshold.cache_clear()
    np.testing.assert_allclose(
        metrics.preset_threshold("three_blobs"), shipped["three_blobs"]["threshold"], rtol=1e-5
    )
    bad.write_text("{not json")
    assert metrics._shipped_thresholds() == {}
    metrics.preset_threshold.cache_clear()
