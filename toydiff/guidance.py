"""Guidance rules (MATH §3): pure functions on numpy, JAX or torch arrays, plus a registry.

Every rule is `rule(<branches>, *, gamma, <knobs>, eps_pos=None) -> (eps, info)`; the leading axis is
the batch, norms are sums over all other axes, and `info` holds per-sample (B,) diagnostics:
`lam_neg`/`lam_pos` (the rule's weights) and `scale_neg`/`scale_pos` (the effective scales γλ).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from array_api_compat import array_namespace

from .schedule import T as STEPS_T
from .schedule import ddpm_kernel

Array = Any  # numpy | jax | torch


def _sq_norm(d: Array) -> Array:
    """(B,) Σ d² over every non-batch axis, in float32 at least (never float16)."""
    xp = array_namespace(d)
    if d.dtype in (xp.float16, getattr(xp, "bfloat16", xp.float16)):
        d = xp.astype(d, xp.float32)
    return xp.sum(d * d, axis=tuple(range(1, d.ndim)))


def _per_sample(w: Array, like: Array) -> Array:
    """(B,) weights reshaped to (B, 1, ...) and cast to like's dtype, to scale per sample."""
    xp = array_namespace(like)
    return xp.astype(xp.reshape(w, (w.shape[0],) + (1,) * (like.ndim - 1)), like.dtype)


def _ones(d: Array) -> Array:
    xp = array_namespace(d)
    return xp.ones_like(_sq_norm(d))


def _positive(eps, eps_uncond, eps_pos, gamma):
    """Adds plain CFG's γΔ_p when a positive branch is given; returns (eps, lam_pos, scale_pos)."""
    if eps_pos is None:
        return eps, None, None
    lam_pos = _ones(eps_pos)
    return eps + gamma * (eps_pos - eps_uncond), lam_pos, gamma * lam_pos


def _info(lam_neg=None, scale_neg=None, lam_pos=None, scale_pos=None, **extra) -> dict:
    return {
        "lam_neg": lam_neg,
        "lam_pos": lam_pos,
        "scale_neg": scale_neg,
        "scale_pos": scale_pos,
        **extra,
    }


def none(eps_cond: Array, *, gamma=1.0) -> tuple[Array, dict]:
    """No guidance: ε̂ = ε_p, or ε_∅ without a positive concept (γ is ignored)."""
    return eps_cond, _info()


def cfg(eps_uncond: Array, eps_pos: Array, *, gamma) -> tuple[Array, dict]:
    """CFG: ε̂ = ε_∅ + γΔ_p (Ho & Salimans 2022)."""
    eps, lam_pos, scale_pos = _positive(eps_uncond, eps_uncond, eps_pos, gamma)
    return eps, _info(lam_pos=lam_pos, scale_pos=scale_pos)


def cfg_weak(eps_weak_uncond: Array, eps_pos: Array, *, gamma) -> tuple[Array, dict]:
    """CFG with the weak model's ε_∅: ε̂ = ε_∅^weak + γ(ε_p − ε_∅^weak) (the autoguidance paper's CFG)."""
    return cfg(eps_weak_uncond, eps_pos, gamma=gamma)


def ncfg(eps_uncond: Array, eps_neg: Array, *, gamma, eps_pos=None) -> tuple[Array, dict]:
    """Negated CFG: ε̂ = ε_∅ [+ γΔ_p] − γΔ_n (as the CCFG paper and code define it)."""
    eps, lam_pos, scale_pos = _positive(eps_uncond, eps_uncond, eps_pos, gamma)
    lam_neg = _ones(eps_neg)
    return eps - gamma * (eps_neg - eps_uncond), _info(lam_neg, gamma * lam_neg, lam_pos, scale_pos)


def ccfg(eps_uncond: Array, eps_neg: Array, *, gamma, tau, eps_pos=None) -> tuple[Array, dict]:
    """CCFG: ε̂ = ε_∅ + γλ⁺Δ_p − γλ⁻Δ_n, λ⁻ = 2σ(−τ‖Δ_n‖²), λ⁺ = 2σ(τ‖Δ_p‖²) (Chang et al. 2024)."""
    xp = array_namespace(eps_uncond, eps_neg)
    d_neg = eps_neg - eps_uncond
    decay = xp.exp(-tau * _sq_norm(d_neg))  # (B,); e^{−s} never overflows (s ≥ 0)
    lam_neg = 2 * decay / (1 + decay)  # (B,) in (0, 1]; underflows to 0 only past τ‖Δ_n‖² ≈ 100
    eps = eps_uncond - gamma * _per_sample(lam_neg, d_neg) * d_neg
    lam_pos = scale_pos = None
    if eps_pos is not None:
        d_pos = eps_pos - eps_uncond
        lam_pos = 2 / (1 + xp.exp(-tau * _sq_norm(d_pos)))  # (B,) in [1, 2)
        eps = eps + gamma * _per_sample(lam_pos, d_pos) * d_pos
        scale_pos = gamma * lam_pos
    return eps, _info(lam_neg, gamma * lam_neg, lam_pos, scale_pos)


def dng(
    eps_uncond: Array, eps_neg: Array, *, gamma, gamma_pos, p_neg, eps_pos=None
) -> tuple[Array, dict]:
    """DNG (MATH §3): ε̂ = ε_∅ [+ γ_p Δ_p] − γ_n p/(1−p) Δ_n, p = p(n | x_t) tracked or exact.

    `gamma` is the negative scale γ_n, `gamma_pos` the positive term's own scale (CFG's γ); the
    reported scales are the coefficients of Δ_n and Δ_p in ε̂ (Koulischer et al. 2025).
    """
    eps, lam_pos, scale_pos = _positive(eps_uncond, eps_uncond, eps_pos, gamma_pos)
    lam_neg = p_neg / (1 - p_neg)  # (B,)
    eps = eps - gamma * _per_sample(lam_neg, eps_neg) * (eps_neg - eps_uncond)
    return eps, _info(lam_neg, gamma * lam_neg, lam_pos, scale_pos, p_neg=p_neg)


def dng_update(p_neg, x_next, mu_neg, mu_uncond, sigma2, *, temp, offset, p_min, p_max) -> Array:
    """(B,) DNG's tracked p(n | x_t'): p·exp((−Temp(‖x'−μ_n‖² − ‖x'−μ_∅‖²) + offset)/(2σ²)), clamped.

    Bayes' rule for one step of a stochastic chain when μ_n, μ_∅ and σ² are the means and the
    variance of one kernel and Temp = 1, offset = 0 (MATH §3); `dng_track` builds them.
    """
    xp = array_namespace(x_next)
    z = (-temp * (_sq_norm(x_next - mu_neg) - _sq_norm(x_next - mu_uncond)) + offset) / (2 * sigma2)
    log_p = xp.log(p_neg) + z
    return xp.clip(xp.exp(xp.clip(log_p, -80.0, 0.0)), p_min, p_max)  # clip before exp: no inf


def dng_track(
    p_neg, x, x_next, eps_neg, eps_uncond, ab, ab_next, *, temp, offset, p_min, p_max
) -> Array:
    """(B,) p(n | x_t') after the step x_t → x_t' of the stochastic (η = 1) kernel (MATH §3).

    The likelihood ratio N(x'; μ(ε_n), σ̃²) / N(x'; μ(ε_∅), σ̃²) of `ddpm_kernel`'s means and
    variance: the toy sampler and the image bridge both call this. x_t' must be a draw of that
    kernel (a deterministic step gives no likelihood to update on).
    """
    a, b, var = ddpm_kernel(ab, ab_next)
    xp = array_namespace(x)
    var = xp.clip(xp.asarray(var, dtype=xp.float32), 1e-12, None)  # ᾱ' = 1: the last step
    mean = lambda e: a * x + b * e
    return dng_update(
        p_neg,
        x_next,
        mean(eps_neg),
        mean(eps_uncond),
        var,
        temp=temp,
        offset=offset,
        p_min=p_min,
        p_max=p_max,
    )


def fbg_floor(pi, lam_max, like: Array) -> Array:
    """The lower clamp of log r (like's shape), where λ = r/(r − (1 − π)) reaches λ_max (MATH §3.2)."""
    return array_namespace(like).log((1 - pi) * lam_max / (lam_max - 1) + 0 * like)


def fbg_lam(log_r: Array, pi, lam_max) -> Array:
    """(B,) FBG's weight λ = r/(r − (1 − π)), log r floored by `fbg_floor` so that λ ≤ λ_max."""
    xp = array_namespace(log_r)
    r = xp.exp(xp.maximum(log_r, fbg_floor(pi, lam_max, log_r)))
    return r / (r - (1 - pi))


def fbg(eps_uncond: Array, eps_pos: Array, *, pi, lam_max, log_r) -> tuple[Array, dict]:
    """Feedback guidance (Koulischer et al., NeurIPS 2025; MATH §3.2): ε̂ = ε_∅ + λ(ε_c − ε_∅),
    λ = r/(r − (1 − π)), r = p_t(x | c)/p_t(x) tracked or exact, log r clamped from below so that
    λ ≤ λ_max. With the exact r it is the score of the de-mixed target ∝ p_t(x | c) − (1 − π)p_t(x)
    where that is positive."""
    lam = fbg_lam(log_r, pi, lam_max)
    return eps_uncond + _per_sample(lam, eps_pos) * (eps_pos - eps_uncond), _info(
        lam_pos=lam, scale_pos=lam, log_r=log_r
    )


def sd_negative(eps_neg: Array, eps_cond: Array, *, gamma) -> tuple[Array, dict]:
    """Stable Diffusion's negative prompt: ε̂ = ε_n + γ(ε_p − ε_n) = ε_∅ + γΔ_p − (γ − 1)Δ_n (MATH §3).

    ε_n replaces ε_∅, so the reported scales are the coefficients in ε̂: γ − 1 on Δ_n, γ on Δ_p.
    """
    ones = _ones(eps_neg)
    return eps_neg + gamma * (eps_cond - eps_neg), _info(
        ones, (gamma - 1) * ones, ones, gamma * ones
    )


def perp_neg(
    eps_uncond: Array, eps_pos: Array, eps_neg: Array, *, gamma, w_neg
) -> tuple[Array, dict]:
    """Perp-Neg: ε̂ = ε_∅ + γ[Δ_p − w_n perp(Δ_n, Δ_p)], perp(a, b) = a − (⟨a,b⟩/‖b‖²) b (Armandpour et al.).

    Written as ε_∅ + γλ⁺Δ_p − γλ⁻Δ_n: λ⁻ = w_n, λ⁺ = 1 + w_n⟨Δ_n,Δ_p⟩/‖Δ_p‖² (per sample).
    """
    xp = array_namespace(eps_uncond)
    d_pos, d_neg = eps_pos - eps_uncond, eps_neg - eps_uncond
    dot = xp.sum(d_neg * d_pos, axis=tuple(range(1, d_pos.ndim)))
    coef = dot / xp.clip(_sq_norm(d_pos), 1e-12, None)  # (B,); Δ_p = 0 leaves Δ_n unchanged
    perp = d_neg - _per_sample(coef, d_pos) * d_pos
    lam_neg, lam_pos = w_neg * _ones(d_neg), 1 + w_neg * coef  # ε̂ = ε_∅ + γλ⁺Δ_p − γλ⁻Δ_n
    return eps_uncond + gamma * (d_pos - w_neg * perp), _info(
        lam_neg, gamma * lam_neg, lam_pos, gamma * lam_pos
    )


def autoguidance(eps_cond: Array, eps_weak: Array, *, gamma) -> tuple[Array, dict]:
    """Autoguidance: ε̂ = ε_weak + w(ε_main − ε_weak), weak = a worse model (Karras et al. 2024)."""
    scale = gamma * _ones(eps_cond)
    return eps_weak + gamma * (eps_cond - eps_weak), _info(scale_pos=scale)


def sims(eps_cond: Array, eps_weak: Array, *, gamma) -> tuple[Array, dict]:
    """SIMS: ε̂ = ε_main − w(ε_sims − ε_main), ε_sims a net fine-tuned on its own samples (Alemohammad 2024)."""
    scale = gamma * _ones(eps_cond)
    return eps_cond - gamma * (eps_weak - eps_cond), _info(scale_neg=scale)


def perturbed(eps_cond: Array, eps_weak: Array, *, gamma) -> tuple[Array, dict]:
    """Perturbed-network guidance: ε̂ = ε + w(ε − ε_perturbed), one hidden layer skipped (cf. PAG, SLG)."""
    scale = gamma * _ones(eps_cond)
    return eps_cond + gamma * (eps_cond - eps_weak), _info(scale_neg=scale)


def icg(eps_rand: Array, eps_pos: Array, *, gamma) -> tuple[Array, dict]:
    """ICG: CFG with ε_∅ replaced by ε(x_t, c_random) (Sadat et al. 2024)."""
    scale = gamma * _ones(eps_pos)
    return eps_rand + gamma * (eps_pos - eps_rand), _info(scale_pos=scale)


def _dot(a: Array, b: Array) -> Array:
    """(B,) Σ a·b over every non-batch axis."""
    xp = array_namespace(a, b)
    return xp.sum(a * b, axis=tuple(range(1, a.ndim)))


def apg(x0_uncond: Array, x0_pos: Array, *, gamma, eta_par, r, beta, running) -> tuple[Array, dict]:
    """APG (Sadat et al., ICLR 2025; MATH §3.3), in x̂0 space: Δ = D_c − D_∅ + β·Δ̄ (Δ̄ the running
    Δ, state), clipped to norm r, split into Δ∥ (along D_c) and Δ⊥; D̂ = D_c + (γ − 1)(Δ⊥ + ηΔ∥)
    (the paper's form; diffusers' AdaptiveProjectedGuidance writes D_∅ + γ(Δ⊥ + ηΔ∥), equal at
    η = 1). η = 1, r = ∞, β = 0 is CFG."""
    xp = array_namespace(x0_uncond, x0_pos)
    d = x0_pos - x0_uncond + beta * running
    norm = xp.sqrt(_sq_norm(d))
    clip = xp.minimum(xp.ones_like(norm), r / xp.maximum(norm, 1e-12))
    d = _per_sample(clip, d) * d
    along = _dot(d, x0_pos) / xp.maximum(_sq_norm(x0_pos), 1e-12)
    par = _per_sample(along, d) * x0_pos
    out = x0_pos + (gamma - 1) * (d - par + eta_par * par)
    return out, _info(lam_pos=clip, scale_pos=gamma * clip)


def _apg_delta(running, step: Step, knobs) -> Array:
    """APG's running Δ after this step: D_c − D_∅ (x̂0 space) + β·Δ̄ (before the clip)."""
    x0 = {b: to_space("x0", step.branches[b], step.x, step.ab) for b in ("uncond", "pos")}
    return x0["pos"] - x0["uncond"] + knobs["beta"] * running


def cfg_pp(eps_uncond: Array, eps_pos: Array, *, lam) -> tuple[Array, dict]:
    """CFG++ (Chung et al., ICLR 2025; MATH §3.3): the data estimate from ε̂_λ = ε_∅ + λΔ_p,
    λ ∈ [0, 1], and the re-noising direction ε_∅ (info["renoise"], which the solver uses)."""
    lam_pos = _ones(eps_pos)
    eps = eps_uncond + lam * (eps_pos - eps_uncond)
    return eps, _info(lam_pos=lam_pos, scale_pos=lam * lam_pos, renoise=eps_uncond)


def tcfg(eps_uncond: Array, eps_pos: Array, *, gamma) -> tuple[Array, dict]:
    """TCFG (Kwon et al., CVPR 2025; MATH §3.3): ε_∅ projected on v₁, the top right-singular
    vector of the 2×D matrix [ε_c; ε_∅] of each sample; ε̂ = ε_∅' + γ(ε_c − ε_∅'). v₁ is Mᵀw/‖Mᵀw‖
    with w the top eigenvector of the 2×2 Gram matrix MMᵀ (closed form: no D×D SVD)."""
    xp = array_namespace(eps_uncond, eps_pos)
    a, b, d = _sq_norm(eps_pos), _dot(eps_pos, eps_uncond), _sq_norm(eps_uncond)
    top = (a + d) / 2 + xp.sqrt(((a - d) / 2) ** 2 + b**2)
    # the better-conditioned of the two eigenvector formulas; (1, 0) when M is 0
    w0 = xp.where(a >= d, top - d, b)
    w1 = xp.where(a >= d, b, top - a)
    degenerate = (xp.abs(w0) + xp.abs(w1)) <= 1e-30
    w0, w1 = xp.where(degenerate, xp.ones_like(w0), w0), xp.where(degenerate, 0 * w1, w1)
    v = _per_sample(w0, eps_pos) * eps_pos + _per_sample(w1, eps_pos) * eps_uncond
    v = v / _per_sample(xp.maximum(xp.sqrt(_sq_norm(v)), 1e-30), v)
    uncond = _per_sample(_dot(eps_uncond, v), v) * v
    scale = gamma * _ones(eps_pos)
    return uncond + gamma * (eps_pos - uncond), _info(lam_pos=_ones(eps_pos), scale_pos=scale)


def cfg_zero_star(
    v_uncond: Array, v_pos: Array, *, gamma, zero_steps, step_index
) -> tuple[Array, dict]:
    """CFG-Zero* (Fan et al. 2025; MATH §3.3), on flow velocities: α* = ⟨v_c, v_∅⟩/‖v_∅‖² per
    sample, v̂ = α* v_∅ + γ(v_c − α* v_∅); v̂ = 0 for the first `zero_steps` steps (zero-init)."""
    xp = array_namespace(v_uncond, v_pos)
    alpha = _dot(v_pos, v_uncond) / (_sq_norm(v_uncond) + 1e-8)
    base = _per_sample(alpha, v_uncond) * v_uncond
    out = base + gamma * (v_pos - base)
    zero = _per_sample(xp.astype(step_index < zero_steps, out.dtype), out)
    return out * (1 - zero), _info(scale_pos=gamma * _ones(v_pos), alpha_star=alpha)


def sld_term(
    eps_uncond: Array, eps_neg: Array, eps_text: Array, momentum: Array, *, s_s, thresh, s_m
):
    """(g_t, μ) of SLD (MATH §3.3): μ = min(s_S|ε_p − ε_S|, 1) where ε_p − ε_S < λ, else 0,
    element-wise; g_t = μ ⊙ (ε_S − ε_∅) + s_m ν_t (ν the momentum, the rule's state)."""
    xp = array_namespace(eps_uncond, eps_neg)
    diff = eps_text - eps_neg
    mu = xp.where(diff >= thresh, xp.zeros_like(diff), xp.clip(xp.abs(diff) * s_s, None, 1.0))
    return mu * (eps_neg - eps_uncond) + s_m * momentum, mu


def sld(
    eps_uncond: Array,
    eps_neg: Array,
    *,
    gamma,
    warmup,
    s_s,
    thresh,
    s_m,
    beta_m,
    momentum,
    step_index,
    eps_pos=None,
) -> tuple[Array, dict]:
    """Safe Latent Diffusion (Schramowski et al., CVPR 2023; MATH §3.3): ε̂ = ε_∅ + γ(ε_p − ε_∅ −
    g_t) from step `warmup` on (before: ε_∅ + γ(ε_p − ε_∅)), g_t of `sld_term`; ε_p = ε_∅ without
    a positive concept. Element-wise, so not invariant under a rotation of the plane. Reported:
    λ⁻ the mean of μ, γλ⁻ once active. Checked against diffusers' StableDiffusionPipelineSafe."""
    xp = array_namespace(eps_uncond, eps_neg)
    text = eps_uncond if eps_pos is None else eps_pos
    g, mu = sld_term(eps_uncond, eps_neg, text, momentum, s_s=s_s, thresh=thresh, s_m=s_m)
    active = _per_sample(xp.astype(step_index >= warmup, eps_uncond.dtype) * _ones(g), g)
    eps = eps_uncond + gamma * (text - eps_uncond - active * g)
    lam_neg = xp.mean(mu, axis=tuple(range(1, mu.ndim)))
    lam_pos = None if eps_pos is None else _ones(eps_pos)
    scale_neg = gamma * lam_neg * xp.reshape(active, (active.shape[0],))
    return eps, _info(lam_neg, scale_neg, lam_pos, None if lam_pos is None else gamma * lam_pos)


def _sld_update(state, step: Step, knobs):
    """SLD's momentum ν ← β_m ν + (1 − β_m) g_t (every step, warm-up included) and the step count."""
    momentum, count = state
    b = step.branches
    text = b["pos"] if "pos" in b else b["uncond"]
    g, _ = sld_term(
        b["uncond"], b["neg"], text, momentum, **{k: knobs[k] for k in ("s_s", "thresh", "s_m")}
    )
    return knobs["beta_m"] * momentum + (1 - knobs["beta_m"]) * g, count + 1


# SLD's presets (δ warm-up steps, s_S, λ threshold, s_m, β_m); MEDIUM is the registry default
SLD_PRESETS = {
    "weak": dict(warmup=15, s_s=20.0, thresh=0.0, s_m=0.0, beta_m=0.0),
    "medium": dict(warmup=10, s_s=1000.0, thresh=0.01, s_m=0.3, beta_m=0.4),
    "strong": dict(warmup=7, s_s=2000.0, thresh=0.025, s_m=0.5, beta_m=0.7),
    "max": dict(warmup=0, s_s=5000.0, thresh=1.0, s_m=0.5, beta_m=0.7),
}


def interval(eps_guided: Array, eps_unguided: Array, t, *, t_lo, t_hi) -> Array:
    """Guidance interval: ε̂ inside t ∈ [t_lo, t_hi], the unguided prediction outside (Kynkäänniemi 2024)."""
    xp = array_namespace(eps_guided)
    inside = xp.asarray((t >= t_lo) & (t <= t_hi))
    return xp.where(inside, eps_guided, eps_unguided)


WEIGHT_SCHEDULES = ("constant", "linear_up", "linear_down", "triangle", "window")
SCHEDULE_KNOBS = ("g_schedule", "g_late", "t_switch")  # weight's knobs (g_schedule: the index)


def schedule_knobs(name: str = "constant", g_late: float = 0.0, t_switch: float = STEPS_T / 2):
    """The knobs of a named weight schedule; ValueError lists the names."""
    if name not in WEIGHT_SCHEDULES:
        raise ValueError(f"weight schedule {name!r}: valid: {', '.join(WEIGHT_SCHEDULES)}")
    return dict(g_schedule=float(WEIGHT_SCHEDULES.index(name)), g_late=g_late, t_switch=t_switch)


def weight(t, *, g_schedule, g_late, t_switch, T: float = STEPS_T) -> Array:
    """g(t), the factor on γ at timestep t (MATH §3.3), s = t/T (1: pure noise). g_schedule is the
    index of WEIGHT_SCHEDULES: constant 1; linear_up 2(1 − s) (guidance grows as sampling goes
    on); linear_down 2s; triangle 2(1 − |2s − 1|) (TV-CFG: peak mid-way); each of these has time
    average 1, so the average of γg(t) is γ; window: 1 for t ≥ t_switch (early), g_late (0 or
    negative) after it."""
    xp = array_namespace(t)  # t: a numpy, JAX or torch array
    s = t / T
    shapes = (
        xp.ones_like(s),
        2 * (1 - s),
        2 * s,
        2 * (1 - xp.abs(2 * s - 1)),
        xp.where(t >= t_switch, xp.ones_like(s), g_late + 0 * s),
    )
    index = 0 * s + g_schedule  # an array of t's kind, whatever g_schedule is (float or traced)
    out = shapes[0]
    for i, g in enumerate(shapes[1:], 1):
        out = xp.where(index == i, g, out)
    return out


def scheduled(knobs: dict, t) -> dict:
    """The knobs of the step at t: γ times the weight schedule g(t) (knobs without γ unchanged)."""
    if "gamma" not in knobs or "g_schedule" not in knobs:
        return knobs
    g = weight(t, **{k: knobs[k] for k in SCHEDULE_KNOBS})
    return {**knobs, "gamma": knobs["gamma"] * g}


# ---------------------------------------------------------------------------------------- registry
class Param(NamedTuple):
    default: float
    lo: float
    hi: float
    log: bool = False  # slider on a log scale
    help: str = ""
    choices: tuple[str, ...] = ()  # a choice knob: scenes hold the name, the rule its index (float)
    pos_only: bool = False  # used only with a positive concept

    @property
    def initial(self) -> float | str:
        """The default as a scene holds it: a choice knob's name, else the number."""
        return self.choices[int(self.default)] if self.choices else self.default

    def index(self, name: str) -> float:
        """The traced value of a choice knob's name; ValueError lists the valid names."""
        if name not in self.choices:
            raise ValueError(f"{name!r} is not one of {', '.join(self.choices)}")
        return float(self.choices.index(name))


def choice(names: tuple[str, ...], help: str) -> Param:
    """A knob with named values (the first the default), traced as its index."""
    return Param(0.0, 0.0, float(len(names) - 1), help=help, choices=names)


class Step(NamedTuple):
    """What a rule's state sees at one sampling step (numpy, JAX or torch); None where unknown."""

    x: Array  # (B, ...) x_t
    ab: Array  # ᾱ_t
    ab_next: Array  # ᾱ_t' of the step's end
    x_next: Array | None = None  # x_t', the solver's draw (update only)
    branches: dict | None = None  # the branch predictions at x_t (update only)
    posterior: Callable | None = None  # () -> (B,) exact p(n | x_t): the toy's oracle, else None
    log_ratio: Callable | None = None  # () -> (B,) exact log p_t(x | c)/p_t(x) of the positive c
    levels: Array | None = None  # (N + 1,) ᾱ of the run's grid, noise to data (FBG's τ_f and δ)


class State(NamedTuple):
    """A rule's per-sample state, in optax's init/update shape: pure functions over an opaque pytree
    that the JAX sampler carries through its scan and the torch bridge through its loop.

    init(x_T, knobs) -> state; read(state, step, knobs) -> extra keyword arguments of the rule's fn
    at x_t; update(state, step, knobs) -> the state after the solver's step (step.x_next known).
    """

    init: Callable
    read: Callable
    update: Callable
    params: dict[str, Param] = {}  # the state's own knobs
    eta: float | None = None  # the η its update needs, whatever the scene's (a stochastic chain: 1)
    exact: bool = False  # reads Step.posterior: only where an exact mixture is (not on images)
    field: Callable | None = None  # (step, knobs) -> read's output off any trajectory (field maps)

    def at(self, step: Step, knobs) -> dict:
        """The rule's extra arguments at a point no trajectory led to (the field view): `field`,
        else what `read` gives for the initial state."""
        if self.field is not None:
            return self.field(step, knobs)
        return self.read(self.init(step.x, knobs), step, knobs)


class Rule(NamedTuple):
    name: str
    fn: Callable
    label: str
    branches: tuple[str, ...]  # positional: uncond | pos | neg | cond | weak | weak_uncond | rand
    params: dict[str, Param]  # the rule's knobs (those fn takes, and those of step_knobs)
    optional_pos: bool = False  # takes eps_pos= when a positive concept is given
    state: State | None = None  # per-sample state carried along the chain (DNG's posterior)
    weak: str = "weak"  # model of the 'weak' branch: weak (shipped weak net | δ-blur), sims, skip
    step_knobs: Callable | None = None  # (knobs, κ_t/κ_ref) -> the knobs of one step (MATH §3.1)
    space: str = "eps"  # where fn acts: "eps", "x0" (x̂0) or "v" (flow velocity); MATH §3.4

    @property
    def all_params(self) -> dict[str, Param]:
        """Every knob of the rule, its own and its state's."""
        return {**self.params, **(self.state.params if self.state else {})}

    @property
    def fn_params(self) -> tuple[str, ...]:
        """The knobs passed to fn: those of its keyword parameters."""
        return tuple(k for k in self.params if k in _keywords(self.fn))


@functools.cache
def _keywords(fn: Callable) -> frozenset[str]:
    return frozenset(inspect.signature(fn).parameters)


SPACES = ("eps", "x0", "v")


def to_space(space: str, eps: Array, x: Array, ab) -> Array:
    """ε at the VP point x of level ᾱ in `space`: ε, x̂0 = (x − √(1−ᾱ)ε)/√ᾱ or v = ε − x̂0 (MATH §3.4)."""
    if space == "eps":
        return eps
    x0 = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
    return x0 if space == "x0" else eps - x0


def from_space(space: str, pred: Array, x: Array, ab) -> Array:
    """Inverse of to_space: ε = (x − √ᾱ x̂0)/√(1−ᾱ), or ε = (x + √ᾱ v)/(√ᾱ + √(1−ᾱ)) from v."""
    if space == "eps":
        return pred
    a, b = ab**0.5, (1 - ab) ** 0.5
    if space == "x0":
        return (x - a * pred) / b
    # v = ε − x̂0 and x = a x̂0 + b ε  =>  ε = (x + a v)/(a + b)
    return (x + a * pred) / (a + b)


def _gamma(default):
    return Param(default, 0.0, 20.0, help="guidance scale γ")


_DNG_GAMMA = {
    "gamma": Param(5.0, 0.0, 20.0, help="negative guidance scale γ_n"),
    "gamma_pos": Param(
        3.0, 0.0, 20.0, help="scale γ_p of the positive term (CFG's γ)", pos_only=True
    ),
}
# Toy defaults: Temp = 1 and no offset make the update Bayes' rule for the stochastic (η = 1) kernel,
# and the prior is about one concept in three. The official values (prior 0.01, Temp 0.2, offset
# 2e-4) were tuned for 1000 DDPM steps on 3072-dimensional CIFAR-10 images, not for 2D.
_OFFICIAL = "official 1000-step CIFAR-10 value"
_DNG_STATE = {
    "prior": Param(
        0.3, 1e-4, 0.5, True, f"p_T: prior probability of the negative concept ({_OFFICIAL} 0.01)"
    ),
    "temp": Param(
        1.0, 1e-3, 10.0, True, f"Temp: sharpness of the update; 1 is Bayes' rule ({_OFFICIAL} 0.2)"
    ),
    "offset": Param(
        0.0,
        -1.0,
        1.0,
        help=f"offset of the log-posterior update; 0 is Bayes' rule ({_OFFICIAL} 2e-4)",
    ),
    "p_min": Param(1e-6, 1e-8, 1e-2, True, "lower clamp of the tracked posterior"),
    "p_max": Param(0.8, 0.5, 0.999, help="upper clamp of the tracked posterior"),
}

_TRACK_KNOBS = ("temp", "offset", "p_min", "p_max")


def _dng_init(x, knobs):
    """The tracked p(n | x_T): the prior p_T for every sample."""
    return _ones(x) * knobs["prior"]


def _dng_read(p_neg, step: Step, knobs) -> dict:
    return {"p_neg": p_neg}


def _dng_update(p_neg, step: Step, knobs):
    """Bayes' rule for the solver's (stochastic) step: `dng_track` (MATH §3)."""
    return dng_track(
        p_neg,
        step.x,
        step.x_next,
        step.branches["neg"],
        step.branches["uncond"],
        step.ab,
        step.ab_next,
        **{k: knobs[k] for k in _TRACK_KNOBS},
    )


def _oracle_read(state, step: Step, knobs) -> dict:
    """The exact p(n | x_t), clamped to [p_min, p_max] so that p/(1−p) stays finite."""
    xp = array_namespace(step.x)
    return {"p_neg": xp.clip(step.posterior(), knobs["p_min"], knobs["p_max"])}


# off a trajectory the tracked posterior has no value: the field maps show the exact one
TRACKED = State(
    _dng_init,
    _dng_read,
    _dng_update,
    _DNG_STATE,
    eta=1.0,
    field=lambda s, k: _oracle_read(None, s, k),
)
ORACLE = State(
    lambda x, knobs: _ones(x) * 0,
    _oracle_read,
    lambda state, step, knobs: state,
    {k: _DNG_STATE[k] for k in ("p_min", "p_max")},
    exact=True,
)

_FBG = {
    "pi": Param(0.95, 0.5, 0.999, help="π: the share of p(x | c) in the mixture FBG de-mixes"),
    "lam_max": Param(10.0, 1.1, 100.0, True, "λ_max: the largest guidance weight"),
}
_FBG_TRACK = {
    "t0": Param(
        0.5, 0.0, 0.99, help="t0: by t0 (1: noise) λ reaches 3 without evidence (offset δ)"
    ),
    "t1": Param(
        0.4, 0.0, 1.0, help="t1: the step whose kernel variance sets the update's temperature"
    ),
}
FBG_LOG_R_MAX = 3.0  # the tracked log r's upper clamp


def fbg_track(log_r, step: Step, knobs) -> Array:
    """(B,) log r after the stochastic step x_t → x_t' (MATH §3.2): log r − τ_f/(2σ̃²)(‖x' − μ_c‖²
    − ‖x' − μ_∅‖²) + δ, clamped to [log r_min, 3], the means and σ̃² of `ddpm_kernel`; δ =
    log(1.5(1 − π))/((1 − t0)N) and τ_f = |2σ̃²(t1)δ/10| from the run's grid step.levels (N steps)."""
    xp = array_namespace(step.x)
    levels = step.levels
    n = levels.shape[0] - 1
    a, b, var = ddpm_kernel(step.ab, step.ab_next)
    var = xp.clip(xp.asarray(var, dtype=xp.float32), 1e-12, None)
    i1 = xp.astype(xp.clip(xp.round((1 - knobs["t1"] + 0 * log_r[:1]) * n), 0, n - 1), xp.int32)
    var1 = ddpm_kernel(levels[i1], levels[i1 + 1])[2]
    delta = math.log(1.5) + xp.log(1 - knobs["pi"] + 0 * log_r)
    delta = delta / ((1 - knobs["t0"]) * n)
    tau = xp.abs(2 * var1 * delta / 10)
    mean = lambda e: a * step.x + b * e
    c, u = step.branches["pos"], step.branches["uncond"]
    z = -tau / (2 * var) * (_sq_norm(step.x_next - mean(c)) - _sq_norm(step.x_next - mean(u)))
    floor = fbg_floor(knobs["pi"], knobs["lam_max"], log_r)
    return xp.clip(log_r + z + delta, floor, FBG_LOG_R_MAX)


FBG_TRACKED = State(
    lambda x, knobs: _ones(x) * 0,  # log r = 0: r = 1 at x_T
    lambda log_r, step, knobs: {"log_r": log_r},
    fbg_track,
    _FBG_TRACK,
    eta=1.0,
    field=lambda step, knobs: {"log_r": step.log_ratio()},
)
FBG_ORACLE = State(
    lambda x, knobs: _ones(x) * 0,
    lambda state, step, knobs: {"log_r": step.log_ratio()},
    lambda state, step, knobs: state,
    exact=True,
)

_TAU_SCHEDULE = choice(
    ("constant", "kernel"),
    "τ over the steps: constant, or τ·κ_t/κ_ref with the reverse kernel's temperature "
    "κ_t = b_t²/(2σ̃_t²) (derived in toydiff's MATH §3.1 from the NCE loss, not from the paper)",
)


def _kernel_tau(knobs: dict, kappa) -> dict:
    """CCFG's knobs at one step: τ_t = τ·κ_t/κ_ref when tau_schedule is 'kernel' (MATH §3.1)."""
    kernel = knobs.get("tau_schedule", 0.0)  # 0 constant (the default), 1 kernel; traced
    return {**knobs, "tau": knobs["tau"] * (1 + kernel * (kappa - 1))}


RULES: dict[str, Rule] = {}


def register(r: Rule) -> Rule:
    """Registers a rule (also from outside the package): its name becomes a `method` everywhere —
    toydiff.run, scene JSON, the CLI, the app's controls, sweeps, the atlas and the bridge. Its knob
    names, defaults and ranges are its Params; a name already registered is replaced. Returns it."""
    if r.space not in SPACES:
        raise ValueError(f"rule {r.name!r}: space {r.space!r} is not one of {', '.join(SPACES)}")
    RULES[r.name] = r
    return r


for _r in (
    Rule("none", none, "No guidance", ("cond",), {}),
    Rule("cfg", cfg, "CFG", ("uncond", "pos"), {"gamma": _gamma(3.0)}),
    Rule("ncfg", ncfg, "Negated CFG", ("uncond", "neg"), {"gamma": _gamma(3.0)}, True),
    Rule(
        "ccfg",
        ccfg,
        "Contrastive CFG",
        ("uncond", "neg"),
        {
            "gamma": _gamma(3.0),
            "tau": Param(0.5, 1e-3, 10.0, True, "temperature τ of λ = 2σ(∓τ‖Δ‖²)"),
            "tau_schedule": _TAU_SCHEDULE,
        },
        True,
        step_knobs=_kernel_tau,
    ),
    Rule("dng", dng, "Dynamic negative guidance", ("uncond", "neg"), _DNG_GAMMA, True, TRACKED),
    Rule("dng_oracle", dng, "DNG, exact posterior", ("uncond", "neg"), _DNG_GAMMA, True, ORACLE),
    Rule(
        "sd_negative",
        sd_negative,
        "SD negative prompt",
        ("neg", "cond"),
        {"gamma": _gamma(3.0)},
    ),
    Rule(
        "perp_neg",
        perp_neg,
        "Perp-Neg",
        ("uncond", "pos", "neg"),
        {
            "gamma": _gamma(3.0),
            "w_neg": Param(1.0, 0.0, 5.0, help="weight of the perpendicular part"),
        },
    ),
    Rule("autoguidance", autoguidance, "Autoguidance", ("cond", "weak"), {"gamma": _gamma(2.0)}),
    Rule(
        "cfg_weak",
        cfg_weak,
        "CFG, weak unconditional model",
        ("weak_uncond", "pos"),
        {"gamma": _gamma(3.0)},
    ),
    Rule(
        "sims",
        sims,
        "SIMS (self-trained negative)",
        ("cond", "weak"),
        {"gamma": _gamma(1.0)},
        weak="sims",
    ),
    Rule(
        "perturbed",
        perturbed,
        "Perturbed-network guidance",
        ("cond", "weak"),
        {"gamma": _gamma(1.0)},
        weak="skip",
    ),
    Rule("icg", icg, "Independent condition guidance", ("rand", "pos"), {"gamma": _gamma(3.0)}),
    Rule(
        "apg",
        apg,
        "Adaptive projected guidance (APG)",
        ("uncond", "pos"),
        {
            "gamma": _gamma(3.0),
            "eta_par": Param(0.0, 0.0, 1.0, help="weight η of Δ's part along D_c (paper: 0)"),
            "r": Param(10.0, 0.01, 1e7, True, "largest ‖Δ‖ in x̂0 space (≥ 1e6: no clipping)"),
            "beta": Param(0.0, -0.9, 0.9, help="momentum β of the running Δ (paper: ≤ 0)"),
        },
        state=State(
            init=lambda x, knobs: x * 0,
            read=lambda running, step, knobs: {"running": running},
            update=_apg_delta,
        ),
        space="x0",
    ),
    Rule(
        "cfg_pp",
        cfg_pp,
        "CFG++",
        ("uncond", "pos"),
        {"lam": Param(0.6, 0.0, 1.0, help="λ of ε_∅ + λΔ_p in the data estimate (∈ [0, 1])")},
    ),
    Rule("tcfg", tcfg, "Tangential CFG (TCFG)", ("uncond", "pos"), {"gamma": _gamma(3.0)}),
    Rule(
        "cfg_zero_star",
        cfg_zero_star,
        "CFG-Zero*",
        ("uncond", "pos"),
        {
            "gamma": _gamma(3.0),
            "zero_steps": Param(2.0, 0.0, 50.0, help="steps with v̂ = 0 at the start (zero-init)"),
        },
        state=State(
            init=lambda x, knobs: _ones(x) * 0,
            read=lambda count, step, knobs: {"step_index": count},
            update=lambda count, step, knobs: count + 1,
        ),
        space="v",
    ),
    Rule(
        "sld",
        sld,
        "Safe Latent Diffusion (SLD)",
        ("uncond", "neg"),
        {
            "gamma": _gamma(3.0),
            "warmup": Param(10.0, 0.0, 1000.0, help="steps before the safety term acts (δ)"),
            "s_s": Param(1000.0, 1.0, 1e4, True, "safety scale s_S of μ = min(s_S|ε_p − ε_S|, 1)"),
            "thresh": Param(0.01, 0.0, 1.0, help="threshold λ: μ = 0 where ε_p − ε_S ≥ λ"),
            "s_m": Param(0.3, 0.0, 1.0, help="momentum scale s_m"),
            "beta_m": Param(0.4, 0.0, 0.99, help="momentum β_m of ν"),
        },
        True,
        state=State(
            init=lambda x, knobs: (x * 0, _ones(x) * 0),
            read=lambda state, step, knobs: {"momentum": state[0], "step_index": state[1]},
            update=_sld_update,
        ),
    ),
    Rule("fbg", fbg, "Feedback guidance (FBG)", ("uncond", "pos"), _FBG, state=FBG_TRACKED),
    Rule("fbg_oracle", fbg, "FBG, exact ratio", ("uncond", "pos"), _FBG, state=FBG_ORACLE),
):
    register(_r)


def rule(name: str) -> Rule:
    """The registered rule; unknown name -> ValueError listing the valid names."""
    if name not in RULES:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(RULES)}")
    return RULES[name]


def needs_positive(r: Rule) -> bool:
    """Whether the rule needs a positive concept."""
    return "pos" in r.branches


def needs_negative(r: Rule) -> bool:
    """Whether the rule needs a negative concept."""
    return "neg" in r.branches


def apply(
    r: Rule, branches: dict[str, Array], knobs: dict, extra: dict | None = None, kappa=1.0, at=None
) -> tuple[Array, dict]:
    """(eps, info) of rule r on named branch outputs (ε); knobs must hold r.params (extras ignored).

    extra: keyword arguments from the rule's state (State.read); kappa: the step's kernel
    temperature κ_t/κ_ref for step_knobs; at = (x, ᾱ): where the branches were evaluated, needed by
    a rule that acts in x̂0 or v space (its branches are converted there and its output back to ε;
    a re-noising prediction it returns as info["renoise"] is converted too).
    """
    if r.step_knobs is not None:
        knobs = r.step_knobs(knobs, kappa)
    kwargs = {k: knobs[k] for k in r.fn_params}
    if r.space != "eps":
        branches = {b: to_space(r.space, e, *at) for b, e in branches.items()}
    if r.optional_pos and "pos" in branches:
        kwargs["eps_pos"] = branches["pos"]
    eps, info = r.fn(*(branches[b] for b in r.branches), **kwargs, **(extra or {}))
    if r.space != "eps":
        eps = from_space(r.space, eps, *at)
        if info.get("renoise") is not None:
            info["renoise"] = from_space(r.space, info["renoise"], *at)
    return eps, {k: v for k, v in info.items() if v is not None}
