"""Solvers over noise paths (MATH §3.4, docs/MATH.md §3.4): one function per solver, plus a registry.

The sampler's carry is always the VP point x = √ᾱ x0 + √(1−ᾱ) n; a solver converts it to its own
path inside a step (EDM/VE: x/√ᾱ at σ = √((1−ᾱ)/ᾱ); flow matching: x·√((1−s)² + s²) at
s = √(1−ᾱ)/(√ᾱ + √(1−ᾱ))) and back, so that every path's frames compare, one exact mixture serves
every path and a net trained on the VP path is used at any noise level (its time input from the
schedule's inverse of ᾱ, `schedule.t_of`).

A solver step has the signature

    step(model, x, ab, ab_next, z, eta) -> (x_next, pred, b)

`model(x, ab) -> Prediction` gives the guided ε̂ at the VP point x of noise level ᾱ (and the
re-noising direction a rule may ask for), `z` is standard normal noise shaped like x, `eta` the
scene's η; `b` is the coefficient of the (first) ε̂ in x_next, so that the push of a guidance term
δε on x is |b|·‖δε‖. `grid(kind, steps) -> (steps + 1,) ᾱ levels` from ᾱ_{T−1} (pure noise) to
1 (data) says where its steps go. Register a new one with `register(name, step, grid)`.

A multistep solver remembers earlier steps: it registers `memory(x) -> mem` (a pytree, its value
before the first step), and its step takes `mem` last and returns it last,

    step(model, x, ab, ab_next, z, eta, mem) -> (x_next, pred, b, mem)

`Solver.advance` calls either kind with the memory signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from . import schedule

Array = Any
RHO = 7.0  # the EDM grid's ρ (Karras et al. 2022)


class Prediction(NamedTuple):
    eps: Array  # (N, ...) the guided ε̂
    renoise: Array  # (N, ...) the ε of the re-noising direction (ε̂ unless the rule says, CFG++)
    info: dict  # per-sample diagnostics of the rule


class Solver(NamedTuple):
    name: str
    step: Callable  # (model, x, ab, ab_next, z, eta) -> (x_next, Prediction, b)
    grid: Callable  # (kind, steps) -> (steps + 1,) float32 ᾱ levels, ᾱ_{T−1} ... 1
    stochastic: bool = False  # its η = 1 step is the DDPM kernel that a filtering state assumes
    help: str = ""
    evals: int = 1  # network evaluations per step (Heun: 2)
    memory: Callable | None = None  # x -> a multistep solver's memory before its first step

    def start(self, x):
        """The memory before the first step from x (None for a one-step solver)."""
        return None if self.memory is None else self.memory(x)

    def advance(self, model, x, ab, ab_next, z, eta, mem):
        """One step with the memory signature: (x_next, Prediction, b, mem)."""
        if self.memory is None:
            return (*self.step(model, x, ab, ab_next, z, eta), mem)
        return self.step(model, x, ab, ab_next, z, eta, mem)


# ------------------------------------------------------------------------------------------- grids
def vp_grid(kind: str, steps: int) -> np.ndarray:
    """The schedule's own timesteps (evenly spaced from T−1 to 0), then ᾱ = 1 (MATH §1)."""
    _, ab, _ = schedule.step_alpha_bars(kind, steps)
    return np.append(ab, np.float32(1.0)).astype(np.float32)


def _sigma_range(kind: str) -> tuple[float, float]:
    ab = schedule.alpha_bars(kind).astype(np.float64)
    sigma = np.sqrt((1 - ab) / ab)
    return float(sigma[0]), float(sigma[-1])


def karras_grid(kind: str, steps: int) -> np.ndarray:
    """EDM's σ_i = (σ_max^{1/ρ} + i/(N−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, then σ = 0, as ᾱ = 1/(1+σ²);
    σ_min, σ_max the schedule's own (t = 0 and T−1), so a VP-trained net sees its training range."""
    lo, hi = _sigma_range(kind)
    i = np.arange(steps, dtype=np.float64) / max(steps - 1, 1)
    sigma = (hi ** (1 / RHO) + i * (lo ** (1 / RHO) - hi ** (1 / RHO))) ** RHO
    return np.append(1 / (1 + sigma**2), 1.0).astype(np.float32)


def flow_grid(kind: str, steps: int) -> np.ndarray:
    """Rectified-flow times s evenly spaced from s_max (the schedule's ᾱ_{T−1}) to 0, as ᾱ."""
    ab_min = float(schedule.alpha_bars(kind)[-1])
    s_max = 1 / (1 + np.sqrt(ab_min / (1 - ab_min)))
    s = np.linspace(s_max, 0.0, steps + 1)
    return ((1 - s) ** 2 / ((1 - s) ** 2 + s**2)).astype(np.float32)


# ------------------------------------------------------------------------------------- conversions
def x0_of(x, eps, ab):
    """Tweedie's x̂0 of the VP point x: (x − √(1−ᾱ) ε̂)/√ᾱ."""
    return (x - jnp.sqrt(1 - ab) * eps) / jnp.sqrt(ab)


def sigma_of(ab):
    """The EDM/VE σ of a VP level: √((1−ᾱ)/ᾱ) (0 at ᾱ = 1)."""
    return jnp.sqrt((1 - ab) / ab)


def flow_time(ab):
    """The rectified-flow time s of a VP level, and the scale c with x_VP = c·x_flow."""
    a, b = jnp.sqrt(ab), jnp.sqrt(1 - ab)
    s = b / (a + b)
    return s, 1 / jnp.sqrt((1 - s) ** 2 + s**2)


# ----------------------------------------------------------------------------------------- solvers
def ddim(model, x, ab, ab_next, z, eta):
    """DDIM(η) (MATH §1): x' = √ᾱ' x̂0 + √(1−ᾱ'−σ²) ε_re + σz, σ = η√((1−ᾱ')/(1−ᾱ))√(1−ᾱ/ᾱ');
    η = 1 is the DDPM kernel."""
    pred = model(x, ab)
    sigma = schedule.ddim_sigma(ab, ab_next, eta)
    direction = jnp.sqrt(jnp.maximum(1 - ab_next - sigma**2, 0.0))
    x_next = jnp.sqrt(ab_next) * x0_of(x, pred.eps, ab) + direction * pred.renoise + sigma * z
    return x_next, pred, direction - jnp.sqrt(ab_next / ab) * jnp.sqrt(1 - ab)


def euler(model, x, ab, ab_next, z, eta):
    """Euler on the EDM/VE path: x' = x + (σ' − σ)(x − D)/σ = x + (σ' − σ) ε̂ (in VE coordinates)."""
    pred = model(x, ab)
    ds = sigma_of(ab_next) - sigma_of(ab)
    x_ve = x / jnp.sqrt(ab) + ds * pred.eps
    return jnp.sqrt(ab_next) * x_ve, pred, jnp.sqrt(ab_next) * ds


def heun(model, x, ab, ab_next, z, eta):
    """Heun (2nd order, Karras et al. 2022): the Euler step, then, if σ' > 0, the average of the
    slopes at x and at the Euler point (two evaluations; b is the first slope's coefficient)."""
    pred = model(x, ab)
    ds = sigma_of(ab_next) - sigma_of(ab)
    x_ve = x / jnp.sqrt(ab)
    x_euler = x_ve + ds * pred.eps
    second = model(jnp.sqrt(ab_next) * x_euler, ab_next)
    x_heun = x_ve + ds * (pred.eps + second.eps) / 2
    x_ve_next = jnp.where(ab_next < 1, x_heun, x_euler)
    b = jnp.sqrt(ab_next) * ds * jnp.where(ab_next < 1, 0.5, 1.0)
    return jnp.sqrt(ab_next) * x_ve_next, pred, b


def flow_euler(model, x, ab, ab_next, z, eta):
    """Euler on the rectified-flow path x = (1−s)x0 + s n: x' = x + (s' − s) v̂, v̂ = ε̂ − x̂0."""
    pred = model(x, ab)
    (s, c), (s_next, c_next) = flow_time(ab), flow_time(ab_next)
    v = pred.eps - x0_of(x, pred.eps, ab)
    x_next = c_next * (x / c + (s_next - s) * v)
    return x_next, pred, c_next * (s_next - s) * (1 + jnp.sqrt((1 - ab) / ab))


class Memory(NamedTuple):
    """DPM-Solver++(2M)'s memory: the previous step's x̂0 and its h = log(σ/σ'); `has` 0 before it."""

    x0: Array
    h: Array
    has: Array


def dpmpp_2m_sde(model, x, ab, ab_next, z, eta, mem):
    """DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion `sample_dpmpp_2m_sde`, midpoint), in VE
    coordinates with h = log(σ/σ'), r = e^{−(1+η)h}: x' = (σ'/σ)e^{−ηh} x + (1 − r)(D + (h/2h_prev)
    (D − D_prev)) + σ'√(1 − e^{−2ηh}) z, D = x̂0; the first step has no D_prev, the last (σ' = 0)
    returns D. η = 1: its first-order part is the DDPM kernel; η = 0: DPM-Solver++(2M), an ODE."""
    pred = model(x, ab)
    d = x0_of(x, pred.eps, ab)
    sigma, sigma_next = sigma_of(ab), sigma_of(ab_next)
    last = ab_next >= 1
    h = jnp.log(sigma / jnp.where(last, sigma, sigma_next))
    r = jnp.exp(-(1 + eta) * h)
    slope = mem.has * h / (2 * mem.h)  # the midpoint correction's weight on D − D_prev
    x_ve = (sigma_next / sigma) * jnp.exp(-eta * h) * x / jnp.sqrt(ab)
    x_ve = x_ve + (1 - r) * (d + slope * (d - mem.x0))
    x_ve = x_ve + sigma_next * jnp.sqrt(-jnp.expm1(-2 * eta * h)) * z
    x_ve = jnp.where(last, d, x_ve)
    b = -sigma * jnp.where(last, 1.0, jnp.sqrt(ab_next) * (1 - r) * (1 + slope))
    return jnp.sqrt(ab_next) * x_ve, pred, b, Memory(d, h, jnp.ones_like(mem.has))


def _no_memory(x) -> Memory:
    return Memory(jnp.zeros_like(x), jnp.ones((), x.dtype), jnp.zeros((), x.dtype))


SOLVERS: dict[str, Solver] = {}


def register(
    name: str,
    step: Callable,
    grid: Callable = vp_grid,
    stochastic: bool = False,
    help: str = "",
    evals: int = 1,
    memory: Callable | None = None,
) -> Solver:
    """Registers a solver under `name` (scene key `solver`); see the module docstring for the
    signatures of `step`, `grid` and a multistep solver's `memory`; `evals`: network evaluations
    per step. Returns it."""
    doc = help or (step.__doc__ or "").split("\n")[0]
    SOLVERS[name] = Solver(name, step, grid, stochastic, doc, evals, memory)
    return SOLVERS[name]


register("ddim", ddim, vp_grid, stochastic=True, help="DDIM(η) on the schedule's timesteps")
register("heun", heun, karras_grid, help="Heun (2nd order) on the EDM σ grid", evals=2)
register("euler", euler, karras_grid, help="Euler on the EDM σ grid")
register("flow_euler", flow_euler, flow_grid, help="Euler on the rectified-flow path")
register(
    "dpmpp_2m_sde",
    dpmpp_2m_sde,
    karras_grid,
    help="DPM-Solver++(2M) SDE on the EDM σ grid (η = 1; η = 0 its ODE)",
    memory=_no_memory,
)


def solver(name: str) -> Solver:
    """The registered solver; unknown name -> ValueError listing the valid names."""
    if name not in SOLVERS:
        raise ValueError(f"solver: unknown solver {name!r}; valid: {', '.join(SOLVERS)}")
    return SOLVERS[name]
