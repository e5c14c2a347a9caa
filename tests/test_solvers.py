"""Solvers and noise paths (issue "Open seams", item 4; docs/MATH.md §3.4) against closed forms.

A single Gaussian N(μ, s²I) has a closed-form probability-flow ODE: in VE coordinates
x/√ᾱ = μ + √(s² + σ²) z, so the deterministic map from x_T to x_0 is
x_0 = μ + s/√(s² + σ_T²) (x_T/√ᾱ_T − μ). Every deterministic solver converges to it: DDIM (η = 0),
Euler and flow Euler at first order, Heun at second.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toydiff
from toydiff import denoisers, guidance, sampler, schedule, solvers
from toydiff.scene import Scene, run

MU, S = np.array([1.5, -0.5]), 0.3
GAUSS = toydiff.Mixture([MU], [S**2 * np.eye(2)], [1.0], [[1.0]], ("g",))
GRIDS = {"ddim": solvers.vp_grid, "heun": solvers.karras_grid, "euler": solvers.karras_grid}


def _pf_error(solver: str, steps: int) -> float:
    """Max |x_0 − closed form| of unguided sampling of GAUSS with η = 0, from the same x_T."""
    cfg = sampler.SamplerConfig("none", steps=steps, n=256, solver=solver)
    res = sampler.sample(
        cfg,
        denoisers.exact_denoiser(GAUSS),
        jax.random.key(0),
        sampler.Cond(0, 0),
        sampler.default_knobs("none"),
    )
    ab_T = float(cfg.levels()[0])
    sigma_T2 = (1 - ab_T) / ab_T
    x_ve = np.asarray(res.traj[0], np.float64) / np.sqrt(ab_T)
    want = MU + S / np.sqrt(S**2 + sigma_T2) * (x_ve - MU)
    return float(np.abs(np.asarray(res.x0, np.float64) - want).max())


@pytest.mark.parametrize("solver", ["ddim", "euler", "flow_euler"])
def test_first_order_solvers_converge_to_the_closed_form(solver):
    """Error halves with each doubling of the steps (measured: ddim 0.18 / 0.092 / 0.047 at
    20 / 40 / 80 steps, euler 0.14 / 0.069 / 0.035, flow_euler 0.080 / 0.041 / 0.021)."""
    e20, e40, e80 = (_pf_error(solver, n) for n in (20, 40, 80))
    assert 0.4 < e40 / e20 < 0.6 and 0.4 < e80 / e40 < 0.6, (e20, e40, e80)
    assert e80 < 0.05


def test_heun_converges_at_second_order():
    """Error falls ~4-5× per doubling (measured 0.049 / 0.011 / 0.0021 at 20 / 40 / 80 steps),
    below Euler's at the same number of network evaluations (Heun 40 steps = 80 evaluations)."""
    e20, e40, e80 = (_pf_error("heun", n) for n in (20, 40, 80))
    assert e40 / e20 < 0.3 and e80 / e40 < 0.3, (e20, e40, e80)
    assert e40 < _pf_error("euler", 80) / 2


def test_grids_run_from_pure_noise_to_the_data():
    for name, s in solvers.SOLVERS.items():
        levels = s.grid("linear", 7)
        assert levels.shape == (8,) and levels.dtype == np.float32, name
        assert np.all(np.diff(levels) > 0) and levels[-1] == 1.0, name
        np.testing.assert_allclose(levels[0], schedule.alpha_bars("linear")[-1], rtol=1e-3)
    np.testing.assert_allclose(
        solvers.vp_grid("linear", 10)[:-1], schedule.step_alpha_bars("linear", 10)[1]
    )
    sigma = solvers.sigma_of(solvers.karras_grid("linear", 5)[:-1].astype(np.float64))
    rho = solvers.RHO  # EDM: σ^{1/ρ} is linear in the step index
    assert np.allclose(np.diff(np.diff(sigma ** (1 / rho))), 0, atol=1e-3)


def test_space_conversions_round_trip_and_match_the_exact_mixture():
    mix = toydiff.preset("three_blobs")
    x = jax.random.normal(jax.random.key(1), (64, 2)) * 3
    ab = jnp.float32(schedule.alpha_bars("linear")[400])
    eps = toydiff.exact.eps(mix, x, ab)
    np.testing.assert_allclose(
        guidance.to_space("x0", eps, x, ab), toydiff.exact.x0(mix, x, ab), rtol=1e-4, atol=1e-4
    )
    for space in guidance.SPACES:
        back = guidance.from_space(space, guidance.to_space(space, eps, x, ab), x, ab)
        np.testing.assert_allclose(back, eps, rtol=1e-4, atol=1e-4)
    # the flow velocity: d/ds of x_flow = (1 − s) x̂0 + s ε, i.e. ε − x̂0
    v = guidance.to_space("v", eps, x, ab)
    np.testing.assert_allclose(v, eps - toydiff.exact.x0(mix, x, ab), rtol=1e-4, atol=1e-4)


def test_unknown_solver_and_a_stateful_rule_on_a_deterministic_one_are_refused():
    with pytest.raises(ValueError, match="solver: unknown solver 'rk4'; valid: ddim"):
        Scene.from_dict({"solver": "rk4"})
    with pytest.raises(ValueError, match="solver: 'dng' updates its state on a stochastic step"):
        Scene.from_dict({"method": "dng", "solver": "heun"})


STEPS = {"ddim": 100, "heun": 32, "euler": 100, "flow_euler": 100, "dpmpp_2m_sde": 50}


@pytest.mark.parametrize("solver", STEPS)
def test_unguided_sampling_reproduces_the_mixture(solver):
    """three_blobs and grid, seed 0: |energy| ≤ 3 × the exact-vs-exact sd (every preset: slow)."""
    for preset in ("three_blobs", "grid"):
        scene = {"preset": preset, "method": "none", "negative": None, "positive": None}
        _, m = run(Scene.from_dict({**scene, "solver": solver, "steps": STEPS[solver]}))
        assert m["non_finite"] == 0 and abs(m["energy"]) <= 3 * m["energy_baseline_sd"], m


@pytest.mark.slow
@pytest.mark.parametrize("solver", STEPS)
@pytest.mark.parametrize("preset", toydiff.PRESETS)
def test_unguided_sampling_reproduces_every_preset(preset, solver):
    """Issue "Open seams" acceptance: the mean energy over seeds 0-2 within 3 standard errors of
    the exact-vs-exact baseline (sd/√3). One seed alone is not enough on `tree`: seed 0 reads
    2.4-3.4 sd with every solver and step count (ddim 100 and 200 steps alike), seeds 1 and 2
    0.0-0.7 sd: that x_T draw, not the solver."""
    scene = {"preset": preset, "method": "none", "negative": None, "positive": None}
    energies = []
    for seed in range(3):
        _, m = run(
            Scene.from_dict({**scene, "solver": solver, "steps": STEPS[solver], "seed": seed})
        )
        assert m["non_finite"] == 0
        energies.append(m["energy"])
    assert abs(np.mean(energies)) <= 3 * m["energy_baseline_sd"] / np.sqrt(3), energies


def test_dpmpp_2m_converges_at_second_order():
    """η = 0 is DPM-Solver++(2M), an ODE solver of second order at one evaluation per step
    (measured 0.047 / 0.011 / 0.0022 at 20 / 40 / 80 steps: Heun's errors at half the evaluations)."""
    e20, e40, e80 = (_pf_error("dpmpp_2m_sde", n) for n in (20, 40, 80))
    assert e40 / e20 < 0.3 and e80 / e40 < 0.3, (e20, e40, e80)
    assert e80 < _pf_error("euler", 80) / 10


def _ddpm_variance(levels: np.ndarray, v: float = 1.0) -> float:
    """The closed-form variance after the DDPM kernel (DDIM, η = 1) on N(μ, S²I) with the exact
    x̂0 = μ + k(x − √ᾱμ), k = √ᾱS²/(ᾱS² + 1 − ᾱ): x' − √ᾱ'μ = c(x − √ᾱμ) + σz, v' = c²v + σ²."""
    for ab, ab_next in zip(levels[:-1].astype(np.float64), levels[1:].astype(np.float64)):
        k = np.sqrt(ab) * S**2 / (ab * S**2 + 1 - ab)
        var = (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
        c = np.sqrt(ab_next) * k + np.sqrt(max(1 - ab_next - var, 0.0)) * (
            1 - np.sqrt(ab) * k
        ) / np.sqrt(1 - ab)
        v = c * c * v + var
    return v


def _final_moments(solver: str, steps: int, n: int = 20_000):
    """Mean error and variance / S² of n samples of GAUSS with η = 1 (seed 1)."""
    cfg = sampler.SamplerConfig("none", steps=steps, n=n, solver=solver)
    knobs = sampler.default_knobs("none", eta=1.0)
    res = sampler.sample(
        cfg, denoisers.exact_denoiser(GAUSS), jax.random.key(1), sampler.Cond(0, 0), knobs
    )
    x = np.asarray(res.x0, np.float64)
    return np.abs(x.mean(0) - MU).max(), x.var(0).mean() / S**2


def test_stochastic_solvers_reach_a_gaussians_variance():
    """η = 1, 100 steps, 20 000 samples of N(μ, 0.3²I) (the variance ratio's se 0.007). The DDPM
    kernel ends with its own closed-form variance, 18 % short of S² (measured 0.829 against 0.821:
    x̂0 is the posterior mean, so every step under-disperses); DPM-Solver++(2M) SDE on the EDM
    grid within 3 % of S² (measured 1.0085)."""
    err, ratio = _final_moments("ddim", 100)
    want = _ddpm_variance(solvers.vp_grid("linear", 100)) / S**2
    assert want < 0.85 and abs(ratio - want) < 0.03 and err < 0.01, (ratio, want)
    err, ratio = _final_moments("dpmpp_2m_sde", 100)
    assert abs(ratio - 1) < 0.03 and err < 0.01, ratio
