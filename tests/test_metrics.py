"""Metrics against independent computations (MATH §4)."""

import jax
import numpy as np
from scipy.spatial.distance import cdist

import toydiff
from toydiff import metrics, mixtures

BLOBS = toydiff.preset("three_blobs")


def test_energy_distance_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (300, 2)), rng.normal(0.5, 1.2, (200, 2))
    want = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    np.testing.assert_allclose(metrics.energy_distance(x, y), want, rtol=1e-4)


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
