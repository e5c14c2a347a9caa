"""Everything the vector-field view shows, on a grid at one timestep t (traced: no recompile)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import exact, guidance, schedule, solvers
from .denoisers import BRANCH_MODELS, Denoiser, eval_branches, exact_model
from .mixtures import extent  # noqa: F401 (the view's half-width, fields.extent)
from .sampler import Cond, SamplerConfig, branch_concepts, exact_step, model_at


def grid(lim: float, res: int) -> np.ndarray:
    """(res², 2) points of a res × res grid over [−lim, lim]², row-major with y varying slowest."""
    u = np.linspace(-lim, lim, res, dtype=np.float32)
    xx, yy = np.meshgrid(u, u)
    return np.stack([xx.ravel(), yy.ravel()], -1)


@functools.partial(jax.jit, static_argnames=("config",))
def field(config: SamplerConfig, den: Denoiser, cond: Cond, knobs: dict, x: jax.Array, t) -> dict:
    """At timestep t on points x (M, 2): branch ε's, guided ε̂, guidance term, weights and densities.

    Keys: eps_<branch>, guided, term (ε̂ − unguided ε), step (x_t' − x_t of one step of the
    config's solver with η = 0 to the level a step of config.steps further on), the rule's info
    (lam_neg, scale_neg, ...), p_neg (exact p(n | x_t)), posteriors ((M, C): exact p(c | x_t) of
    every concept, the probe's readout), log_p (log p_t(x)) and log_p_target
    (log p_t(x | p, ¬n)). A rule state has no value off a trajectory: its maps use State.at (DNG's
    tracked posterior: the exact one).
    """
    r = guidance.rule(config.rule)
    ab_all = jnp.asarray(schedule.alpha_bars(config.schedule))
    t = jnp.clip(jnp.asarray(t, jnp.float32), 0, schedule.T - 1)
    ab = ab_all[t.astype(jnp.int32)]
    ab_next = ab_all[jnp.maximum(t - schedule.T / config.steps, 0).astype(jnp.int32)]
    cfg = dataclasses.replace(config, n=x.shape[0])
    concepts = branch_concepts(cfg, den.mix, cond, jax.random.key(0))
    at = exact_step(den, cond, x, ab, ab_next)
    extra = r.state.at(at, knobs) if r.state else {}
    levels = config.levels()
    ref = schedule.kernel_kappa(
        np.float64(levels[(config.steps - 1) // 2]), np.float64(levels[(config.steps - 1) // 2 + 1])
    )
    kappa = jnp.minimum(schedule.kernel_kappa(ab, ab_next) / ref, schedule.KAPPA_MAX)
    cache = {}
    model = model_at(cfg, den, concepts, knobs, extra, kappa, cache)
    solver = solvers.solver(config.solver)
    x_next, pred, _, _ = solver.advance(model, x, ab, ab_next, 0.0, 0.0, solver.start(x))
    branches = cache["branches"]
    posteriors = exact.posteriors(den.mix, x, ab)
    logw = jnp.log(den.mix.weights) + jnp.log1p(-den.mix.membership[cond.neg])
    if config.has_pos:
        logw = logw + jnp.log(den.mix.membership[cond.pos])
    out = {f"eps_{b}": e for b, e in branches.items() if b in config.branches}
    out.update(
        pred.info,
        guided=pred.eps,
        term=pred.eps - branches[config.unguided],
        step=x_next - x,
        p_neg=posteriors[:, cond.neg],
        posteriors=posteriors,
        log_p=exact.log_prob_rows(den.mix, x, ab, jnp.log(den.mix.weights)),
        log_p_target=exact.log_prob_rows(den.mix, x, ab, logw),
    )
    return out


ERROR_FLOOR = 0.1  # ‖ε*‖ below this counts as this in the error map (ε* ≈ 0 at a mode's centre)


def _branch_errors(config: SamplerConfig, den: Denoiser, concepts, x, t, ab):
    """(B, M) ‖ε − ε*‖ and (B, M) ‖ε*‖ of every branch of config at x_t: the denoiser's model of
    the branch (main or weak) against the exact oracle of the same concept."""
    models = tuple(BRANCH_MODELS[b] for b in config.branches)
    got = eval_branches(den, models, x, t, ab, concepts)
    params, fn = exact_model()
    truth = jax.vmap(fn, in_axes=(None, None, None, None, None, 0))(
        den.mix, params, x, t, ab, concepts
    )
    return jnp.linalg.norm(got - truth, axis=-1), jnp.linalg.norm(truth, axis=-1)


@functools.partial(jax.jit, static_argnames=("config",))
def net_error(config: SamplerConfig, den: Denoiser, cond: Cond, x: jax.Array, t) -> jax.Array:
    """(B, M) the relative ε error ‖ε_net − ε*‖ / max(‖ε*‖, ERROR_FLOOR) at timestep t on points x,
    for every branch of config (config.branches order): the error map of a learned denoiser."""
    ab = jnp.asarray(schedule.alpha_bars(config.schedule))[
        jnp.clip(jnp.asarray(t, jnp.int32), 0, schedule.T - 1)
    ]
    cfg = dataclasses.replace(config, n=x.shape[0])
    concepts = branch_concepts(cfg, den.mix, cond, jax.random.key(0))
    err, norm = _branch_errors(cfg, den, concepts, x, t, ab)
    return err / jnp.maximum(norm, ERROR_FLOOR)


@functools.partial(jax.jit, static_argnames=("config",))
def net_error_on_path(
    config: SamplerConfig, den: Denoiser, cond: Cond, traj: jax.Array
) -> jax.Array:
    """The relative ε error along a run, √(Σ‖ε_net − ε*‖² / Σ‖ε*‖²) over steps × samples × the
    rule's branches at the x_t each step saw (traj[:-1]); the ratio of RMS errors, as train's table."""
    ab = jnp.asarray(config.levels()[:-1])
    ts = schedule.t_of(config.schedule, ab)
    concepts = branch_concepts(config, den.mix, cond, jax.random.key(0))

    def one(x, t, a):
        err, norm = _branch_errors(config, den, concepts, jnp.nan_to_num(x), t, a)
        return jnp.sum(err**2), jnp.sum(norm**2)

    err, norm = jax.vmap(one)(traj[:-1], ts, ab)
    return jnp.sqrt(jnp.sum(err) / jnp.maximum(jnp.sum(norm), 1e-30))
