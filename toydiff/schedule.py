"""Discrete VP noise schedules and sampling timesteps (MATH §1)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from array_api_compat import array_namespace

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


def ddpm_kernel(ab, ab_next):
    """(a, b, σ̃²) of the stochastic (η = 1) reverse kernel N(a·x_t + b·ε, σ̃² I) from t to t' (MATH §1, §3.1).

    σ̃² = (1−ᾱ')/(1−ᾱ)·(1 − ᾱ/ᾱ'), a = √(ᾱ'/ᾱ), b = √(1−ᾱ'−σ̃²) − a√(1−ᾱ); ᾱ' = 1 gives σ̃² = 0.
    Works on Python, numpy, JAX and torch scalars.
    """
    xp = array_namespace(ab) if hasattr(ab, "dtype") else None
    sqrt = xp.sqrt if xp is not None else (lambda v: v**0.5)
    var = (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
    var = var * (var > 0)  # rounding can give −1e-9 at ᾱ' ≈ ᾱ
    a = sqrt(ab_next / ab)
    rest = 1 - ab_next - var
    return a, sqrt(rest * (rest > 0)) - a * sqrt(1 - ab), var


KAPPA_MAX = 1e6  # κ_t/κ_ref at the last step (σ̃² = 0: κ = ∞) and wherever the ratio is huge


def kernel_kappa(ab, ab_next):
    """κ_t = b_t²/(2σ̃_t²), the temperature of the stochastic kernel's log-ratio in ε (MATH §3.1)."""
    _, b, var = ddpm_kernel(ab, ab_next)
    return b**2 / (2 * var + 1e-30)


def kappa_ref(kind: str, steps: int) -> float:
    """κ_ref: κ of the middle sampling step (index (steps − 1)//2, never the last; MATH §3.1)."""
    _, ab_t, ab_next = step_alpha_bars(kind, max(steps, 2))
    i = (max(steps, 2) - 1) // 2
    return float(kernel_kappa(np.float64(ab_t[i]), np.float64(ab_next[i])))


def kernel_temperature(kind: str, steps: int, levels: np.ndarray | None = None) -> np.ndarray:
    """(steps,) float32 κ_t/κ_ref per sampling step, capped at KAPPA_MAX; 1 for a single step.
    levels: the (steps + 1,) ᾱ of a solver's grid (default: this schedule's DDIM timesteps)."""
    if levels is None:
        _, ab_t, ab_next = step_alpha_bars(kind, steps)
    else:
        ab_t, ab_next = levels[:-1], levels[1:]
    if steps == 1:
        return np.ones(1, np.float32)
    kappa = kernel_kappa(np.asarray(ab_t, np.float64), np.asarray(ab_next, np.float64))
    return np.minimum(kappa / kappa[(steps - 1) // 2], KAPPA_MAX).astype(np.float32)


def t_of(kind: str, ab):
    """The (fractional) training timestep of a noise level ᾱ: the schedule's inverse, linear in ᾱ
    between timesteps, clamped to [0, T−1] (ᾱ = 1 gives 0); exact at the schedule's own ᾱ_t."""
    table = alpha_bars(kind)
    return jnp.interp(ab, table[::-1], np.arange(T, dtype=np.float32)[::-1])
