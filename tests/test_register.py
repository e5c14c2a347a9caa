"""Rules and solvers registered from outside the package (issue "Open seams", acceptance 1).

This file, and no other, defines (a) a stateless rule with a knob name no built-in rule has,
(b) a stateful rule (momentum on Δ_n, its state carried by the sampler) and (c) a solver
(explicit midpoint on the EDM σ grid). `register_all` registers them; the tests call it through a
fixture that restores the registries afterwards, and the CLI subprocess loads it as a plugin
(`TOYDIFF_PLUGINS=test_register:register_all`, toydiff.plugins). Each runs through toydiff.run,
through `python -m toydiff metrics --scene FILE --json`, and renders its controls in AppTest.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from array_api_compat import array_namespace

import toydiff
from toydiff import exact, guidance, solvers
from toydiff.scene import Scene

ROOT = pathlib.Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


# ------------------------------------------------------------------------- what a plugin writes
def _norm(d):
    xp = array_namespace(d)
    return xp.sqrt(xp.sum(d * d, axis=tuple(range(1, d.ndim))))


def _per_sample(w, d):
    return w.reshape((-1,) + (1,) * (d.ndim - 1))


def clipped_ncfg(eps_uncond, eps_neg, *, gamma, clip_radius):
    """nCFG with Δ_n clipped to norm ν: ε̂ = ε_∅ − γ min(1, ν/‖Δ_n‖) Δ_n."""
    xp = array_namespace(eps_uncond, eps_neg)
    d = eps_neg - eps_uncond
    lam = xp.minimum(xp.ones_like(_norm(d)), clip_radius / xp.maximum(_norm(d), 1e-12))
    info = {"lam_neg": lam, "scale_neg": gamma * lam}
    return eps_uncond - gamma * _per_sample(lam, d) * d, info


def momentum_ncfg(eps_uncond, eps_neg, *, gamma, mom_beta, momentum):
    """nCFG on a running sum of Δ_n: m_t = β m_{t+1} + Δ_n, ε̂ = ε_∅ − γ m_t."""
    m = mom_beta * momentum + (eps_neg - eps_uncond)
    ones = _norm(m) * 0 + 1
    return eps_uncond - gamma * m, {"lam_neg": ones, "scale_neg": gamma * ones}


MOMENTUM = guidance.State(
    init=lambda x, knobs: x * 0,
    read=lambda m, step, knobs: {"momentum": m},
    update=lambda m, step, knobs: (
        knobs["mom_beta"] * m + (step.branches["neg"] - step.branches["uncond"])
    ),
)


def midpoint(model, x, ab, ab_next, z, eta):
    """Explicit midpoint on the EDM/VE path (σ_mid = (σ + σ')/2); Euler into σ' = 0."""
    s, s_next = solvers.sigma_of(ab), solvers.sigma_of(ab_next)
    x_ve = x / jnp.sqrt(ab)
    pred = model(x, ab)
    s_mid = (s + s_next) / 2
    ab_mid = 1 / (1 + s_mid**2)
    mid = model(jnp.sqrt(ab_mid) * (x_ve + (s_mid - s) * pred.eps), ab_mid)
    slope = jnp.where(ab_next < 1, mid.eps, pred.eps)
    return jnp.sqrt(ab_next) * (x_ve + (s_next - s) * slope), pred, jnp.sqrt(ab_next) * (s_next - s)


RULES = (
    guidance.Rule(
        "clipped_ncfg",
        clipped_ncfg,
        "nCFG, clipped Δ_n",
        ("uncond", "neg"),
        {
            "gamma": guidance.Param(2.0, 0.0, 20.0, True, "negative scale γ"),
            "clip_radius": guidance.Param(0.5, 0.01, 5.0, True, "largest ‖Δ_n‖ used, ν"),
        },
    ),
    guidance.Rule(
        "momentum_ncfg",
        momentum_ncfg,
        "nCFG with momentum",
        ("uncond", "neg"),
        {
            "gamma": guidance.Param(1.0, 0.0, 20.0, True, "negative scale γ"),
            "mom_beta": guidance.Param(0.5, 0.0, 0.99, help="momentum β of the running Δ_n"),
        },
        state=MOMENTUM,
    ),
)


def register_all():
    """The plugin entry point: registers both rules and the solver."""
    for r in RULES:
        guidance.register(r)
    solvers.register("midpoint", midpoint, solvers.karras_grid, help="midpoint on the EDM σ grid")


@pytest.fixture
def registered():
    rules, sols = dict(guidance.RULES), dict(solvers.SOLVERS)
    register_all()
    yield
    guidance.RULES.clear(), guidance.RULES.update(rules)
    solvers.SOLVERS.clear(), solvers.SOLVERS.update(sols)


# ----------------------------------------------------------------------------------------- tests
def test_new_knob_names_are_not_those_of_any_built_in_rule():
    built_in = {k for r in guidance.RULES.values() for k in r.all_params}
    assert not {"clip_radius", "mom_beta"} & built_in
    assert "midpoint" not in solvers.SOLVERS


def _ddim(x, eps, ab, ab_next):
    x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    return np.sqrt(ab_next) * x0 + np.sqrt(1 - ab_next) * eps


def test_clipped_rule_runs_and_equals_its_formula_step_by_step(registered):
    """toydiff.run of the plugin rule equals a numpy DDIM (η = 0) loop of its formula on the exact
    branches, from the same x_T."""
    scene = Scene.from_dict(
        {"preset": "three_blobs", "method": "clipped_ncfg", "clip_radius": 0.3, "n": 64, "steps": 4}
    )
    assert scene.params == {"gamma": 2.0, "clip_radius": 0.3}  # the registry's default γ
    res, m = toydiff.run(scene)
    mix, levels = toydiff.preset("three_blobs"), scene.sampler_config().levels()
    x = np.asarray(res.traj[0], np.float64)
    for i in range(scene.steps):
        e_u = np.asarray(exact.eps(mix, x, levels[i]), np.float64)
        d = np.asarray(exact.eps(mix, x, levels[i], "C"), np.float64) - e_u
        lam = np.minimum(1.0, 0.3 / np.linalg.norm(d, axis=1))
        x = _ddim(x, e_u - 2.0 * lam[:, None] * d, levels[i], levels[i + 1])
        np.testing.assert_allclose(res.traj[i + 1], x, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(res.info["lam_neg"][-1], lam, rtol=2e-3, atol=2e-3)  # last step's
    assert m["non_finite"] == 0 and 0 <= m["leakage_hard"] <= 1


def test_momentum_state_is_carried_and_beta_zero_is_ncfg(registered):
    base = {"preset": "three_blobs", "n": 64, "steps": 5, "seed": 2}
    res0, _ = toydiff.run(Scene.from_dict({**base, "method": "momentum_ncfg", "mom_beta": 0.0}))
    ref, _ = toydiff.run(Scene.from_dict({**base, "method": "ncfg", "gamma": 1.0}))
    np.testing.assert_allclose(res0.traj, ref.traj, rtol=1e-5, atol=1e-5)
    # β > 0: the numpy loop with the running sum m_t = β m_{t+1} + Δ_n
    scene = Scene.from_dict({**base, "method": "momentum_ncfg", "mom_beta": 0.8, "gamma": 1.5})
    res, _ = toydiff.run(scene)
    mix, levels = toydiff.preset("three_blobs"), scene.sampler_config().levels()
    x, mom = np.asarray(res.traj[0], np.float64), 0.0
    for i in range(scene.steps):
        e_u = np.asarray(exact.eps(mix, x, levels[i]), np.float64)
        mom = 0.8 * mom + (np.asarray(exact.eps(mix, x, levels[i], "C"), np.float64) - e_u)
        x = _ddim(x, e_u - 1.5 * mom, levels[i], levels[i + 1])
        np.testing.assert_allclose(res.traj[i + 1], x, rtol=2e-3, atol=2e-3)
    assert not np.allclose(res.traj[-1], res0.traj[-1], atol=1e-3)  # the state matters


def test_plugin_solver_samples_the_mixture(registered):
    """Unguided exact sampling with the midpoint solver (20 steps, 40 evaluations) lands on the
    mixture: |energy| ≤ 3 × the exact-vs-exact baseline's sd."""
    scene = Scene.from_dict(
        {
            "preset": "three_blobs",
            "method": "none",
            "negative": None,
            "solver": "midpoint",
            "steps": 20,
        }
    )
    _, m = toydiff.run(scene)
    assert m["non_finite"] == 0 and abs(m["energy"]) <= 3 * m["energy_baseline_sd"], m


def test_metrics_cli_runs_plugins_from_a_scene_file(registered, tmp_path):
    env = {
        **os.environ,
        "TOYDIFF_PLUGINS": "test_register:register_all",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    for data in (
        {"preset": "three_blobs", "method": "clipped_ncfg", "clip_radius": 0.3, "n": 200},
        {
            "preset": "three_blobs",
            "method": "momentum_ncfg",
            "mom_beta": 0.8,
            "solver": "ddim",
            "n": 200,
        },
        {"preset": "three_blobs", "method": "ncfg", "solver": "midpoint", "n": 200, "steps": 20},
    ):
        path = tmp_path / "scene.json"
        path.write_text(json.dumps(data))
        out = subprocess.run(
            [sys.executable, "-m", "toydiff", "metrics", "--scene", str(path), "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads(out.stdout)
        _, want = toydiff.run(Scene.from_dict(data))
        for key in ("leakage_hard", "off_support", "energy", "non_finite"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (data, key)
    bad = subprocess.run(
        [sys.executable, "-m", "toydiff", "metrics", "--scene", str(path)],
        cwd=tmp_path,
        env={**env, "TOYDIFF_PLUGINS": "no_such_module"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "TOYDIFF_PLUGINS: cannot load 'no_such_module'" in bad.stderr


def test_atlas_sweeps_and_the_bridge_take_the_plugin_rules(registered):
    """The atlas lists both rules with a scene that runs; a sweep sweeps the registered γ; the torch
    loop of the bridge runs the stateful rule on the shipped digits UNet, equal to its formula."""
    import torch

    from toydiff import atlas, sweep
    from toydiff.bridge import digits

    rows = {row.name: row for row in atlas.rows()}
    for name in ("clipped_ncfg", "momentum_ncfg"):
        assert rows[name].label == guidance.RULES[name].label and "digits" in rows[name].where
        pair = atlas.scene_pair(rows[name])
        assert pair["right"].method == name and name in atlas.table()
    assert sweep.grid_of("clipped_ncfg", gammas=(1.0, 2.0)) == [{"gamma": 1.0}, {"gamma": 2.0}]
    unet, _ = digits.load_unet()
    seen = []

    def hook(i, t, branches, eps, info):
        seen.append((branches["uncond"].double(), branches["neg"].double(), eps.double()))

    knobs = {"gamma": 1.5, "mom_beta": 0.8}
    digits.sample(unet, "momentum_ncfg", knobs, n=4, neg=3, steps=4, hook=hook)
    mom = 0.0
    for e_u, e_n, eps in seen:  # m_t = β m_{t+1} + Δ_n along the loop, ε̂ = ε_∅ − γ m_t
        mom = 0.8 * mom + (e_n - e_u)
        torch.testing.assert_close(eps, e_u - 1.5 * mom, rtol=1e-4, atol=1e-4)
    assert len(seen) == 4


def test_app_renders_the_plugin_controls(registered):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["n"], at.session_state["steps"] = 100, 10
    at.session_state["left.method"] = "clipped_ncfg"
    at.session_state["right.method"] = "momentum_ncfg"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    at.select_slider(key="left.clipped_ncfg.clip_radius").set_value(5.0).run()
    at.slider(key="right.momentum_ncfg.mom_beta").set_value(0.9).run()
    at.selectbox(key="solver").set_value("midpoint").run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="solver").value == "midpoint"
