"""DDIM(η) / DDPM sampling with `lax.scan`, guidance injected as a rule (MATH §1, §3).

One compile per `SamplerConfig` (rule, steps, points, schedule, positive or not): γ, τ, η, the
interval, the seed, the concepts and the denoiser's weights are all traced.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import exact, guidance, schedule
from .denoisers import BRANCH_MODELS, Denoiser, eval_branches


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    rule: str = "ccfg"
    steps: int = 50
    n: int = 2000
    has_pos: bool = False
    schedule: str = "linear"

    @property
    def branches(self) -> tuple[str, ...]:
        """Distinct branches to evaluate: the rule's, its optional positive, and the unguided one."""
        r = guidance.rule(self.rule)
        names = [self._resolve(b) for b in r.branches]
        if r.optional_pos and self.has_pos:
            names.append("pos")
        if "neg" in names:
            names.append("uncond")  # Δ_n = ε_n − ε_∅ of every rule with a negative term (push_neg)
        return tuple(dict.fromkeys([*names, self.unguided]))

    @property
    def unguided(self) -> str:
        """The branch used outside the guidance interval: ε_p, or ε_∅ without a positive concept."""
        return "pos" if self.has_pos else "uncond"

    def _resolve(self, branch: str) -> str:
        return self.unguided if branch == "cond" else branch


class Cond(NamedTuple):
    pos: int  # positive concept index (ignored unless config.has_pos)
    neg: int  # negative concept index (ignored by rules without a negative branch)


class SampleCarry(NamedTuple):
    x: jax.Array  # (N, 2)
    p_neg: jax.Array  # (N,) DNG's p(n | x_t); unused by other rules


class Result(NamedTuple):
    x0: jax.Array  # (N, 2) final samples
    traj: jax.Array  # (S+1, N, 2) x_T, ..., x0
    info: dict  # name -> (S, N) per-step diagnostics


def effective_eta(rule: str, eta: float) -> float:
    """The η a run uses: the scene's, or the one the rule's state needs (tracked DNG filters a
    stochastic chain: η = 1, MATH §3)."""
    required = guidance.rule(rule).eta
    return float(eta if required is None else required)


def default_knobs(rule: str, **overrides) -> dict[str, float]:
    """Every traced knob as a Python float: the rule's defaults, η = 0, interval [0, T], then overrides."""
    knobs = {k: p.default for k, p in guidance.rule(rule).all_params.items()}
    knobs.update(eta=0.0, t_lo=0.0, t_hi=float(schedule.T))
    knobs.update(overrides)
    return {k: float(v) for k, v in knobs.items()}  # float(): a new value never recompiles


def branch_concepts(config: SamplerConfig, mix, cond: Cond, key: jax.Array) -> jax.Array:
    """(B, N) concept ids per branch: ∅ = C, positive, negative, or a random concept (ICG)."""
    c, n = len(mix.concepts), config.n
    ids = {
        "uncond": jnp.full(n, c),
        "pos": jnp.full(n, cond.pos),
        "neg": jnp.full(n, cond.neg),
        "rand": jax.random.randint(key, (n,), 0, c),
    }
    ids["weak"] = ids[config.unguided]  # the weak model sees the same condition as the main one
    ids["weak_uncond"] = ids["uncond"]  # ... or ∅ (CFG with a weak unconditional model)
    return jnp.stack([ids[b] for b in config.branches])


def guided_eps(
    config: SamplerConfig, den: Denoiser, concepts, knobs, x, t, alpha_bar, p_neg, kappa=1.0
):
    """(ε̂, branches, info): the rule applied to every branch at x_t, inside the guidance interval;
    kappa is the step's kernel temperature κ_t/κ_ref (schedule.kernel_temperature)."""
    r = guidance.rule(config.rule)
    models = tuple(BRANCH_MODELS[b] for b in config.branches)
    eps_all = eval_branches(den, models, x, t, alpha_bar, concepts)  # (B, N, 2)
    branches = dict(zip(config.branches, eps_all))
    branches.update({b: branches[config._resolve(b)] for b in r.branches})
    eps, info = guidance.apply(r, branches, knobs, p_neg, kappa)
    unguided = branches[config.unguided]
    eps = guidance.interval(eps, unguided, t, t_lo=knobs["t_lo"], t_hi=knobs["t_hi"])
    info["guidance_norm"] = jnp.sqrt(jnp.sum((eps - unguided) ** 2, -1))
    for name in ("neg", "pos"):
        if name in branches and "uncond" in branches:
            info[f"d_{name}_sq"] = jnp.sum((branches[name] - branches["uncond"]) ** 2, -1)  # ‖Δ‖²
    return eps, branches, info


def oracle_p_neg(den: Denoiser, cond: Cond, x, alpha_bar, knobs) -> jax.Array:
    """(N,) exact p(n | x_t), clamped to [p_min, p_max] so that p/(1−p) stays finite."""
    p = exact.posteriors(den.mix, x, alpha_bar)[:, cond.neg]
    return jnp.clip(p, knobs.get("p_min", 1e-6), knobs.get("p_max", 0.999))


def _ddim(x, eps, ab, ab_next, sigma, z):
    """One DDIM step: x_t' = √ᾱ' x̂0 + √(1−ᾱ'−σ²) ε̂ + σz, and x̂0 (MATH §1)."""
    x0_hat = (x - jnp.sqrt(1 - ab) * eps) / jnp.sqrt(ab)
    return (
        jnp.sqrt(ab_next) * x0_hat
        + jnp.sqrt(jnp.maximum(1 - ab_next - sigma**2, 0.0)) * eps
        + sigma * z
    )


def ddim_eps_coef(ab, ab_next, sigma):
    """b_t, the coefficient of ε̂ in the DDIM update: √(1−ᾱ'−σ²) − √(ᾱ'/ᾱ)·√(1−ᾱ) (MATH §3.1)."""
    return jnp.sqrt(jnp.maximum(1 - ab_next - sigma**2, 0.0)) - jnp.sqrt(ab_next / ab) * jnp.sqrt(
        1 - ab
    )


def push_neg(info: dict, b, inside) -> jax.Array | None:
    """(N,) the displacement of x_t that the negative term causes in one step, |b_t|·|γλ⁻|·‖Δ_n‖
    (MATH §3.1), 0 outside the guidance interval; None for a rule without a negative term."""
    if "scale_neg" not in info or "d_neg_sq" not in info:
        return None
    return jnp.abs(b) * jnp.abs(info["scale_neg"]) * jnp.sqrt(info["d_neg_sq"]) * inside


@functools.partial(jax.jit, static_argnames=("config",))
def sample(config: SamplerConfig, den: Denoiser, key: jax.Array, cond: Cond, knobs: dict) -> Result:
    """Samples config.n points with the guided rule; the same key gives the same x_T and noises.

    A rule whose state needs a stochastic chain (Rule.eta) runs with that η (effective_eta).
    """
    init_key, rand_key, noise_key = jax.random.split(key, 3)
    r = guidance.rule(config.rule)
    eta = knobs["eta"] if r.eta is None else r.eta
    concepts = branch_concepts(config, den.mix, cond, rand_key)
    ts, ab_t, ab_next = schedule.step_alpha_bars(config.schedule, config.steps)
    kappas = schedule.kernel_temperature(config.schedule, config.steps)
    x_T = jax.random.normal(init_key, (config.n, 2))

    def step(carry: SampleCarry, inputs):
        i, t, ab, ab_n, kappa = inputs
        p_neg = oracle_p_neg(den, cond, carry.x, ab, knobs) if r.state == "oracle" else carry.p_neg
        eps, branches, info = guided_eps(config, den, concepts, knobs, carry.x, t, ab, p_neg, kappa)
        sigma = schedule.ddim_sigma(ab, ab_n, eta)
        z = jax.random.normal(jax.random.fold_in(noise_key, i), carry.x.shape)
        x_next = _ddim(carry.x, eps, ab, ab_n, sigma, z)
        inside = (t >= knobs["t_lo"]) & (t <= knobs["t_hi"])
        push = push_neg(info, ddim_eps_coef(ab, ab_n, sigma), inside)
        if push is not None:
            info["push_neg"] = push
        if r.state == "tracked":  # DNG: Bayes' rule for the step of the stochastic kernel
            p_neg = guidance.dng_track(
                p_neg,
                carry.x,
                x_next,
                branches["neg"],
                branches["uncond"],
                ab,
                ab_n,
                **{k: knobs[k] for k in ("temp", "offset", "p_min", "p_max")},
            )
        return SampleCarry(x_next, p_neg), (x_next, info)

    carry = SampleCarry(x_T, jnp.full(config.n, knobs.get("prior", 0.0), jnp.float32))
    inputs = (jnp.arange(config.steps), jnp.asarray(ts, jnp.float32), ab_t, ab_next, kappas)
    carry, (xs, info) = jax.lax.scan(step, carry, inputs)
    return Result(carry.x, jnp.concatenate([x_T[None], xs]), info)


@functools.partial(jax.jit, static_argnames=("config",))
def sample_sweep(
    config: SamplerConfig, den: Denoiser, key: jax.Array, cond: Cond, knobs: dict
) -> Result:
    """`sample` over a sweep in one compiled call: knobs hold (G,) arrays, the Result gains axis G."""
    return jax.vmap(lambda k: sample(config, den, key, cond, k))(knobs)
