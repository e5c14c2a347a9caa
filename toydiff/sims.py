"""SIMS (self-improving diffusion models with synthetic data, Alemohammad et al. 2024), in 2D.

The negative model is the main net fine-tuned on its own samples: the samples become an empirical
mixture (one narrow Gaussian per sample, soft concept memberships from the exact posterior), so the
ordinary trainer fine-tunes on it. Guidance then steers away from what self-training would drift to.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from . import denoisers, exact, nets, sampler, train
from .mixtures import Mixture


def self_mixture(mix: Mixture, x: np.ndarray, bandwidth: float) -> Mixture:
    """Empirical mixture of samples x (M, 2): N(x_i, h² I) each, memberships p(c | x_i) of the true mixture."""
    x = np.asarray(x, np.float32)
    x = x[np.all(np.isfinite(x), -1)]
    membership = np.clip(np.asarray(exact.posteriors(mix, x, 1.0)).T, 0.0, 1.0)
    membership = np.maximum(membership, 1e-6)  # every concept keeps some weight
    covs = np.broadcast_to(np.eye(2, dtype=np.float32) * bandwidth**2, (len(x), 2, 2))
    return Mixture(x, covs, np.ones(len(x)), membership, mix.concepts)


def sims_params(
    mix: Mixture, params, config: nets.NetConfig, n: int = 4000, steps: int = 800, seed: int = 0
) -> dict:
    """Main-net weights fine-tuned for `steps` on n of its own unguided samples (a few seconds)."""
    den = denoisers.learned(mix, params, config)
    res = sampler.sample(
        sampler.SamplerConfig(rule="none", steps=50, n=n),
        den,
        jax.random.key(seed),
        sampler.Cond(0, 0),
        sampler.default_knobs("none"),
    )
    fake = self_mixture(mix, np.asarray(res.x0), bandwidth=0.5 * config.min_std or 0.05)
    tc = dataclasses.replace(train.TrainConfig(), steps=steps, warmup=0, chunk=steps, lr=1e-3)
    state, _ = train.train(
        fake, config, tc, seed=seed + 1, progress=False, desc="sims", params=params
    )
    return state.params  # not the EMA: 800 steps at decay 0.999 would mostly keep the main net
