"""Linear targets are exact (issue 21, item 1; MATH §3.2): with the exact posterior, DNG at γ = 1
samples p(x | ¬n) and FBG the de-mixed target ∝ p(x | c) − (1 − π)p(x) where that is a density,
with a stochastic and a deterministic sampler. benchmarks/linear_targets.py runs every preset."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from toydiff import exact, mixtures
from toydiff.scene import Scene, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from linear_targets import SOFT, SOFT_PI, STEPS, N, demixed, energy_ratio, is_density  # noqa: E402


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_fbg_oracle_samples_the_demixed_target(eta):
    soft = mixtures.Mixture(**SOFT)
    assert is_density(soft, "c", SOFT_PI)
    scene = Scene.from_dict(
        dict(mixture=SOFT, method="fbg_oracle", positive="c", negative=None, pi=SOFT_PI)
        | dict(steps=STEPS, eta=eta, n=N, seed=0)
    )
    y = np.asarray(run(scene)[0].x0)
    target = lambda i: demixed(jax.random.key(300 + i), soft, "c", N, SOFT_PI)
    assert energy_ratio(y, target) <= 3.0
    # the test can fail: p(x | c) itself is far from the de-mixed target
    x = np.asarray(mixtures.sample(jax.random.key(1), soft, N, positive="c"))
    assert energy_ratio(x, target) > 30.0


@pytest.mark.parametrize("eta", [1.0, 0.0])
@pytest.mark.parametrize("negative", ["warm", "round"])
def test_dng_oracle_at_gamma_one_samples_p_x_not_n(negative, eta):
    mix = mixtures.preset("overlap")  # overlapping concepts: p(x | ¬n) is not a sub-mixture
    scene = Scene.from_dict(
        dict(preset="overlap", method="dng_oracle", negative=negative, positive=None)
        | dict(gamma=1.0, p_max=0.999, steps=STEPS, eta=eta, n=N, seed=0)
    )
    result, m = run(scene)
    target = lambda i: mixtures.sample(jax.random.key(100 + i), mix, N, negative=negative)
    assert energy_ratio(np.asarray(result.x0), target) <= 3.0
    ideal = float(np.mean(np.asarray(exact.posterior(mix, target(0), 1.0, negative))))
    assert abs(m["leakage"] - ideal) <= 0.02  # 0.01 in the issue; the ideal's own sd ≈ 0.007
