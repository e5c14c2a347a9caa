"""The ε-network: an MLP with sinusoidal time and learned concept embeddings (index C = null ∅)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .schedule import T


@dataclasses.dataclass(frozen=True)
class NetConfig:
    n_concepts: int  # C; the embedding table has C + 1 rows, the last one is the null concept
    hidden: int = 128
    depth: int = 3  # hidden layers
    freqs: int = 16  # sinusoidal time features: 2 * freqs
    data_std: float = 1.0  # input scaling x / √(ᾱσ² + 1 − ᾱ) keeps the input at unit scale
    min_std: float = 0.0  # output scaling √(1−ᾱ)/√(1−ᾱ+s²): ε* ~ that size near modes of std s
    x_freqs: int = 0  # Fourier features of the scaled input (sharp low-t fields): 4 * x_freqs
    x_freq_max: float = 32.0  # highest of the geometric input frequencies


def _dense(key, fan_in: int, fan_out: int, scale: float = 1.0) -> dict:
    w = jax.random.normal(key, (fan_in, fan_out)) * scale / jnp.sqrt(fan_in)
    return {"w": w, "b": jnp.zeros(fan_out)}


def init(key: jax.Array, config: NetConfig) -> dict:
    """Random parameters: {'x', 't', 'concept', 'hidden': [...], 'out'}."""
    keys = jax.random.split(key, config.depth + 3)
    h = config.hidden
    return {
        "x": _dense(keys[0], 2 + 4 * config.x_freqs, h),
        "t": _dense(keys[1], 2 * config.freqs, h),
        "concept": jax.random.normal(keys[2], (config.n_concepts + 1, h)) * 0.5,
        "hidden": [_dense(k, h, h) for k in keys[3 : 3 + config.depth - 1]],
        "out": _dense(keys[-1], h, 2, 0.1),
    }


def time_features(t, freqs: int) -> jax.Array:
    """(..., 2·freqs) sin/cos features of the timestep t ∈ [0, T) (scalar or (N,)), geometric frequencies."""
    f = jnp.exp(jnp.linspace(0.0, jnp.log(T / 2.0), freqs))
    angle = jnp.asarray(t, jnp.float32)[..., None] / T * f
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


def input_features(x_in: jax.Array, config: NetConfig) -> jax.Array:
    """(N, 2 + 4·x_freqs) scaled input and its sin/cos at geometric frequencies 1..x_freq_max."""
    if not config.x_freqs:
        return x_in
    f = jnp.exp(jnp.linspace(0.0, jnp.log(config.x_freq_max), config.x_freqs))
    angle = (x_in[:, :, None] * f).reshape(x_in.shape[0], -1)  # (N, 2·x_freqs)
    return jnp.concatenate([x_in, jnp.sin(angle), jnp.cos(angle)], axis=-1)


def apply(
    params: dict, config: NetConfig, x: jax.Array, t, alpha_bar, concept: jax.Array, skip: int = -1
) -> jax.Array:
    """(N, 2) predicted ε for x_t (N, 2) at t, ᾱ (scalars or (N,)) and concept ids (N,) (C = null).

    skip ≥ 0 leaves out that hidden layer (identity instead): the perturbed net of perturbed-network
    guidance, the 2D counterpart of PAG / skip-layer guidance.
    """
    ab = jnp.asarray(alpha_bar, jnp.float32)[..., None]  # (1,) or (N, 1)
    x_in = x / jnp.sqrt(ab * config.data_std**2 + 1 - ab)
    c_out = (
        jnp.sqrt((1 - ab) / (1 - ab + config.min_std**2)) if config.min_std else 1.0
    )  # low t: ε* is small
    temb = (
        time_features(t, config.freqs) @ params["t"]["w"] + params["t"]["b"]
    )  # (H,) per step, or (N, H)
    h = input_features(x_in, config) @ params["x"]["w"] + params["x"]["b"]
    h = jax.nn.silu(h + temb + params["concept"][concept])
    for i, layer in enumerate(params["hidden"]):
        h = h if i == skip else jax.nn.silu(h @ layer["w"] + layer["b"])
    return c_out * (h @ params["out"]["w"] + params["out"]["b"])


def flops_per_eval(config: NetConfig) -> int:
    """Multiply-add FLOPs (×2) of one ε evaluation for one point, excluding the per-step time MLP."""
    h = config.hidden
    return 2 * ((2 + 4 * config.x_freqs) * h + (config.depth - 1) * h * h + h * 2)
