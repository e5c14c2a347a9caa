"""toydiff: see how guidance steers diffusion models, on 2D Gaussian mixtures and real image models."""

from . import denoisers, exact, fields, guidance, metrics, mixtures, nets, sampler, schedule
from .guidance import (
    RULES,
    Rule,
)
from .mixtures import (
    DESCRIPTIONS,
    PRESETS,
    Mixture,
    preset,
)
from .sampler import (
    Cond,
    Result,
    SamplerConfig,
    sample,
)
from .scene import (
    Scene,
    run,
)

__all__ = [
    "DESCRIPTIONS",
    "PRESETS",
    "RULES",
    "Cond",
    "Mixture",
    "Result",
    "Rule",
    "SamplerConfig",
    "Scene",
    "denoisers",
    "exact",
    "fields",
    "guidance",
    "metrics",
    "mixtures",
    "nets",
    "preset",
    "run",
    "sample",
    "sampler",
    "schedule",
]
