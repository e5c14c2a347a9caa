"""Guidance rules against MATH §3 written out independently, on numpy, JAX and torch arrays."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toydiff import guidance
from toydiff.guidance import RULES

torch = pytest.importorskip("torch")
SHAPES = [(7, 2), (3, 4, 5, 5)]


def branches(shape, seed=0):
    rng = np.random.default_rng(seed)
    names = ("uncond", "pos", "neg", "cond", "weak", "weak_uncond", "rand")
    return {b: rng.normal(0, 1, shape).astype(np.float32) for b in names}


def reference(name, br, k):
    """MATH §3 per sample in float64 with explicit loops (independent of the vectorised code)."""
    out = np.zeros(br["uncond"].shape)
    for i in range(out.shape[0]):
        e = {b: v[i].astype(np.float64) for b, v in br.items()}
        dp, dn = e["pos"] - e["uncond"], e["neg"] - e["uncond"]
        g = k.get("gamma", 0.0)
        if name == "none":
            out[i] = e["cond"]
        elif name == "cfg":
            out[i] = e["uncond"] + g * dp
        elif name == "cfg_weak":
            out[i] = e["weak_uncond"] + g * (e["pos"] - e["weak_uncond"])
        elif name == "ncfg":
            out[i] = e["uncond"] + g * dp - g * dn
        elif name == "ccfg":
            lam_p = 2 / (1 + np.exp(-k["tau"] * np.sum(dp**2)))
            lam_n = 2 * np.exp(-k["tau"] * np.sum(dn**2)) / (1 + np.exp(-k["tau"] * np.sum(dn**2)))
            out[i] = e["uncond"] + g * lam_p * dp - g * lam_n * dn
        elif name in ("dng", "dng_oracle"):
            p = k["p_neg"][i]
            out[i] = e["uncond"] + k["gamma_pos"] * dp - g * p / (1 - p) * dn
        elif name == "sd_negative":
            out[i] = e["neg"] + g * (e["cond"] - e["neg"])
        elif name == "perp_neg":
            perp = dn - np.sum(dn * dp) / np.sum(dp * dp) * dp
            out[i] = e["uncond"] + g * (dp - k["w_neg"] * perp)
        elif name == "autoguidance":
            out[i] = e["weak"] + g * (e["cond"] - e["weak"])
        elif name == "sims":
            out[i] = e["cond"] - g * (e["weak"] - e["cond"])
        elif name == "perturbed":
            out[i] = e["cond"] + g * (e["cond"] - e["weak"])
        elif name == "icg":
            out[i] = e["rand"] + g * (e["pos"] - e["rand"])
        elif name == "cfg_pp":
            out[i] = e["uncond"] + k["lam"] * dp
        elif name == "tcfg":
            m = np.stack([e["pos"].ravel(), e["uncond"].ravel()])
            v1 = np.linalg.svd(m, full_matrices=False)[2][0]
            u = (e["uncond"].ravel() @ v1) * v1
            out[i] = (u + g * (e["pos"].ravel() - u)).reshape(e["uncond"].shape)
        elif name in ("apg", "cfg_zero_star"):  # in x̂0 / v space at X, AB (initial state)
            a, b, x = np.sqrt(AB), np.sqrt(1 - AB), x_of(br["uncond"].shape)[i].astype(np.float64)
            x0 = {c: (x - b * e[c]) / a for c in ("uncond", "pos")}
            if name == "apg":  # no momentum at the first step
                d = x0["pos"] - x0["uncond"]
                d = d * min(1.0, k["r"] / np.linalg.norm(d))
                par = np.sum(d * x0["pos"]) / np.sum(x0["pos"] ** 2) * x0["pos"]
                pred = x0["pos"] + (g - 1) * (d - par + k["eta_par"] * par)
                out[i] = (x - a * pred) / b
            else:  # zero_steps = 0: the α* formula on v = ε − x̂0
                v = {c: e[c] - x0[c] for c in ("uncond", "pos")}
                alpha = np.sum(v["pos"] * v["uncond"]) / np.sum(v["uncond"] ** 2)
                pred = alpha * v["uncond"] + g * (v["pos"] - alpha * v["uncond"])
                out[i] = (x + a * pred) / (a + b)
        elif name in ("fbg", "fbg_oracle"):
            floor = np.log((1 - k["pi"]) * k["lam_max"] / (k["lam_max"] - 1))
            r = np.exp(max(k["log_r"][i], floor))
            out[i] = e["uncond"] + r / (r - (1 - k["pi"])) * dp
        elif name == "sld":  # initial state: momentum 0 (its chain: test_sld_momentum_...)
            text = e["pos"]
            diff = text - e["neg"]
            mu = np.where(diff >= k["thresh"], 0.0, np.minimum(np.abs(diff) * k["s_s"], 1.0))
            active = float(k.get("step_index", 0.0) >= k["warmup"])
            out[i] = e["uncond"] + g * (dp - active * mu * (e["neg"] - e["uncond"]))
        else:
            raise KeyError(f"no reference for {name}")
    return out


def knobs(name, batch):
    k = {p: v.default for p, v in RULES[name].params.items()}
    k["gamma"], k["gamma_pos"], k["tau"], k["w_neg"] = 2.5, 1.7, 0.05, 0.7
    k["lam"], k["r"], k["eta_par"], k["zero_steps"] = 0.6, 0.8, 0.3, 0.0
    k["warmup"], k["thresh"], k["s_s"] = 0.0, 0.3, 2.0  # SLD active at once, μ not all 1
    k = {p: k[p] for p in RULES[name].params}
    p_neg = np.linspace(0.05, 0.9, batch).astype(np.float32)
    return k, p_neg


def log_r_of(p_neg):
    """FBG's log r for the formula tests: spread from below the λ_max floor up to 3."""
    return np.linspace(-4.0, 3.0, p_neg.shape[0]).astype(np.float32)


AB = 0.55  # the noise level at which x̂0- and v-space rules are evaluated


def x_of(shape):
    """The x_t at which the rules are evaluated (x̂0- and v-space rules need it)."""
    return np.random.default_rng(9).normal(0, 1, shape).astype(np.float32)


def extra(r, x, k, p_neg, to):
    """The rule state's keyword arguments: DNG's p_neg as given, else the initial state's read."""
    if r.state is None:
        return None
    if "p_neg" in inspect.signature(r.fn).parameters:
        return {"p_neg": to(p_neg)}
    if "log_r" in inspect.signature(r.fn).parameters:  # FBG: log r from below its floor to 3
        return {"log_r": to(log_r_of(p_neg))}
    return r.state.read(r.state.init(x, k), guidance.Step(x, AB, AB), k)


def call(name, br, k, p_neg, to):
    r = RULES[name]
    br = {b: to(v) for b, v in br.items()}
    if not r.optional_pos:
        br.pop("pos") if "pos" not in r.branches else None
    x = to(x_of(tuple(br["uncond"].shape)))
    return guidance.apply(r, br, k, extra(r, x, k, p_neg, to), at=(x, AB))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", RULES)
def test_rule_matches_math_in_numpy_jax_and_torch(name, shape):
    br = branches(shape)
    k, p_neg = knobs(name, shape[0])
    want = reference(name, br, {**k, "p_neg": p_neg, "log_r": log_r_of(p_neg)})
    for to in (np.asarray, jnp.asarray, torch.from_numpy):
        eps, info = call(name, br, k, p_neg, to)
        np.testing.assert_allclose(np.asarray(eps), want, rtol=2e-5, atol=2e-5, err_msg=str(to))
        info.pop("renoise", None)  # CFG++'s re-noising prediction: a full array
        for v in info.values():
            assert tuple(v.shape) == (shape[0],)


@pytest.mark.parametrize("name", RULES)
def test_rule_runs_under_jit_without_recompiling_when_knobs_change(name):
    br = {b: jnp.asarray(v) for b, v in branches((5, 2)).items()}
    k, p_neg = knobs(name, 5)
    r = RULES[name]
    if not r.optional_pos and "pos" not in r.branches:
        br.pop("pos")
    x = jnp.asarray(x_of((5, 2)))
    fn = jax.jit(
        lambda br, k, p: guidance.apply(r, br, k, extra(r, x, k, p, jnp.asarray), at=(x, AB))[0]
    )
    first = fn(br, k, jnp.asarray(p_neg))
    np.testing.assert_allclose(
        first,
        reference(name, branches((5, 2)), {**k, "p_neg": p_neg, "log_r": log_r_of(p_neg)}),
        rtol=2e-5,
        atol=2e-5,
    )
    fn(br, {p: v * 1.3 for p, v in k.items()}, jnp.asarray(p_neg))
    assert fn._cache_size() == 1


def test_ccfg_at_small_tau_equals_ncfg():
    br = branches((64, 2), seed=1)
    for eps_pos in (None, br["pos"]):
        a, _ = guidance.ccfg(br["uncond"], br["neg"], gamma=4.0, tau=1e-7, eps_pos=eps_pos)
        b, _ = guidance.ncfg(br["uncond"], br["neg"], gamma=4.0, eps_pos=eps_pos)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_ccfg_weight_ranges_and_attenuation():
    br = branches((1000, 2), seed=2)
    scale = np.linspace(0, 10, 1000)[:, None].astype(np.float32)  # ‖Δ‖ from 0 to large
    _, info = guidance.ccfg(
        br["uncond"],
        br["uncond"] + scale * br["neg"],
        gamma=3.0,
        tau=0.5,
        eps_pos=br["uncond"] + scale * br["pos"],
    )
    lam_neg, lam_pos = info["lam_neg"], info["lam_pos"]
    s = 0.5 * np.sum((scale * br["neg"]) ** 2, 1)
    assert np.all(lam_neg[s < 80] > 0) and np.all(lam_neg <= 1)
    assert np.all(lam_pos >= 1) and np.all(lam_pos < 2 + 1e-6)
    assert lam_neg[0] == 1.0 and lam_pos[0] == 1.0  # Δ = 0: the weights are exactly 1
    assert lam_neg[-1] < 1e-6  # far from the negative concept the repulsion has faded
    np.testing.assert_allclose(info["scale_neg"], 3.0 * lam_neg)


def test_ccfg_positive_direction_equals_cfg():
    br = branches((16, 2), seed=3)
    e_ccfg, _ = guidance.ccfg(br["uncond"], br["uncond"], gamma=2.0, tau=0.3, eps_pos=br["pos"])
    e_cfg, _ = guidance.cfg(br["uncond"], br["pos"], gamma=2.0)
    a, b = e_ccfg - br["uncond"], e_cfg - br["uncond"]
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)


def test_ccfg_norms_stay_float32_under_float16():
    br = branches((4, 3, 32, 32), seed=4)  # ‖Δ‖² ≈ 6000 overflows float16's range
    e16 = {b: torch.from_numpy(v).half() for b, v in br.items()}
    _, info = guidance.ccfg(e16["uncond"], e16["neg"], gamma=7.5, tau=1e-4)
    _, ref = guidance.ccfg(br["uncond"], br["neg"], gamma=7.5, tau=1e-4)
    assert info["lam_neg"].dtype == torch.float32
    np.testing.assert_allclose(info["lam_neg"].numpy(), ref["lam_neg"], rtol=2e-3)


def test_dng_update_is_the_bayes_ratio_clamped():
    rng = np.random.default_rng(5)
    x, mu_n, mu_u = (rng.normal(0, 1, (6, 2)).astype(np.float32) for _ in range(3))
    p = np.full(6, 0.1, np.float32)
    got = guidance.dng_update(p, x, mu_n, mu_u, 0.5, temp=0.7, offset=0.01, p_min=1e-6, p_max=0.8)
    z = (-0.7 * (np.sum((x - mu_n) ** 2, 1) - np.sum((x - mu_u) ** 2, 1)) + 0.01) / (2 * 0.5)
    np.testing.assert_allclose(got, np.clip(0.1 * np.exp(z), 1e-6, 0.8), rtol=1e-5)


def test_interval_switches_at_the_bounds():
    g, u = np.ones((3, 2)), np.zeros((3, 2))
    for t, inside in ((99.0, False), (100.0, True), (500.0, True), (700.0, True), (701.0, False)):
        out = guidance.interval(g, u, t, t_lo=100.0, t_hi=700.0)
        assert np.all(out == (1.0 if inside else 0.0)), t


def test_unknown_rule_lists_valid_names():
    with pytest.raises(ValueError, match="unknown method 'nfcg'; valid: none, cfg, ncfg, ccfg"):
        guidance.rule("nfcg")


def test_registry_parameters_have_defaults_inside_their_ranges():
    for r in RULES.values():
        for name, p in r.all_params.items():
            assert p.lo <= p.default <= p.hi and p.help, (r.name, name)
            assert not p.log or p.lo > 0


ELEMENT_WISE = ("sld",)  # Δ_n's coefficient differs per element: no scalar scale to compare
NEGATIVE_RULES = [n for n, r in RULES.items() if "neg" in r.branches and n not in ELEMENT_WISE]


@pytest.mark.parametrize("name", NEGATIVE_RULES)
def test_reported_scales_are_the_coefficients_of_the_differences_in_eps(name):
    """ε̂ − ε_∅ = a·Δ_p − b·Δ_n read off by solving the 2×2 system per sample (Δ_p, Δ_n a basis of
    R²): the rule's scale_pos must be a and scale_neg b (sd_negative: γ and γ − 1; DNG: γ_p and
    γ_n p/(1 − p))."""
    rng = np.random.default_rng(7)
    n = 32
    uncond = rng.normal(0, 1, (n, 2)).astype(np.float32)
    d_pos = rng.normal(0, 1, (n, 2)).astype(np.float32)
    d_neg = rng.normal(0, 1, (n, 2)).astype(np.float32)
    br = {"uncond": uncond, "pos": uncond + d_pos, "neg": uncond + d_neg, "cond": uncond + d_pos}
    r = RULES[name]
    k = {p: v.default for p, v in r.params.items()} | {"gamma": 2.5, "gamma_pos": 1.7, "w_neg": 0.7}
    k = {p: k[p] for p in r.params}
    p_neg = rng.uniform(0.05, 0.8, n).astype(np.float32)
    eps, info = guidance.apply(r, br, k, {"p_neg": p_neg} if r.state else None)
    basis = np.stack([d_pos, -d_neg], -1).astype(np.float64)  # (n, 2, 2): columns Δ_p, −Δ_n
    coef = np.linalg.solve(basis, (np.asarray(eps) - uncond).astype(np.float64)[..., None])[..., 0]
    np.testing.assert_allclose(info["scale_neg"], coef[:, 1], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(info.get("scale_pos", np.zeros(n)), coef[:, 0], rtol=1e-3, atol=1e-4)


def test_sd_negative_and_dng_scales_in_closed_form():
    br = branches((5, 2), seed=8)
    _, info = guidance.sd_negative(br["neg"], br["pos"], gamma=4.0)
    np.testing.assert_allclose(info["scale_neg"], 3.0)
    np.testing.assert_allclose(info["scale_pos"], 4.0)
    p = np.full(5, 0.2, np.float32)
    _, info = guidance.dng(
        br["uncond"], br["neg"], gamma=5.0, gamma_pos=2.0, p_neg=p, eps_pos=br["pos"]
    )
    np.testing.assert_allclose(info["scale_neg"], 5.0 * 0.25, rtol=1e-6)
    np.testing.assert_allclose(info["scale_pos"], 2.0)


def _gauss_log(x, mu, var):
    return -np.sum((x - mu) ** 2, -1) / (2 * var) - x.shape[-1] / 2 * np.log(2 * np.pi * var)


def test_dng_track_is_bayes_rule_for_the_ddpm_kernel():
    """Bayes' rule for one step: p(n | x') = p(n | x)·p(x' | x, n)/p(x' | x), the unconditional
    kernel being the marginal; with both kernels N(a x + b ε, σ̃² I) of the DDPM step (ε_n, ε_∅),
    written out here in float64, DNG's update at Temp 1, offset 0 is exactly that ratio."""
    rng = np.random.default_rng(9)
    ab, ab_next = 0.6, 0.7
    var = (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
    a = np.sqrt(ab_next / ab)
    b = np.sqrt(1 - ab_next - var) - a * np.sqrt(1 - ab)
    x, e_n, e_u = (rng.normal(0, 1, (8, 2)) for _ in range(3))
    x_next = a * x + b * e_n + np.sqrt(var) * rng.normal(0, 1, (8, 2))
    p = rng.uniform(0.01, 0.3, 8)
    ratio = np.exp(
        _gauss_log(x_next, a * x + b * e_n, var) - _gauss_log(x_next, a * x + b * e_u, var)
    )
    got = guidance.dng_track(
        p.astype(np.float32),
        *(v.astype(np.float32) for v in (x, x_next, e_n, e_u)),
        np.float32(ab),
        np.float32(ab_next),
        temp=1.0,
        offset=0.0,
        p_min=1e-12,
        p_max=1.0,
    )
    np.testing.assert_allclose(got, np.clip(p * ratio, 1e-12, 1.0), rtol=2e-3)


def test_kernel_tau_schedule_scales_tau_by_the_kernel_temperature():
    from toydiff import schedule

    r = RULES["ccfg"]
    br = branches((6, 2), seed=10)
    kappa = schedule.kernel_temperature("linear", 50)
    _, ab, ab_next = schedule.step_alpha_bars("linear", 50)
    i = 40
    _, b, var = schedule.ddpm_kernel(float(ab[i]), float(ab_next[i]))  # Python floats
    ref = (b**2 / (2 * var)) / (
        schedule.ddpm_kernel(float(ab[24]), float(ab_next[24]))[1] ** 2
        / (2 * schedule.ddpm_kernel(float(ab[24]), float(ab_next[24]))[2])
    )
    np.testing.assert_allclose(kappa[i], ref, rtol=1e-4)
    assert kappa[24] == pytest.approx(1.0) and kappa[-1] == schedule.KAPPA_MAX
    k = {"gamma": 3.0, "tau": 0.2, "tau_schedule": 1.0}
    _, info = guidance.apply(r, br, k, kappa=float(kappa[i]))
    _, want = guidance.ccfg(br["uncond"], br["neg"], gamma=3.0, tau=0.2 * float(kappa[i]))
    np.testing.assert_allclose(info["lam_neg"], want["lam_neg"], rtol=1e-5)
    _, const = guidance.apply(r, br, {**k, "tau_schedule": 0.0}, kappa=float(kappa[i]))
    _, plain = guidance.ccfg(br["uncond"], br["neg"], gamma=3.0, tau=0.2)
    np.testing.assert_allclose(const["lam_neg"], plain["lam_neg"], rtol=1e-6)


def test_sld_momentum_follows_the_chain_and_waits_for_the_warm_up():
    """Three steps of SLD's state against diffusers' loop written out: g = μ(ε_S − ε_∅) + s_m ν,
    ν ← β_m ν + (1 − β_m) g at every step, the safety term subtracted from step `warmup` on."""
    r, n = RULES["sld"], 6
    k = {"gamma": 2.0, "warmup": 1.0, "s_s": 3.0, "thresh": 0.2, "s_m": 0.5, "beta_m": 0.6}
    x = np.zeros((n, 2), np.float32)
    state, nu = r.state.init(x, k), np.zeros((n, 2))
    for i in range(3):
        br = branches((n, 2), seed=20 + i)
        eps, _ = guidance.apply(r, br, k, r.state.read(state, guidance.Step(x, AB, AB), k))
        diff = br["pos"] - br["neg"]
        mu = np.where(diff >= 0.2, 0.0, np.minimum(np.abs(diff) * 3.0, 1.0))
        g = mu * (br["neg"] - br["uncond"]) + 0.5 * nu
        want = br["uncond"] + 2.0 * (br["pos"] - br["uncond"] - (i >= 1) * g)
        np.testing.assert_allclose(eps, want, rtol=1e-5, atol=1e-5, err_msg=str(i))
        nu = 0.6 * nu + 0.4 * g
        state = r.state.update(state, guidance.Step(x, AB, AB, x, br), k)
        np.testing.assert_allclose(state[0], nu, rtol=1e-5, atol=1e-6)


def test_sld_presets_are_the_papers():
    assert guidance.SLD_PRESETS["medium"] == {
        k: p.default for k, p in RULES["sld"].params.items() if k != "gamma"
    }
    assert (
        guidance.SLD_PRESETS["max"]["thresh"] == 1.0 and guidance.SLD_PRESETS["weak"]["s_s"] == 20
    )


@pytest.mark.parametrize("name", ["cfg", "ncfg", "ccfg", "apg", "perp_neg", "tcfg", "sld"])
def test_rotating_the_plane_rotates_the_guided_prediction_except_for_sld(name):
    """Rules built from norms and inner products commute with a rotation R of the plane:
    rule(R ε, R x) = R rule(ε, x); SLD's element-wise mask does not (MATH §3.3)."""
    r, n = RULES[name], 64
    th = np.pi / 4
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]], np.float32)
    br, x = branches((n, 2), seed=30), x_of((n, 2))
    k, p_neg = knobs(name, n)

    def guided(branches, x):
        if not r.optional_pos and "pos" not in r.branches:
            branches = {b: v for b, v in branches.items() if b != "pos"}
        return np.asarray(
            guidance.apply(r, branches, k, extra(r, x, k, p_neg, np.asarray), at=(x, AB))[0]
        )

    turned = guided({b: v @ rot.T for b, v in br.items()}, x @ rot.T)
    same = np.allclose(turned, guided(br, x) @ rot.T, rtol=1e-4, atol=1e-4)
    assert same == (name != "sld")


def test_weight_schedules_in_closed_form_with_time_average_one():
    """g(t) of every schedule (MATH §3.3) at a few t, in numpy, JAX and torch; linear and triangle
    average 1 over t, so that γg(t) averages γ (TV-CFG); the window is 1 early, g_late late."""
    t = np.array([0.0, 250.0, 500.0, 750.0, 1000.0], np.float32)
    s = t / 1000
    want = {
        "constant": np.ones(5),
        "linear_up": 2 * (1 - s),
        "linear_down": 2 * s,
        "triangle": 2 * (1 - np.abs(2 * s - 1)),
        "window": np.where(t >= 600, 1.0, -0.5),
    }
    for i, name in enumerate(guidance.WEIGHT_SCHEDULES):
        for to in (np.asarray, jnp.asarray, torch.from_numpy):
            got = guidance.weight(to(t), g_schedule=float(i), g_late=-0.5, t_switch=600.0)
            np.testing.assert_allclose(np.asarray(got), want[name], atol=1e-6, err_msg=name)
        fine = np.linspace(0, 1000, 100_001)
        mean = np.mean(guidance.weight(fine, g_schedule=float(i), g_late=0.0, t_switch=500.0))
        if name != "window":
            assert mean == pytest.approx(1.0, abs=1e-4), name
    knobs = {"gamma": 3.0, "g_schedule": 1.0, "g_late": 0.0, "t_switch": 500.0, "tau": 0.5}
    assert guidance.scheduled(knobs, np.float32(250.0)) == {**knobs, "gamma": 4.5}
    assert guidance.scheduled({"lam": 0.5}, np.float32(250.0)) == {"lam": 0.5}  # no γ: unchanged


def test_fbg_track_is_the_written_out_update():
    """One step of tracked FBG (MATH §3.2) in float64: δ = log(1.5(1 − π))/((1 − t0)N), τ_f =
    |2σ̃²(t1)δ/10|, log r' = clamp(log r − τ_f/(2σ̃²)(‖x' − μ_c‖² − ‖x' − μ_∅‖²) + δ, floor, 3)."""
    rng = np.random.default_rng(11)
    levels = np.linspace(0.05, 1.0, 21)  # N = 20 steps, noise to data
    k = {"pi": 0.9, "lam_max": 8.0, "t0": 0.5, "t1": 0.4}
    ab, ab_next = levels[6], levels[7]
    x, e_c, e_u, x_next = (rng.normal(0, 1, (9, 2)) for _ in range(4))
    log_r = rng.uniform(-2, 2, 9)

    def kernel(a0, a1):
        var = (1 - a1) / (1 - a0) * (1 - a0 / a1)
        a = np.sqrt(a1 / a0)
        return a, np.sqrt(1 - a1 - var) - a * np.sqrt(1 - a0), var

    a, b, var = kernel(ab, ab_next)
    var1 = kernel(levels[12], levels[13])[2]  # round((1 − 0.4)·20) = 12
    delta = np.log(1.5 * 0.1) / (0.5 * 20)
    tau = abs(2 * var1 * delta / 10)
    z = (
        -tau
        / (2 * var)
        * (np.sum((x_next - a * x - b * e_c) ** 2, 1) - np.sum((x_next - a * x - b * e_u) ** 2, 1))
    )
    floor = np.log(0.1 * 8.0 / 7.0)
    want = np.clip(log_r + z + delta, floor, 3.0)
    f32 = lambda v: np.asarray(v, np.float32)
    step = guidance.Step(
        f32(x),
        f32(ab),
        f32(ab_next),
        f32(x_next),
        {"pos": f32(e_c), "uncond": f32(e_u)},
        levels=f32(levels),
    )
    for to in (np.asarray, jnp.asarray, torch.from_numpy):
        step_to = step._replace(
            **{f: to(getattr(step, f)) for f in ("x", "ab", "ab_next", "x_next", "levels")},
            branches={n: to(v) for n, v in step.branches.items()},
        )
        got = guidance.fbg_track(to(f32(log_r)), step_to, k)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4, err_msg=str(to))
