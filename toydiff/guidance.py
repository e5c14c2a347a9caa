"""Guidance rules (MATH §3): pure functions on numpy, JAX or torch arrays, plus a registry.

Every rule is `rule(<branches>, *, gamma, <knobs>, eps_pos=None) -> (eps, info)`; the leading axis is
the batch, norms are sums over all other axes, and `info` holds per-sample (B,) diagnostics:
`lam_neg`/`lam_pos` (the rule's weights) and `scale_neg`/`scale_pos` (the effective scales γλ).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from array_api_compat import array_namespace

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


def dng(eps_uncond: Array, eps_neg: Array, *, gamma, p_neg, eps_pos=None) -> tuple[Array, dict]:
    """DNG: ε̂ = ε_∅ [+ γΔ_p] − γ p/(1−p) Δ_n, p = p(n | x_t) tracked or exact (Koulischer et al. 2025)."""
    eps, lam_pos, scale_pos = _positive(eps_uncond, eps_uncond, eps_pos, gamma)
    lam_neg = p_neg / (1 - p_neg)  # (B,)
    eps = eps - gamma * _per_sample(lam_neg, eps_neg) * (eps_neg - eps_uncond)
    return eps, _info(lam_neg, gamma * lam_neg, lam_pos, scale_pos, p_neg=p_neg)


def dng_update(p_neg, x_next, mu_neg, mu_uncond, sigma2, *, temp, offset, p_min, p_max) -> Array:
    """(B,) DNG's tracked p(n | x_t'): p·exp((−Temp(‖x'−μ_n‖² − ‖x'−μ_∅‖²) + offset)/(2σ²)), clamped."""
    xp = array_namespace(x_next)
    z = (-temp * (_sq_norm(x_next - mu_neg) - _sq_norm(x_next - mu_uncond)) + offset) / (2 * sigma2)
    log_p = xp.log(p_neg) + z
    return xp.clip(xp.exp(xp.clip(log_p, -80.0, 0.0)), p_min, p_max)  # clip before exp: no inf


def sd_negative(eps_neg: Array, eps_cond: Array, *, gamma) -> tuple[Array, dict]:
    """Stable Diffusion's negative prompt: ε̂ = ε_n + γ(ε_p − ε_n), ε_n replacing ε_∅."""
    scale = gamma * _ones(eps_neg)
    return eps_neg + gamma * (eps_cond - eps_neg), _info(_ones(eps_neg), scale)


def perp_neg(
    eps_uncond: Array, eps_pos: Array, eps_neg: Array, *, gamma, w_neg
) -> tuple[Array, dict]:
    """Perp-Neg: ε̂ = ε_∅ + γ[Δ_p − w_n perp(Δ_n, Δ_p)], perp(a, b) = a − (⟨a,b⟩/‖b‖²) b (Armandpour et al.)."""
    xp = array_namespace(eps_uncond)
    d_pos, d_neg = eps_pos - eps_uncond, eps_neg - eps_uncond
    dot = xp.sum(d_neg * d_pos, axis=tuple(range(1, d_pos.ndim)))
    coef = dot / xp.clip(_sq_norm(d_pos), 1e-12, None)  # (B,); Δ_p = 0 leaves Δ_n unchanged
    perp = d_neg - _per_sample(coef, d_pos) * d_pos
    lam_neg = w_neg * _ones(d_neg)
    return eps_uncond + gamma * (d_pos - w_neg * perp), _info(
        lam_neg, gamma * lam_neg, _ones(d_pos), gamma * _ones(d_pos)
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


def interval(eps_guided: Array, eps_unguided: Array, t, *, t_lo, t_hi) -> Array:
    """Guidance interval: ε̂ inside t ∈ [t_lo, t_hi], the unguided prediction outside (Kynkäänniemi 2024)."""
    xp = array_namespace(eps_guided)
    inside = xp.asarray((t >= t_lo) & (t <= t_hi))
    return xp.where(inside, eps_guided, eps_unguided)


# ---------------------------------------------------------------------------------------- registry
class Param(NamedTuple):
    default: float
    lo: float
    hi: float
    log: bool = False  # slider on a log scale
    help: str = ""


class Rule(NamedTuple):
    name: str
    fn: Callable
    label: str
    branches: tuple[str, ...]  # positional: uncond | pos | neg | cond | weak | weak_uncond | rand
    params: dict[str, Param]
    optional_pos: bool = False  # takes eps_pos= when a positive concept is given
    state: str | None = None  # "tracked" | "oracle": DNG's p(n | x_t), carried by the sampler
    state_params: dict[str, Param] = {}  # knobs of the state, not of fn
    weak: str = "weak"  # model of the 'weak' branch: weak (shipped weak net | δ-blur), sims, skip

    @property
    def all_params(self) -> dict[str, Param]:
        """Every knob of the rule, its own and its state's."""
        return {**self.params, **self.state_params}


def _gamma(default):
    return Param(default, 0.0, 20.0, help="guidance scale γ")


_DNG_GAMMA = {"gamma": Param(5.0, 0.0, 20.0, help="negative guidance scale γ_n")}
# Toy defaults: Temp = 1 and no offset make the update Bayes' rule for DDPM steps, and the prior is
# about one concept in three. The official CIFAR-10 values are prior 0.01, Temp 0.2, offset 2e-4.
_DNG_STATE = {
    "prior": Param(
        0.3, 1e-4, 0.5, True, "p_T: prior probability of the negative concept (official 0.01)"
    ),
    "temp": Param(1.0, 1e-3, 10.0, True, "Temp: sharpness of the posterior update (official 0.2)"),
    "offset": Param(
        0.0, -1.0, 1.0, help="offset added to the log-posterior update (official 2e-4)"
    ),
    "p_min": Param(1e-6, 1e-8, 1e-2, True, "lower clamp of the tracked posterior"),
    "p_max": Param(0.8, 0.5, 0.999, help="upper clamp of the tracked posterior"),
}

RULES: dict[str, Rule] = {
    r.name: r
    for r in (
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
            },
            True,
        ),
        Rule(
            "dng",
            dng,
            "Dynamic negative guidance",
            ("uncond", "neg"),
            _DNG_GAMMA,
            True,
            "tracked",
            _DNG_STATE,
        ),
        Rule(
            "dng_oracle",
            dng,
            "DNG, exact posterior",
            ("uncond", "neg"),
            _DNG_GAMMA,
            True,
            "oracle",
            {k: _DNG_STATE[k] for k in ("p_min", "p_max")},
        ),
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
        Rule(
            "autoguidance", autoguidance, "Autoguidance", ("cond", "weak"), {"gamma": _gamma(2.0)}
        ),
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
    )
}


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


def apply(r: Rule, branches: dict[str, Array], knobs: dict, p_neg=None) -> tuple[Array, dict]:
    """(eps, info) of rule r on named branch outputs; knobs must hold r.params (extras ignored)."""
    kwargs = {k: knobs[k] for k in r.params}
    if r.optional_pos and "pos" in branches:
        kwargs["eps_pos"] = branches["pos"]
    if r.state is not None:
        kwargs["p_neg"] = p_neg
    eps, info = r.fn(*(branches[b] for b in r.branches), **kwargs)
    return eps, {k: v for k, v in info.items() if v is not None}
