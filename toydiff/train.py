"""optax training of the ε-network on exact mixture samples (label dropout to ∅, parameter EMA),
weak guide nets for autoguidance, and the relative ε error against the exact oracle."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import exact, mixtures, nets, schedule
from .checkpoint import PRESET_GUIDE, WEAK_NETS, WeakRecipe, weak_nets  # noqa: F401 (train API)
from .mixtures import Mixture

ERROR_TS = (10, 50, 200, 500, 900)  # timesteps of the error table


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 8_000
    batch: int = 512
    lr: float = 3e-3
    warmup: int = 500
    weight_decay: float = 1e-4
    clip: float = 1.0
    ema_decay: float = 0.999
    p_uncond: float = 0.2  # probability of the null concept, trained on x ~ p(x)
    chunk: int = 1000  # steps per lax.scan call (one progress-bar update)
    schedule: str = "linear"
    target: str = "sample"  # regression target (MATH §1.1): the drawn ε, or "exact" ε*(x_t, c)
    t_lognormal: float = 0.0  # share of a batch whose t comes from EDM's log-normal σ (MATH §1.1)
    proposal: float = 0.0  # share of a batch whose x_t is uniform on the view box (exact targets)

    def __post_init__(self):
        if self.target not in ("sample", "exact"):
            raise ValueError(f"target: {self.target!r} is not 'sample' or 'exact'")
        if not 0.0 <= self.proposal <= 1.0:
            raise ValueError(f"proposal: a share in [0, 1], got {self.proposal}")
        if self.proposal and self.target != "exact":
            raise ValueError(
                "proposal: x_t off p_t has no drawn ε to regress on; needs target='exact'"
            )
        if self.target == "exact" and self.batch % EXACT_GROUPS:
            raise ValueError(
                f"batch: exact targets need a multiple of {EXACT_GROUPS}, got {self.batch}"
            )
        if not 0.0 <= self.t_lognormal <= 1.0:
            raise ValueError(f"t_lognormal: a share in [0, 1], got {self.t_lognormal}")


# Recipes that differ from TrainConfig's defaults, by preset (MATH §1.1): the tree's branches are
# thinner (std down to 0.004) than the noise at most t, so it regresses on ε* and trains more at small σ.
PRESET_TRAIN: dict[str, dict] = {"tree": dict(target="exact", t_lognormal=0.5)}
# An inline mixture (train --scene) has a budget of its own (issue 19: ≤ 120 s): its standard net
# trains 3× the steps. At 8000, it put 8.8 % of CCFG's samples off the data where the oracle put
# 2.9 % (24 000: 5.9 %); the everywhere net was within 0.003 at 8000.
INLINE_TRAIN: dict[str, dict] = {"standard": dict(steps=24_000), "everywhere": {}}
# The kinds of net (checkpoint.NETS, scene key 'net'). A standard net sees, as a real model does,
# only x_t ~ p_t; an everywhere net regresses on the exact ε* at x_t from p_t and, for a share of
# each batch, uniform on PROPOSAL_WIDTH × the view box at the same t: only an exact oracle makes
# that possible, and guided runs that leave the data then stay where the net is right.
NET_TRAIN: dict[str, dict] = {"standard": {}, "everywhere": dict(target="exact", proposal=0.5)}
PROPOSAL_WIDTH = 1.5  # the proposal box: [−w·L, w·L]², L = mixtures.extent
LOGNORMAL = (-2.3, 1.5)  # mean and std of log σ (the autoguidance paper's toy: P_mean, P_std)
EXACT_GROUPS = 16  # distinct timesteps per batch with exact targets (the batch must divide by it)


def preset_config(name: str | None, net: str = "standard", **overrides) -> TrainConfig:
    """The main net's TrainConfig of a preset (None: an inline mixture): the defaults, its
    PRESET_TRAIN recipe, the net kind's NET_TRAIN recipe, then overrides."""
    if net not in NET_TRAIN:
        raise ValueError(f"net: {net!r} is not one of {', '.join(NET_TRAIN)}")
    recipe = PRESET_TRAIN.get(name, {}) if name is not None else INLINE_TRAIN[net]
    return TrainConfig(**{**recipe, **NET_TRAIN[net], **overrides})


class TrainState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    ema: dict  # EMA of the parameters (optax.ema would average gradients)
    step: jax.Array  # () int32


class Data(NamedTuple):
    """The mixture as the arrays one training batch needs."""

    means: jax.Array  # (K, 2)
    chol: jax.Array  # (K, 2, 2) Cholesky factors of the covariances
    cdf: jax.Array  # (C+1, K) cumulative component probabilities per concept row, last row ∅
    alpha_bars: jax.Array  # (T,)
    mix: Mixture  # for exact targets
    logw: jax.Array  # (C+1, K) exact.concept_table: component log-weights per concept row
    box: jax.Array  # () half-width of the proposal box (TrainConfig.proposal)


def make_data(mix: Mixture, kind: str = "linear") -> Data:
    """Data of a mixture: component means, Cholesky factors and per-concept CDFs."""
    logw = jnp.asarray(exact.concept_table(mix))
    return Data(
        jnp.asarray(mix.means),
        jnp.linalg.cholesky(jnp.asarray(mix.covs)),
        jnp.cumsum(jax.nn.softmax(logw, axis=-1), axis=-1),
        jnp.asarray(schedule.alpha_bars(kind)),
        mix,
        logw,
        jnp.float32(PROPOSAL_WIDTH * mixtures.extent(mix)),
    )


def default_net_config(mix: Mixture, weak: bool = False) -> nets.NetConfig:
    """Main (3×128, input Fourier features) or weak (2×32) net, scaled to the mixture's spread."""
    x, w, covs = np.asarray(mix.means), np.asarray(mix.weights), np.asarray(mix.covs)
    spread = w @ np.sum((x - w @ x) ** 2, -1) + w @ np.trace(covs, axis1=1, axis2=2)  # E‖x − E x‖²
    data_std = float(np.sqrt(spread / 2))
    min_std = float(np.sqrt(np.min(np.linalg.eigvalsh(np.asarray(mix.covs)))))
    size = dict(hidden=32, depth=2) if weak else dict(x_freqs=8)
    return nets.NetConfig(len(mix.concepts), data_std=data_std, min_std=min_std, **size)


def weak_train_config(config: TrainConfig, fraction: int = 8) -> TrainConfig:
    """The guide net's training: 1/fraction of the main net's steps (autoguidance: shorter)."""
    steps = max(config.steps // fraction, 1)  # chunk too: one compile when the main chunks divide
    chunk = max(config.chunk // fraction, 1)
    return dataclasses.replace(config, steps=steps, warmup=config.warmup // fraction, chunk=chunk)


def weak_recipe(
    mix: Mixture, config: TrainConfig, kind: str, name: str | None = None
) -> tuple[nets.NetConfig, TrainConfig, int]:
    """(net config, training config, step to stop at) of the guide net `kind` of preset `name`."""
    recipes = weak_nets(name)
    if kind not in recipes:
        raise ValueError(f"weak: {kind!r} is not one of {', '.join(recipes)}")
    recipe = recipes[kind]
    cfg = weak_train_config(config, recipe.fraction) if recipe.complete else config
    stop = cfg.steps if recipe.complete else max(config.steps // recipe.fraction, 1)
    return default_net_config(mix, recipe.small), cfg, stop


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """clip_by_global_norm + adamw with a linear warm-up and cosine decay."""
    warmup = min(config.warmup, config.steps // 10)  # short runs (tests, --steps 16) still decay
    lr = optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, config.steps, config.lr * 0.01)
    adamw = optax.adamw(lr, weight_decay=config.weight_decay)
    return optax.chain(optax.clip_by_global_norm(config.clip), adamw)


def init_state(
    key: jax.Array, net_config: nets.NetConfig, config: TrainConfig, params=None
) -> TrainState:
    """Random (or given) parameters, fresh optimizer state, EMA = parameters, step 0."""
    params = nets.init(key, net_config) if params is None else params
    return TrainState(params, make_optimizer(config).init(params), params, jnp.int32(0))


def sample_x0(key: jax.Array, data: Data, concept: jax.Array) -> jax.Array:
    """(B, 2) exact x ~ p(x | c) per concept id (B,) (C = ∅: p(x)): component by inverse CDF, then μ + Lz."""
    u_key, z_key = jax.random.split(key)
    u = jax.random.uniform(u_key, concept.shape)
    comps = jax.vmap(lambda cdf: jnp.searchsorted(cdf, u))(data.cdf)  # (C+1, B), cheap for K = 2032
    k = jnp.minimum(comps[concept, jnp.arange(concept.shape[0])], data.means.shape[0] - 1)
    z = jax.random.normal(z_key, (concept.shape[0], 2))
    return data.means[k] + jnp.einsum("nij,nj->ni", data.chol[k], z)


def sample_batch(key: jax.Array, data: Data, batch: int, p_uncond: float):
    """(x0 (B, 2), concept ids (B,)): ∅ with prob p_uncond and x ~ p(x), else c uniform and x ~ p(x|c)."""
    drop_key, c_key, x_key = jax.random.split(key, 3)
    n_concepts = data.cdf.shape[0] - 1
    concept = jnp.where(
        jax.random.bernoulli(drop_key, p_uncond, (batch,)),
        n_concepts,
        jax.random.randint(c_key, (batch,), 0, n_concepts),
    )
    return sample_x0(x_key, data, concept), concept


def sample_t(key: jax.Array, alpha_bars: jax.Array, batch: int, lognormal: float) -> jax.Array:
    """(B,) timesteps: uniform over the T steps, or with probability `lognormal` the first step
    whose σ_t = √((1−ᾱ_t)/ᾱ_t) reaches σ, log σ ~ N(LOGNORMAL) (MATH §1.1)."""
    uniform = jax.random.randint(key, (batch,), 0, alpha_bars.shape[0])  # as before the option
    s_key, pick_key = jax.random.split(jax.random.fold_in(key, 1))
    sigma = jnp.exp(LOGNORMAL[0] + LOGNORMAL[1] * jax.random.normal(s_key, (batch,)))
    sigmas = jnp.sqrt((1 - alpha_bars) / alpha_bars)  # increasing in t
    t_sigma = jnp.minimum(jnp.searchsorted(sigmas, sigma), alpha_bars.shape[0] - 1)
    return jnp.where(jax.random.bernoulli(pick_key, lognormal, (batch,)), t_sigma, uniform)


def draw_batch(key, data: Data, config: TrainConfig):
    """(x_t, t, concept, target, weight) of one training batch (MATH §1.1): x_0 ~ p(x | c), t,
    x_t from the forward process or, for a share config.proposal of the rows, uniform on the
    proposal box; the target is the drawn ε, or the exact ε*(x_t, c). Exact targets draw
    EXACT_GROUPS timesteps, each shared by a block of the batch: ε* of a block is one matrix
    product. weight: 1, but 1 / max(‖ε*‖², 1) on box rows, whose ε* reaches L/σ_t at small t
    (a relative error there; the minimiser is still ε*, as the target is exact)."""
    batch_key, t_key, eps_key = jax.random.split(key, 3)
    x0, concept = sample_batch(batch_key, data, config.batch, config.p_uncond)
    groups = EXACT_GROUPS if config.target == "exact" else config.batch
    t = jnp.repeat(
        sample_t(t_key, data.alpha_bars, groups, config.t_lognormal), config.batch // groups
    )
    ab = data.alpha_bars[t]  # (B,)
    eps = jax.random.normal(eps_key, x0.shape)
    x_t = jnp.sqrt(ab)[:, None] * x0 + jnp.sqrt(1 - ab)[:, None] * eps
    pick = jnp.zeros((config.batch,), bool)
    if config.proposal:  # uniform on the box instead, a share of rows (their target is ε* there)
        u_key, pick_key = jax.random.split(jax.random.fold_in(eps_key, 1))
        box = jax.random.uniform(u_key, x_t.shape, minval=-data.box, maxval=data.box)
        pick = jax.random.bernoulli(pick_key, config.proposal, (config.batch,))
        x_t = jnp.where(pick[:, None], box, x_t)
    if config.target == "exact":
        block = lambda a: a.reshape(groups, config.batch // groups, *a.shape[1:])
        star = lambda x, a, w: exact.eps_rows(data.mix, x, a[0], w)
        eps = jax.vmap(star)(block(x_t), block(ab), block(data.logw[concept])).reshape(-1, 2)
    weight = jnp.where(pick, 1.0 / jnp.maximum(jnp.sum(eps**2, -1), 1.0), 1.0)
    return x_t, t, concept, eps, weight


def loss_fn(params, net_config, data: Data, key, config: TrainConfig) -> jax.Array:
    """ε-prediction MSE on a fresh batch (draw_batch), rows weighted: against the drawn ε, or
    against the exact ε*(x_t, c) (the same minimiser on p_t, without the noise of the drawn ε)."""
    x_t, t, concept, target, weight = draw_batch(key, data, config)
    ab = data.alpha_bars[t]
    error = (nets.apply(params, net_config, x_t, t, ab, concept) - target) ** 2
    return jnp.mean(weight[:, None] * error)


def _step(state: TrainState, data: Data, key, net_config, config) -> tuple[TrainState, jax.Array]:
    loss, grads = jax.value_and_grad(loss_fn)(state.params, net_config, data, key, config)
    updates, opt_state = make_optimizer(config).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))  # EMA warm-up
    ema = optax.incremental_update(params, state.ema, 1.0 - decay)
    return TrainState(params, opt_state, ema, state.step + 1), loss


train_step = jax.jit(_step, static_argnames=("net_config", "config"))
train_step.__doc__ = "(new state, loss): one optax step on a fresh batch drawn with key."


@functools.partial(jax.jit, static_argnames=("net_config", "config", "length"))
def train_chunk(state: TrainState, data: Data, key, net_config, config, length: int):
    """(state, mean loss) after `length` steps in one lax.scan; step i uses fold_in(key, i)."""

    def body(s, _):
        return _step(s, data, jax.random.fold_in(key, s.step), net_config, config)

    state, losses = jax.lax.scan(body, state, None, length=length)
    return state, jnp.mean(losses)


def train(
    mix: Mixture,
    net_config: nets.NetConfig,
    config: TrainConfig,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
    params: dict | None = None,
    stop: int | None = None,
    callback: Callable[[int, int, float], None] | None = None,
) -> tuple[TrainState, dict]:
    """(final state, log {steps, wall_time_s, cpu_time_s, final_loss, ...}) of training from a seed.

    params, if given, are the starting weights (fine-tuning) instead of a random initialisation;
    stop, if given, ends the run at that step of config's schedule (an earlier checkpoint);
    callback(step, last step, loss), if given, is called after every chunk (the app's progress bar).
    """
    from tqdm import tqdm

    init_key, train_key = jax.random.split(jax.random.key(seed))
    state, data = init_state(init_key, net_config, config, params), make_data(mix, config.schedule)
    start, cpu_start, loss = time.perf_counter(), time.process_time(), jnp.nan
    end = config.steps if stop is None else min(stop, config.steps)
    with tqdm(total=end, desc=desc, disable=not progress, leave=False) as bar:
        while int(state.step) < end:
            length = min(config.chunk, end - int(state.step))
            state, loss = train_chunk(state, data, train_key, net_config, config, length)
            bar.update(length)
            bar.set_postfix(loss=f"{float(loss):.4f}")
            if callback is not None:
                callback(int(state.step), end, float(loss))
    jax.block_until_ready(state)
    return state, {
        "steps": end,
        "wall_time_s": time.perf_counter() - start,
        "cpu_time_s": time.process_time() - cpu_start,  # all threads; wall depends on load
        "load_average": os.getloadavg()[0],
        "final_loss": float(loss),
    }


def heldout_loss(mix: Mixture, params, net_config: nets.NetConfig, n=20_000, seed=4321) -> float:
    """loss_fn on n held-out exact samples: a fixed key no training run draws (same for every net)."""
    key, data = jax.random.key(seed), make_data(mix)
    return float(loss_fn(params, net_config, data, key, TrainConfig(batch=n)))


def relative_error(eps_net, eps_true) -> float:
    """Ratio of RMS ‖ε_net − ε*‖ / ‖ε*‖ over samples (stable where ε* ≈ 0, unlike a mean of ratios)."""
    return float(
        np.sqrt(
            np.sum((np.asarray(eps_net) - np.asarray(eps_true)) ** 2)
            / np.sum(np.asarray(eps_true) ** 2)
        )
    )


def error_table(
    mix: Mixture,
    params,
    net_config: nets.NetConfig,
    n: int = 4000,
    seed: int = 1234,
    kind: str = "linear",
    where: str = "data",
) -> dict[str, list[float]]:
    """{concept name or 'null': relative ε error at each t of ERROR_TS} on x_t ~ p_t(·|c)
    (where='data'), or on x_t uniform on the view box [−L, L]², L = mixtures.extent (where='box')."""
    if where not in ("data", "box"):
        raise ValueError(f"where: {where!r} is not 'data' or 'box'")
    data, ab_all, lim = make_data(mix, kind), schedule.alpha_bars(kind), mixtures.extent(mix)
    names = (*mix.concepts, "null")
    table = {}
    for row, name in enumerate(names):
        key = jax.random.fold_in(jax.random.key(seed), row)
        concept = jnp.full(n, row)
        x0 = sample_x0(key, data, concept)
        errs = []
        for t in ERROR_TS:
            ab, t_key = float(ab_all[t]), jax.random.fold_in(key, t)
            if where == "data":
                x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * jax.random.normal(t_key, x0.shape)
            else:
                x_t = jax.random.uniform(t_key, x0.shape, minval=-lim, maxval=lim)
            eps_net = nets.apply(params, net_config, x_t, t, ab, concept)
            errs.append(
                relative_error(eps_net, exact.eps(mix, x_t, ab, None if name == "null" else row))
            )
        table[name] = errs
    return table


def train_net(
    name: str | None,
    out,
    kind: str,
    config: TrainConfig | None = None,
    seed: int = 0,
    progress=True,
    net: str = "standard",
    mix: Mixture | None = None,
    command: str | None = None,
) -> tuple[str, dict]:
    """Trains, evaluates and saves one net, 'main' or a WEAK_NETS kind: (stem, meta).

    name: the preset (None: the inline mixture `mix`, saved as checkpoint.MIXTURE_STEM); net: the
    kind (NET_TRAIN), saved under checkpoint.net_root(net, out); config: the main net's recipe
    (default: preset_config(name, net)); command: the command line, kept in the metadata."""
    from . import checkpoint

    mix = mixtures.preset(name) if mix is None else mix
    config = config or preset_config(name, net)
    if kind == "main":
        net_config, cfg, stop = default_net_config(mix), config, config.steps
    else:
        net_config, cfg, stop = weak_recipe(mix, config, kind, name)
    root = checkpoint.net_root(net, out)
    stem = checkpoint.pretrained_stem(name, None if kind == "main" else kind, root)
    state, log = train(mix, net_config, cfg, seed, progress, desc=stem.name, stop=stop)
    errors = {
        "t": list(ERROR_TS),
        "metric": "ratio of RMS ‖ε_net − ε*‖ / ‖ε*‖, x_t ~ p_t(·|c)",
        "rows": error_table(mix, state.ema, net_config),
        "box_metric": "the same, x_t uniform on the view box [−L, L]², L = mixtures.extent",
        "box_rows": error_table(mix, state.ema, net_config, where="box"),
    }
    guide = {} if kind == "main" else {"weak": kind}
    meta = dict(
        preset=name,
        net=net,
        command=command,
        train=dataclasses.asdict(cfg),
        seed=seed,
        errors=errors,
        **guide,
        **log,
    )
    checkpoint.save(stem, state.ema, net_config, mix, **meta)
    return str(stem), meta


def train_preset(
    name: str | None,
    out,
    config: TrainConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    net: str = "standard",
    mix: Mixture | None = None,
    command: str | None = None,
) -> list[tuple[str, dict]]:
    """Trains, evaluates and saves the main and shipped guide nets of a preset (or of the inline
    mixture `mix`, name None) of one kind: [(stem, meta), ...]."""
    return [
        train_net(name, out, kind, config, seed, progress, net, mix, command)
        for kind in ("main", "shipped")
    ]


def format_errors(stem: str, meta: dict) -> str:
    """Printable summary of a checkpoint: wall time, loss and its relative ε error table."""
    ts = meta["errors"]["t"]
    lines = [
        f"{stem}: {meta['steps']} steps in {meta['wall_time_s']:.1f} s, loss {meta['final_loss']:.4f}",
        f"  {'concept':>8} " + " ".join(f"t={t:<4}" for t in ts) + "  mean",
    ]
    for where, rows in (("p_t", "rows"), ("box", "box_rows")):
        for name, errs in meta["errors"].get(rows, {}).items():
            lines.append(
                f"  {name:>8} " + " ".join(f"{e:6.3f}" for e in errs) + f"  {np.mean(errs):.3f}"
                f"  ({where})"
            )
    return "\n".join(lines)
