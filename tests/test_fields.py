"""Grid fields against the exact oracle and the rules applied by hand."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import toydiff
from toydiff import denoisers, exact, fields, guidance, schedule
from toydiff.sampler import Cond, SamplerConfig, default_knobs

GRID = fields.grid(5.0, 21)


def test_grid_is_row_major_with_y_slowest():
    g = fields.grid(2.0, 3)
    np.testing.assert_array_equal(g[:3, 1], -2.0)
    np.testing.assert_array_equal(g[:3, 0], [-2, 0, 2])


def test_ccfg_field_is_the_rule_applied_to_the_exact_branches():
    mix = toydiff.preset("grid")
    kn = default_knobs("ccfg", gamma=2.5, tau=0.3)
    cfg = SamplerConfig(rule="ccfg", steps=50, has_pos=True)
    f = fields.field(cfg, denoisers.exact_denoiser(mix), Cond(1, 7), kn, GRID, 300.0)
    ab = schedule.alpha_bars("linear")[300]
    e = {c: exact.eps(mix, GRID, ab, c) for c in (None, "row1", "col2")}
    want, info = guidance.ccfg(e[None], e["col2"], gamma=2.5, tau=0.3, eps_pos=e["row1"])
    np.testing.assert_allclose(f["guided"], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f["lam_neg"], info["lam_neg"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(f["term"], want - e["row1"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f["log_p"], exact.log_prob(mix, GRID, ab), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(f["p_neg"], exact.posterior(mix, GRID, ab, "col2"), atol=1e-6)
    # the target p(x | row1, ¬col2): row 1 without its middle mode
    m = np.asarray(mix.membership)
    w = np.asarray(mix.weights) * m[1] * (1 - m[7])
    keep = w > 0
    target = toydiff.Mixture(
        np.asarray(mix.means)[keep],
        np.asarray(mix.covs)[keep],
        w[keep],
        np.ones((1, keep.sum())),
        ("target",),
    )
    np.testing.assert_allclose(
        f["log_p_target"], exact.log_prob(target, GRID, ab), rtol=1e-4, atol=1e-3
    )


def test_step_field_is_a_deterministic_ddim_step():
    mix = toydiff.preset("three_blobs")
    cfg = SamplerConfig(rule="ncfg", steps=10)
    f = fields.field(
        cfg, denoisers.exact_denoiser(mix), Cond(0, 2), default_knobs("ncfg"), GRID, 500.0
    )
    ab = schedule.alpha_bars("linear")
    x0 = (GRID - np.sqrt(1 - ab[500]) * f["guided"]) / np.sqrt(ab[500])
    want = np.sqrt(ab[400]) * x0 + np.sqrt(1 - ab[400]) * f["guided"] - GRID
    np.testing.assert_allclose(f["step"], want, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(
    x=st.floats(-1e4, 1e4),
    y=st.floats(-1e4, 1e4),
    t=st.integers(0, 999),
    name=st.sampled_from(["three_blobs", "overlap", "grid", "nested"]),
)
def test_fields_are_finite_anywhere_on_the_plane(x, y, t, name):
    mix = toydiff.preset(name)
    pts = jnp.asarray([[x, y], [0.0, 0.0]], jnp.float32)
    for rule in ("ncfg", "ccfg", "dng"):
        f = fields.field(
            SamplerConfig(rule=rule),
            denoisers.exact_denoiser(mix),
            Cond(0, 1),
            default_knobs(rule),
            pts,
            float(t),
        )
        for k, v in f.items():
            assert np.isfinite(np.asarray(v)).all(), (k, x, y, t)


@pytest.mark.parametrize("kind", ["linear_up", "triangle", "window"])
def test_weight_schedule_scales_the_guidance_term_by_g_of_t(kind):
    """nCFG is linear in γ: at any t the field's guidance term under a schedule is g(t) times the
    constant schedule's (guidance.weight), and the guided ε the unguided one plus it."""
    from toydiff.scene import Scene, denoiser

    base = Scene.from_dict(dict(preset="three_blobs", method="ncfg", negative="C", gamma=2.0))
    mix = base.build_mixture()
    x = jnp.asarray(fields.grid(fields.extent(mix), 9))
    for t in (100.0, 700.0):
        terms = {}
        for name in ("constant", kind):
            scene = base.replace(weight_schedule=name, g_late=-0.5, t_switch=400.0)
            out = fields.field(
                scene.sampler_config(), denoiser(scene, mix), scene.cond(mix), scene.knobs(), x, t
            )
            terms[name] = np.asarray(out["term"])
        g = float(
            guidance.weight(
                np.float32(t),
                g_schedule=float(guidance.WEIGHT_SCHEDULES.index(kind)),
                g_late=-0.5,
                t_switch=400.0,
            )
        )
        np.testing.assert_allclose(terms[kind], g * terms["constant"], rtol=1e-4, atol=1e-5)
