"""Guided sampling with `lax.scan`: a rule (guidance.py) inside a solver (solvers.py) (MATH §1, §3).

One compile per `SamplerConfig` (rule, steps, points, schedule, positive or not, solver): γ, τ, η,
the interval, the seed, the concepts and the denoiser's weights are all traced. A rule's state
(guidance.State) rides in the scan's carry; the sampler knows nothing of what it holds.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import exact, guidance, schedule, solvers
from .denoisers import BRANCH_MODELS, Denoiser, eval_branches


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    rule: str = "ccfg"
    steps: int = 50
    n: int = 2000
    has_pos: bool = False
    schedule: str = "linear"
    solver: str = "ddim"

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

    def levels(self):
        """(steps + 1,) ᾱ of the solver's grid, from pure noise to the data (ᾱ = 1)."""
        return solvers.solver(self.solver).grid(self.schedule, self.steps)


class Cond(NamedTuple):
    pos: int  # positive concept index (ignored unless config.has_pos)
    neg: int  # negative concept index (ignored by rules without a negative branch)


class SampleCarry(NamedTuple):
    x: jax.Array  # (N, 2) x_t (VP coordinates, whatever the solver)
    state: object  # the rule's state pytree (guidance.State), None without one
    memory: object = None  # a multistep solver's memory (solvers.Solver.memory), else None


class Result(NamedTuple):
    x0: jax.Array  # (N, 2) final samples
    traj: jax.Array  # (S+1, N, 2) x_T, ..., x0
    info: dict  # name -> (S, N) per-step diagnostics


def effective_eta(rule: str, eta: float) -> float:
    """The η a run uses: the scene's, or the one the rule's state needs (tracked DNG filters a
    stochastic chain: η = 1, MATH §3)."""
    state = guidance.rule(rule).state
    return float(eta if state is None or state.eta is None else state.eta)


def check(config: SamplerConfig) -> None:
    """ValueError when the rule's state cannot run on the solver: a state that filters the chain
    (tracked DNG, FBG) needs a step that is the DDPM kernel at η = 1 (`Solver.stochastic`)."""
    r, s = guidance.rule(config.rule), solvers.solver(config.solver)
    if r.state is not None and r.state.eta is not None and not s.stochastic:
        ok = ", ".join(n for n, v in solvers.SOLVERS.items() if v.stochastic)
        raise ValueError(
            f"solver: {config.rule!r} updates its state on a stochastic step; solver "
            f"{config.solver!r} has no DDPM-kernel step for it to filter (use {ok})"
        )


def default_knobs(rule: str, **overrides) -> dict[str, float]:
    """Every traced knob as a Python float: the rule's defaults, η = 0, interval [0, T], a constant
    weight schedule (guidance.weight), then overrides."""
    knobs = {k: p.default for k, p in guidance.rule(rule).all_params.items()}
    knobs.update(eta=0.0, t_lo=0.0, t_hi=float(schedule.T), g_schedule=0.0, g_late=0.0)
    knobs.update(t_switch=schedule.T / 2)
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
    config: SamplerConfig, den: Denoiser, concepts, knobs, x, t, alpha_bar, extra, kappa=1.0
):
    """(Prediction, branches): the rule applied to every branch at x_t, inside the guidance interval.

    extra: the rule state's keyword arguments (State.read); kappa: the step's kernel temperature
    κ_t/κ_ref (schedule.kernel_temperature)."""
    r = guidance.rule(config.rule)
    models = tuple(BRANCH_MODELS[b] for b in config.branches)
    eps_all = eval_branches(den, models, x, t, alpha_bar, concepts)  # (B, N, 2)
    branches = dict(zip(config.branches, eps_all))
    branches.update({b: branches[config._resolve(b)] for b in r.branches})
    step_knobs = guidance.scheduled(knobs, t)  # γ·g(t)
    eps, info = guidance.apply(r, branches, step_knobs, extra, kappa, at=(x, alpha_bar))
    renoise = info.pop("renoise", eps)
    unguided = branches[config.unguided]
    inside = lambda e: guidance.interval(e, unguided, t, t_lo=knobs["t_lo"], t_hi=knobs["t_hi"])
    eps, renoise = inside(eps), inside(renoise)
    info["guidance_norm"] = jnp.sqrt(jnp.sum((eps - unguided) ** 2, -1))
    for name in ("neg", "pos"):
        if name in branches and "uncond" in branches:
            info[f"d_{name}_sq"] = jnp.sum((branches[name] - branches["uncond"]) ** 2, -1)  # ‖Δ‖²
    return solvers.Prediction(eps, renoise, info), branches


def exact_posterior(den: Denoiser, cond: Cond, x, alpha_bar):
    """() -> (N,) the exact p(n | x_t) (guidance.Step.posterior): the oracle rules read it."""
    return lambda: exact.posteriors(den.mix, x, alpha_bar)[:, cond.neg]


def exact_log_ratio(den: Denoiser, cond: Cond, x, alpha_bar):
    """() -> (N,) the exact log p_t(x | c)/p_t(x) of the positive concept (Step.log_ratio)."""
    table = exact.concept_table(den.mix)
    return lambda: (
        exact.log_prob_rows(den.mix, x, alpha_bar, table[cond.pos])
        - (exact.log_prob_rows(den.mix, x, alpha_bar, table[-1]))
    )


def exact_step(den: Denoiser, cond: Cond, x, ab, ab_next, levels=None) -> guidance.Step:
    """What a rule's state sees at x_t on the toy: the exact posterior and ratio, the grid."""
    return guidance.Step(
        x,
        ab,
        ab_next,
        posterior=exact_posterior(den, cond, x, ab),
        log_ratio=exact_log_ratio(den, cond, x, ab),
        levels=levels,
    )


def push_neg(info: dict, b, inside) -> jax.Array | None:
    """(N,) the displacement of x_t that the negative term causes in one step, |b_t|·|γλ⁻|·‖Δ_n‖
    (MATH §3.1), 0 outside the guidance interval; None for a rule without a negative term."""
    if "scale_neg" not in info or "d_neg_sq" not in info:
        return None
    return jnp.abs(b) * jnp.abs(info["scale_neg"]) * jnp.sqrt(info["d_neg_sq"]) * inside


def model_at(config: SamplerConfig, den: Denoiser, concepts, knobs, extra, kappa, cache: dict):
    """The solver's model(x, ᾱ) -> Prediction at any noise level (net time input t_of(ᾱ)); the
    branches of its first call are kept in `cache` for the rule's state update."""

    def model(x, ab):
        t = schedule.t_of(config.schedule, ab)
        pred, branches = guided_eps(config, den, concepts, knobs, x, t, ab, extra, kappa)
        cache.setdefault("branches", branches)
        cache.setdefault("t", t)
        return pred

    return model


@functools.partial(jax.jit, static_argnames=("config",))
def sample(config: SamplerConfig, den: Denoiser, key: jax.Array, cond: Cond, knobs: dict) -> Result:
    """Samples config.n points with the guided rule and the config's solver; the same key gives the
    same x_T and noises. A rule whose state needs a stochastic chain (State.eta) runs with that η."""
    check(config)
    init_key, rand_key, noise_key = jax.random.split(key, 3)
    r, solver = guidance.rule(config.rule), solvers.solver(config.solver)
    eta = r.state.eta if r.state and r.state.eta is not None else knobs["eta"]
    concepts = branch_concepts(config, den.mix, cond, rand_key)
    levels = config.levels()
    grid = jnp.asarray(levels, jnp.float32)
    kappas = schedule.kernel_temperature(config.schedule, config.steps, levels)
    x_T = jax.random.normal(init_key, (config.n, 2))

    def step(carry: SampleCarry, inputs):
        i, ab, ab_n, kappa = inputs
        at = exact_step(den, cond, carry.x, ab, ab_n, grid)
        extra = r.state.read(carry.state, at, knobs) if r.state else {}
        cache = {}
        model = model_at(config, den, concepts, knobs, extra, kappa, cache)
        z = jax.random.normal(jax.random.fold_in(noise_key, i), carry.x.shape)
        x_next, pred, b, memory = solver.advance(model, carry.x, ab, ab_n, z, eta, carry.memory)
        info = dict(pred.info)
        inside = (cache["t"] >= knobs["t_lo"]) & (cache["t"] <= knobs["t_hi"])
        push = push_neg(info, b, inside)
        if push is not None:
            info["push_neg"] = push
        state = carry.state
        if r.state:
            state = r.state.update(
                state, at._replace(x_next=x_next, branches=cache["branches"]), knobs
            )
        return SampleCarry(x_next, state, memory), (x_next, info)

    state = r.state.init(x_T, knobs) if r.state else None
    inputs = (jnp.arange(config.steps), jnp.asarray(levels[:-1]), jnp.asarray(levels[1:]), kappas)
    carry, (xs, info) = jax.lax.scan(step, SampleCarry(x_T, state, solver.start(x_T)), inputs)
    return Result(carry.x, jnp.concatenate([x_T[None], xs]), info)


@functools.partial(jax.jit, static_argnames=("config",))
def sample_sweep(
    config: SamplerConfig, den: Denoiser, key: jax.Array, cond: Cond, knobs: dict
) -> Result:
    """`sample` over a sweep in one compiled call: knobs hold (G,) arrays, the Result gains axis G."""
    return jax.vmap(lambda k: sample(config, den, key, cond, k))(knobs)
