"""One interface over exact, learned and weak denoisers: every branch in one batched call.

A `Denoiser` is a pytree: its parameters are traced (a new mixture, δ or set of weights does not
recompile), its two `eps` functions are static, hashable callables `(mix, params, x, t, ᾱ, concept) -> ε`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from . import exact, mixtures, nets
from .mixtures import Mixture

BRANCH_MODELS = {
    "uncond": "main",
    "pos": "main",
    "neg": "main",
    "cond": "main",
    "rand": "main",
    "weak": "weak",
    "weak_uncond": "weak",
}


@dataclasses.dataclass(frozen=True)
class ExactEps:
    """ε* of the mixture blurred by δ = params (δ = 0: the exact oracle)."""

    def __call__(self, mix, delta, x, t, alpha_bar, concept):
        logw = exact.concept_table(mix)[concept]  # (N, K)
        return exact.eps_rows(exact.blur(mix, delta), x, alpha_bar, logw)


@dataclasses.dataclass(frozen=True)
class NetEps:
    """ε of an MLP with the given architecture (skip ≥ 0: one hidden layer left out); params = weights."""

    config: nets.NetConfig
    skip: int = -1

    def __call__(self, mix, params, x, t, alpha_bar, concept):
        return nets.apply(params, self.config, x, t, alpha_bar, concept, self.skip)


@dataclasses.dataclass(frozen=True)
class TurnedEps:
    """ε of `inner` asked about the plane turned by R: R ε_inner(Rᵀx); params = (R, inner's).
    Rotating the data rotates its score, so this is exactly what `inner` says about the turned
    data. `inner` must ignore the mixture it is given (a net: NetEps)."""

    inner: Callable

    def __call__(self, mix, params, x, t, alpha_bar, concept):
        rot, inner = params  # x rows: Rᵀx is x @ R, and R ε is ε @ Rᵀ
        return self.inner(mix, inner, x @ rot, t, alpha_bar, concept) @ rot.T


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Denoiser:
    mix: Mixture  # the exact mixture, always there: DNG's oracle, metrics and fields use it
    main: Any
    weak: Any
    eps_main: Callable = dataclasses.field(metadata=dict(static=True))
    eps_weak: Callable = dataclasses.field(metadata=dict(static=True))


def combine(mix: Mixture, main: tuple, weak: tuple) -> Denoiser:
    """A denoiser from two (params, eps fn) models: the main one and the weak (guide) one."""
    return Denoiser(mix, main[0], weak[0], main[1], weak[1])


def exact_model(delta: float = 0.0) -> tuple:
    """(params, eps fn) of the exact mixture blurred by δ (MATH §2; δ = 0: the oracle itself)."""
    return jnp.float32(delta), ExactEps()


def exact_denoiser(mix: Mixture, delta: float = 0.3) -> Denoiser:
    """Exact oracle; its weak model is the same mixture blurred by δ (Σ + δ²I)."""
    return combine(mix, exact_model(), exact_model(delta))


def learned(mix: Mixture, params, config: nets.NetConfig, weak=None, weak_config=None) -> Denoiser:
    """A learned main net; its weak model is the weak net if given, else the same net."""
    weak_config = weak_config or config
    return Denoiser(
        mix, params, params if weak is None else weak, NetEps(config), NetEps(weak_config)
    )


def perturbed(mix: Mixture, params, config: nets.NetConfig, skip: int = 0) -> Denoiser:
    """The main net, with itself minus one hidden layer as the weak model (perturbed-network guidance)."""
    return Denoiser(mix, params, params, NetEps(config), NetEps(config, skip))


def turned(model: tuple, degrees: float) -> tuple:
    """(params, eps fn) of a net's model turned by `degrees` (TurnedEps); the angle rides in the
    params, so a new angle does not recompile."""
    rot = jnp.asarray(mixtures.rotation(degrees), jnp.float32)
    return (rot, model[0]), TurnedEps(model[1])


def turned_denoiser(den: Denoiser, mix: Mixture, degrees: float) -> Denoiser:
    """A denoiser of nets on the plane turned by `degrees`: both models turned, `mix` (the turned
    mixture) as its exact one."""
    return combine(
        mix, turned((den.main, den.eps_main), degrees), turned((den.weak, den.eps_weak), degrees)
    )


def eval_branches(den: Denoiser, models: tuple[str, ...], x, t, alpha_bar, concepts) -> jax.Array:
    """(B, N, 2) ε of every branch: models[b] is 'main' or 'weak', concepts (B, N) concept ids."""
    out = [None] * len(models)
    for model, fn, params in (("main", den.eps_main, den.main), ("weak", den.eps_weak, den.weak)):
        idx = [b for b, m in enumerate(models) if m == model]
        if idx:  # one vmapped call per model: all its branches share each matmul
            eps = jax.vmap(fn, in_axes=(None, None, None, None, None, 0))(
                den.mix, params, x, t, alpha_bar, concepts[jnp.array(idx)]
            )
            for j, b in enumerate(idx):
                out[b] = eps[j]
    return jnp.stack(out)
