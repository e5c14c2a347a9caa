"""Discrete VP noise schedules and sampling timesteps (MATH §1)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

T = 1000  # training steps
SCHEDULES = ("linear", "cosine")


def alpha_bars(kind: str = "linear", num_steps: int = T) -> np.ndarray:
    """(T,) float32 ᾱ_t = Π_{s≤t}(1 − β_s): DDPM linear betas 1e-4..2e-2, or Nichol & Dhariwal cosine."""
    if kind == "linear":
        betas = np.linspace(1e-4, 2e-2, num_steps, dtype=np.float64)
        return np.cumprod(1 - betas).astype(np.float32)
    if kind == "cosine":
        s = 0.008
        f = np.cos((np.arange(num_steps + 1) / num_steps + s) / (1 + s) * np.pi / 2) ** 2
        betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
        return np.cumprod(1 - betas).astype(np.float32)
    raise ValueError(f"unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")


def timesteps(steps: int, num_steps: int = T) -> np.ndarray:
    """(steps,) int32 descending timesteps evenly spaced from T−1 to 0."""
    if not 1 <= steps <= num_steps:
        raise ValueError(f"steps: must be in [1, {num_steps}], got {steps}")
    return np.round(np.linspace(num_steps - 1, 0, steps)).astype(np.int32)


def step_alpha_bars(kind: str, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, ᾱ_t, ᾱ_t') per sampling step, t' the next timestep; ᾱ = 1 after the last step (x̂0)."""
    t = timesteps(steps)
    ab = alpha_bars(kind)
    ab_t = ab[t]
    ab_next = np.append(ab_t[1:], np.float32(1.0))
    return t, ab_t, ab_next


def ddim_sigma(ab_t, ab_next, eta):
    """DDIM σ = η √((1−ᾱ')/(1−ᾱ)) √(1 − ᾱ/ᾱ') (MATH §1); works on numpy and JAX scalars."""
    return (
        eta * jnp.sqrt((1 - ab_next) / (1 - ab_t)) * jnp.sqrt(jnp.maximum(1 - ab_t / ab_next, 0.0))
    )
