"""Prediction-space rules (issue "The newer guidance methods", item 2; MATH §3.3): APG, CFG++,
TCFG and CFG-Zero* against independent numpy computations and their special cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import toydiff
from toydiff import exact, guidance, solvers
from toydiff.scene import Scene

RNG = np.random.default_rng(0)
BASE = {"preset": "overlap", "positive": "round", "negative": None, "n": 300, "steps": 20}


def _flat(a):
    return a.reshape(len(a), -1)


def test_apg_is_the_paper_formula():
    d_u, d_c, run = (RNG.normal(size=(5, 3, 4)).astype(np.float32) for _ in range(3))
    out, info = guidance.apg(d_u, d_c, gamma=2.5, eta_par=0.3, r=1.2, beta=-0.4, running=run)
    for i in range(5):  # per sample, flattened: the MATH §3.3 recipe
        delta = _flat(d_c)[i] - _flat(d_u)[i] - 0.4 * _flat(run)[i]
        delta = delta * min(1.0, 1.2 / np.linalg.norm(delta))
        c = _flat(d_c)[i]
        par = (delta @ c) / (c @ c) * c
        want = c + 1.5 * (delta - par + 0.3 * par)
        np.testing.assert_allclose(out[i].ravel(), want, rtol=1e-5, atol=1e-5)
    assert info["lam_pos"].shape == (5,)


def test_apg_with_eta_1_no_clip_no_momentum_is_cfg():
    cfg, _ = toydiff.run(Scene.from_dict({**BASE, "method": "cfg", "gamma": 3.0}))
    apg, _ = toydiff.run(
        Scene.from_dict(
            {
                **BASE,
                "method": "apg",
                "gamma": 3.0,
                "eta_par": 1.0,
                "r": 1e6,
                "beta": 0.0,
            }
        )
    )
    np.testing.assert_allclose(apg.traj, cfg.traj, rtol=1e-3, atol=1e-3)


def test_apg_momentum_runs_on_the_x0_differences_of_the_chain():
    """The state is the running Δ: after the run, a numpy DDIM loop of the rule on the exact
    branches (x̂0 space, β = −0.5, no clip) gives the same trajectory."""
    knobs = {"gamma": 2.0, "eta_par": 0.0, "r": 1e6, "beta": -0.5}
    scene = Scene.from_dict({**BASE, "method": "apg", "steps": 4, **knobs})
    res, _ = toydiff.run(scene)
    mix, levels = toydiff.preset("overlap"), scene.sampler_config().levels()
    x, running = np.asarray(res.traj[0], np.float64), 0.0
    for i in range(scene.steps):
        ab, ab_n = float(levels[i]), float(levels[i + 1])
        x0_u = np.asarray(exact.x0(mix, x, ab), np.float64)
        x0_c = np.asarray(exact.x0(mix, x, ab, "round"), np.float64)
        delta = x0_c - x0_u - 0.5 * running
        running = delta
        along = np.sum(delta * x0_c, 1) / np.sum(x0_c**2, 1)
        x0_hat = x0_c + (delta - along[:, None] * x0_c)  # γ − 1 = 1, η = 0
        eps = (x - np.sqrt(ab) * x0_hat) / np.sqrt(1 - ab)
        x = np.sqrt(ab_n) * x0_hat + np.sqrt(1 - ab_n) * eps
        np.testing.assert_allclose(res.traj[i + 1], x, rtol=2e-3, atol=2e-3)


def test_cfg_pp_renoises_with_the_unconditional_prediction():
    scene = Scene.from_dict({**BASE, "method": "cfg_pp", "lam": 0.4, "steps": 3})
    res, _ = toydiff.run(scene)
    mix, levels = toydiff.preset("overlap"), scene.sampler_config().levels()
    x = np.asarray(res.traj[0], np.float64)
    for i in range(scene.steps):
        ab, ab_n = float(levels[i]), float(levels[i + 1])
        e_u = np.asarray(exact.eps(mix, x, ab), np.float64)
        e_c = np.asarray(exact.eps(mix, x, ab, "round"), np.float64)
        e_lam = e_u + 0.4 * (e_c - e_u)
        x = np.sqrt(ab_n) * (x - np.sqrt(1 - ab) * e_lam) / np.sqrt(ab) + np.sqrt(1 - ab_n) * e_u
        np.testing.assert_allclose(res.traj[i + 1], x, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("shape", [(6, 2), (4, 3, 5, 5)])
def test_tcfg_projects_on_the_top_right_singular_vector(shape):
    e_u, e_c = (RNG.normal(size=shape).astype(np.float32) for _ in range(2))
    e_c[0] = 2 * e_u[0]  # rank 1
    out, _ = guidance.tcfg(e_u, e_c, gamma=2.0)
    for i in range(shape[0]):
        m = np.stack([_flat(e_c)[i], _flat(e_u)[i]]).astype(np.float64)
        v1 = np.linalg.svd(m, full_matrices=False)[2][0]
        u = (_flat(e_u)[i] @ v1) * v1
        np.testing.assert_allclose(
            out[i].ravel(), u + 2.0 * (_flat(e_c)[i] - u), rtol=1e-4, atol=1e-4
        )
    torch_out, _ = guidance.tcfg(torch.from_numpy(e_u), torch.from_numpy(e_c), gamma=2.0)
    np.testing.assert_allclose(torch_out.numpy(), out, rtol=1e-5, atol=1e-5)


def test_cfg_zero_star_scale_and_zero_init():
    v_u, v_c = (RNG.normal(size=(7, 2)).astype(np.float32) for _ in range(2))
    out, info = guidance.cfg_zero_star(
        v_u, v_c, gamma=3.0, zero_steps=2.0, step_index=np.full(7, 2.0)
    )
    alpha = np.sum(v_c * v_u, 1) / np.sum(v_u**2, 1)
    np.testing.assert_allclose(info["alpha_star"], alpha, rtol=1e-5)
    want = alpha[:, None] * v_u + 3.0 * (v_c - alpha[:, None] * v_u)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    zero, _ = guidance.cfg_zero_star(
        v_u, v_c, gamma=3.0, zero_steps=2.0, step_index=np.full(7, 1.0)
    )
    assert np.all(zero == 0)
    # in the sampler: v̂ = 0 for the first 2 flow-Euler steps leaves x_flow = x_VP / c unchanged
    scene = Scene.from_dict({**BASE, "method": "cfg_zero_star", "solver": "flow_euler"})
    res, _ = toydiff.run(scene)
    scale = [float(solvers.flow_time(ab)[1]) for ab in scene.sampler_config().levels()[:4]]
    for i in (1, 2):
        np.testing.assert_allclose(
            res.traj[i] / scale[i], res.traj[0] / scale[0], rtol=1e-4, atol=1e-4
        )
    assert not np.allclose(res.traj[3] / scale[3], res.traj[2] / scale[2], atol=1e-3)


def test_reductions_to_cfg():
    """Issue 21's reductions: TCFG with ε_∅ ∥ ε_c is CFG (the projection keeps ε_∅); CFG-Zero*
    with α* = 1 (⟨v_c, v_∅⟩ = ‖v_∅‖²) and no zero-init steps is CFG; CFG++'s data estimate at
    λ = γ, re-noised with ε̂ instead of ε_∅, is the DDIM step of CFG."""
    e_u = RNG.normal(size=(5, 2)).astype(np.float32)
    e_c = (np.array([0.5, -2.0, 3.0, 1.5, -0.7], np.float32)[:, None] * e_u).astype(np.float32)
    cfg, _ = guidance.cfg(e_u, e_c, gamma=2.5)
    np.testing.assert_allclose(guidance.tcfg(e_u, e_c, gamma=2.5)[0], cfg, rtol=1e-5, atol=1e-5)
    v_u = RNG.normal(size=(5, 2)).astype(np.float32)
    perp = np.stack([-v_u[:, 1], v_u[:, 0]], 1) * RNG.normal(size=(5, 1)).astype(np.float32)
    v_c = v_u + perp  # ⟨v_c, v_∅⟩ = ‖v_∅‖²: α* = 1
    out, info = guidance.cfg_zero_star(v_u, v_c, gamma=2.5, zero_steps=0.0, step_index=np.zeros(5))
    np.testing.assert_allclose(info["alpha_star"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(out, guidance.cfg(v_u, v_c, gamma=2.5)[0], rtol=1e-5, atol=1e-5)
    x, ab, ab_n = RNG.normal(size=(5, 2)), 0.4, 0.6
    eps, info = guidance.cfg_pp(e_u, e_c, lam=2.5)
    x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    pp = np.sqrt(ab_n) * x0 + np.sqrt(1 - ab_n) * eps  # re-noised with ε̂, not info["renoise"]
    ddim = np.sqrt(ab_n) * (x - np.sqrt(1 - ab) * cfg) / np.sqrt(ab) + np.sqrt(1 - ab_n) * cfg
    np.testing.assert_allclose(pp, ddim, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(info["renoise"], e_u)  # CFG++ itself re-noises with ε_∅
