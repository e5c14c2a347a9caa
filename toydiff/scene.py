"""Scene: every user-visible setting, validated with messages that name the key; JSON round trip."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import denoisers, exact, fields, guidance, metrics, mixtures, sampler, solvers
from .checkpoint import NETS
from .mixtures import Mixture
from .schedule import T, alpha_bars

SCORES = ("exact", "learned", "weak")
WEAK_MODELS = ("shipped", "small", "short", "blur")  # autoguidance's guide (key 'weak')
_LIMITS = {  # key -> (lo, hi) for numbers that are not rule parameters
    "steps": (1, 1000),
    "n": (1, 20000),
    "seed": (0, 2**31 - 1),
    "eta": (0.0, 1.0),
    "t_lo": (0.0, float(T)),
    "t_hi": (0.0, float(T)),
    "delta": (0.0, 5.0),
    "t": (0.0, float(T - 1)),
    "g_late": (-1.0, 1.0),
    "t_switch": (0.0, float(T)),
    "rotate": (-360.0, 360.0),
}
_INTS = ("steps", "n", "seed")
_STRINGS = (
    "preset",
    "positive",
    "negative",
    "method",
    "score",
    "schedule",
    "weak",
    "solver",
    "net",
    "checkpoint",
    "weight_schedule",
)
_OPTIONAL = ("preset", "positive", "negative", "weak", "checkpoint")  # may be null


def knob_names() -> tuple[str, ...]:
    """Every knob name of every registered rule (flat scene keys besides the fields)."""
    return tuple(dict.fromkeys(k for r in guidance.RULES.values() for k in r.all_params))


@dataclasses.dataclass(frozen=True)
class Scene:
    preset: str | None = "three_blobs"
    mixture: dict | None = None  # inline mixture {means, covs, weights, membership, concepts}
    positive: str | None = None
    negative: str | None = "C"
    method: str = "ccfg"
    params: dict = dataclasses.field(default_factory=dict)  # the rule's knobs; flat keys in JSON
    steps: int = 50
    eta: float = 0.0
    n: int = 2000
    seed: int = 0
    score: str = "exact"
    schedule: str = "linear"
    solver: str = "ddim"  # toydiff.solvers.SOLVERS
    t_lo: float = 0.0
    t_hi: float = float(T)
    weight_schedule: str = "constant"  # g(t) on γ: guidance.WEIGHT_SCHEDULES
    g_late: float = 0.0  # the window schedule's g after t_switch (0: none, < 0: negative)
    t_switch: float = float(T) / 2  # the window schedule's switch: g = 1 for t ≥ t_switch
    delta: float = 0.3  # blur of the exact weak model (autoguidance)
    weak: str | None = None  # guide: a WEAK_MODELS name; None: blur for exact scores, else shipped
    net: str = (
        "standard"  # learned scores: checkpoint.NETS (everywhere: trained on the view box too)
    )
    checkpoint: str | None = None  # learned scores: a folder of `python -m toydiff train --scene`
    t: float = 500.0  # timestep of the vector-field view
    rotate: float = 0.0  # degrees: the data turned about the origin (learned nets: in their frame)

    def __post_init__(self):
        """Fills the rule's knobs that `params` lacks with the registry's defaults."""
        if self.method in guidance.RULES:
            defaults = {k: p.initial for k, p in guidance.rule(self.method).all_params.items()}
            object.__setattr__(self, "params", {**defaults, **self.params})

    def __getattr__(self, name: str):
        """A knob of the scene's rule as an attribute (scene.gamma)."""
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no field or knob {name!r}")

    def __hash__(self) -> int:
        return hash(self.to_json())

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The scene's own keys (every JSON key but the rule's knobs)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "params")

    @classmethod
    def from_dict(cls, data: Any) -> Scene:
        """A validated scene; absent keys take defaults (the rule's knobs: the registry's),
        anything else wrong, a knob the rule does not have included, raises ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"scene: expected a JSON object, got {type(data).__name__}")
        names, knobs = cls.fields(), knob_names()
        unknown = sorted(set(data) - set(names) - set(knobs))
        if unknown:
            raise ValueError(
                f"scene: unknown key {unknown[0]!r}; valid keys: {', '.join(names)} and the "
                f"rule's knobs ({', '.join(knobs)})"
            )
        data = dict(data)
        method = _str("method", data.get("method", "ccfg"))
        rule = guidance.rule(method)
        params = {k: data.pop(k) for k in list(data) if k in knobs and k not in names}
        foreign = sorted(set(params) - set(rule.all_params))
        if foreign:
            raise ValueError(
                f"{foreign[0]}: not a knob of {method!r}; its knobs: "
                f"{', '.join(rule.all_params) or 'none'}"
            )
        if "mixture" in data and data["mixture"] is not None:
            data.setdefault("preset", None)
        if data.get("preset") is not None and "negative" not in data:
            data["negative"] = mixtures.preset_info(_str("preset", data["preset"])).negative
            data.setdefault("positive", mixtures.preset_info(data["preset"]).positive)
        params = {k: _coerce_knob(rule.all_params[k], k, v) for k, v in params.items()}
        scene = cls(**{k: _coerce(k, v) for k, v in data.items()}, params=params)
        scene.validate()
        return scene

    @classmethod
    def from_json(cls, text: str) -> Scene:
        """Scene.from_dict of a JSON text; malformed JSON raises ValueError with line and column."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"scene JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        """Every field and the rule's knobs as flat keys, JSON-ready (from_dict(to_dict()) == self)."""
        out = {k: getattr(self, k) for k in self.fields()}
        out["mixture"] = copy.deepcopy(self.mixture)
        return {**out, **self.params}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal scenes give equal strings, usable as a cache key."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes) -> Scene:
        """A validated copy with some fields or knobs changed; a new method keeps the knobs it
        shares with the old one and takes the registry's defaults for the others."""
        data = self.to_dict()
        if changes.get("method", self.method) != self.method:
            keep = guidance.rule(changes["method"]).all_params
            data = {k: v for k, v in data.items() if k not in self.params or k in keep}
        return Scene.from_dict({**data, **changes})

    def validate(self):
        """Raises ValueError naming the first key whose value is out of range or inconsistent."""
        if (self.preset is None) == (self.mixture is None):
            raise ValueError("scene: give exactly one of 'preset' and 'mixture'")
        mix = self.build_mixture()
        rule = guidance.rule(self.method)
        for key in ("positive", "negative"):
            if getattr(self, key) is not None:
                mix.concept_index(getattr(self, key))
        if guidance.needs_positive(rule) and self.positive is None:
            raise ValueError(f"method {self.method!r} needs a positive concept (key 'positive')")
        if guidance.needs_negative(rule) and self.negative is None:
            raise ValueError(f"method {self.method!r} needs a negative concept (key 'negative')")
        if self.positive is not None and self.positive == self.negative:
            raise ValueError("positive and negative must be different concepts")
        if self.score not in SCORES:
            raise ValueError(f"score: {self.score!r} is not one of {', '.join(SCORES)}")
        if self.weak is not None and self.weak not in WEAK_MODELS:
            raise ValueError(f"weak: {self.weak!r} is not one of {', '.join(WEAK_MODELS)}")
        if self.weight_schedule not in guidance.WEIGHT_SCHEDULES:
            raise ValueError(
                f"weight_schedule: {self.weight_schedule!r} is not one of "
                f"{', '.join(guidance.WEIGHT_SCHEDULES)}"
            )
        if self.net not in NETS:
            raise ValueError(f"net: {self.net!r} is not one of {', '.join(NETS)}")
        alpha_bars(self.schedule)
        solvers.solver(self.solver)
        for key, param in rule.all_params.items():
            value = self.params[key]
            if param.choices:
                if value not in param.choices:
                    raise ValueError(f"{key}: {value!r} is not one of {', '.join(param.choices)}")
            elif not param.lo <= value <= param.hi:
                raise ValueError(f"{key}: {value} is outside [{param.lo}, {param.hi}]")
        for key, (lo, hi) in _LIMITS.items():
            value = getattr(self, key)
            if not lo <= value <= hi:
                raise ValueError(f"{key}: {value} is outside [{lo}, {hi}]")
        if self.t_lo > self.t_hi:
            raise ValueError(f"t_lo: {self.t_lo} is above t_hi = {self.t_hi}")
        sampler.check(self.sampler_config())

    def build_mixture(self) -> Mixture:
        """The scene's mixture: base_mixture() turned by `rotate` degrees (mixtures.rotated)."""
        base = self.base_mixture()
        return mixtures.rotated(base, self.rotate) if self.rotate else base

    def base_mixture(self) -> Mixture:
        """The preset, or the inline mixture, unturned (ValueError names the bad field): the one
        its nets were trained on."""
        if self.preset is not None:
            return mixtures.preset(self.preset)
        if not isinstance(self.mixture, dict):
            raise ValueError(
                "mixture: expected an object {means, covs, weights, membership, concepts}"
            )
        fields = ("means", "covs", "weights", "membership", "concepts")
        missing = [f for f in fields if f not in self.mixture]
        extra = sorted(set(self.mixture) - set(fields))
        if missing or extra:
            raise ValueError(
                f"mixture: missing {missing} / unknown {extra}; needs {', '.join(fields)}"
            )
        try:
            return Mixture(**self.mixture)
        except ValueError as e:
            raise ValueError(f"mixture.{e}") from None

    # -------------------------------------------------------------------------- what to run
    def sampler_config(self) -> sampler.SamplerConfig:
        """The static part: rule, steps, points, schedule, positive or not, solver."""
        return sampler.SamplerConfig(
            self.method, self.steps, self.n, self.positive is not None, self.schedule, self.solver
        )

    def knobs(self) -> dict[str, float]:
        """The traced part: the rule's parameters, η, the guidance interval and the weight
        schedule (its index), as Python floats."""
        rule = guidance.rule(self.method)
        return sampler.default_knobs(
            self.method,
            eta=self.eta,
            t_lo=self.t_lo,
            t_hi=self.t_hi,
            **guidance.schedule_knobs(self.weight_schedule, self.g_late, self.t_switch),
            **{k: self.knob(k) for k in rule.all_params},
        )

    def knob(self, name: str) -> float:
        """A rule parameter's traced value: the number, or a choice knob's index."""
        param, value = guidance.rule(self.method).all_params[name], self.params[name]
        return param.index(value) if param.choices else value

    def cond(self, mix: Mixture) -> sampler.Cond:
        """Concept indices (positive, negative); an absent concept becomes 0 and is never read."""
        index = lambda c: 0 if c is None else mix.concept_index(c)
        return sampler.Cond(index(self.positive), index(self.negative))


def _str(key: str, value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


def _number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{key}: must be finite, got {value}")
    return value


def _coerce(key: str, value):
    """The value as the field's type; ValueError names the key (bools are not numbers)."""
    if key == "mixture":
        return value
    if key in _OPTIONAL and value is None:
        return None
    if key in _STRINGS:
        return _str(key, value)
    value = _number(key, value)
    if key in _INTS:
        if value != int(value):
            raise ValueError(f"{key}: expected an integer, got {value}")
        return int(value)
    return float(value)


def _coerce_knob(param: guidance.Param, key: str, value):
    """A knob's value: a choice knob's name (a string), else a float."""
    return _str(key, value) if param.choices else float(_number(key, value))


def weak_model(scene: Scene) -> str:
    """The scene's guide (a WEAK_MODELS name): its 'weak' key, else blur (exact) or shipped."""
    return scene.weak or ("blur" if scene.score == "exact" else "shipped")


def _model(scene: Scene, kind: str) -> tuple:
    """(params, eps fn) of 'exact', 'main' (the scene's net), 'blur' (Σ + δ²I) or a guide net;
    nets come from the scene's checkpoint folder (default: the shipped one), its `net` kind, and
    are asked in their own frame when the scene turns the plane (denoisers.turned)."""
    if kind in ("exact", "blur"):  # the exact models read the denoiser's (turned) mixture
        return denoisers.exact_model(scene.delta if kind == "blur" else 0.0)
    from . import checkpoint  # only learned models need weights

    weak = None if kind == "main" else kind
    model = checkpoint.pretrained_model(
        scene.preset, scene.base_mixture(), weak, scene.checkpoint, scene.net
    )
    return denoisers.turned(model, scene.rotate) if scene.rotate else model


def _skip_layer(mix: Mixture, params, config) -> denoisers.Denoiser:
    """The main net with its weak branch = the same net with hidden layer 0 skipped."""
    return denoisers.perturbed(mix, params, config, skip=0)


def _sims(mix: Mixture, params, config) -> denoisers.Denoiser:
    """The main net with its weak branch = the net fine-tuned on its own samples (SIMS)."""
    from . import sims

    return denoisers.learned(mix, params, config, sims.sims_params(mix, params, config), config)


# Rule.weak -> the learned denoiser whose weak branch derives from the main net (otherwise the
# weak branch is the scene's guide: weak_model)
LEARNED_WEAK = {"skip": _skip_layer, "sims": _sims}


def denoiser(scene: Scene, mix: Mixture) -> denoisers.Denoiser:
    """The scene's denoiser: the exact oracle or the shipped main net, and as weak model the rule's:
    the guide of weak_model (autoguidance), the SIMS net, or the net minus a layer (learned only).
    Score 'weak' samples the guide alone. With `rotate`, the exact models read the turned
    mixture and the nets are asked in their own, unturned frame (denoisers.turned)."""
    build = LEARNED_WEAK.get(guidance.rule(scene.method).weak)
    if scene.score == "learned" and build is not None:  # both models nets, built unturned
        unturned = dataclasses.replace(scene, rotate=0.0)
        params, net = _model(unturned, "main")
        den = build(scene.base_mixture(), params, net.config)
        return denoisers.turned_denoiser(den, mix, scene.rotate) if scene.rotate else den
    guide = _model(scene, weak_model(scene))
    if scene.score == "weak":
        return denoisers.combine(mix, guide, guide)
    return denoisers.combine(
        mix, _model(scene, "exact" if scene.score == "exact" else "main"), guide
    )


def exact_p_neg(scene: Scene, mix: Mixture, result: sampler.Result) -> np.ndarray:
    """(steps, N) the exact p(n | x_t) at the x_t of each step of the run (Result.traj[:-1])."""
    ab = scene.sampler_config().levels()[:-1]
    neg = mix.concept_index(scene.negative)
    post = jax.vmap(lambda x, a: exact.posteriors(mix, x, a)[:, neg])
    return np.asarray(post(jnp.nan_to_num(result.traj[:-1]), jnp.asarray(ab)))


def exact_fbg_lam(scene: Scene, mix: Mixture, result: sampler.Result) -> np.ndarray:
    """(steps, N) FBG's λ of the exact r = p_t(x | c)/p_t(x) (positive concept c) at the x_t of
    each step of the run: what the tracked rule's λ follows along the chain."""
    ab = scene.sampler_config().levels()[:-1]
    pos, knobs = mix.concept_index(scene.positive), scene.knobs()
    log_r = jax.vmap(lambda x, a: exact.log_prob(mix, x, a, pos) - exact.log_prob(mix, x, a))
    exact_r = log_r(jnp.nan_to_num(result.traj[:-1]), jnp.asarray(ab))
    return np.asarray(guidance.fbg_lam(exact_r, knobs["pi"], knobs["lam_max"]))


def run(scene: Scene, den: denoisers.Denoiser | None = None) -> tuple[sampler.Result, dict]:
    """Samples the scene and evaluates its metrics: (Result, metrics dict).

    Besides metrics.evaluate: `eta_used` (the η the rule ran, tracked DNG 1); for rules that
    weight by a posterior, `p_neg_error`: the mean |p_used − exact p(n | x_t)| over steps × samples;
    for learned scores, `net_error_on_path`: the nets' relative ε error at the x_t the run visited
    (fields.net_error_on_path).
    """
    mix = scene.build_mixture()
    den = denoiser(scene, mix) if den is None else den
    result = sampler.sample(
        scene.sampler_config(), den, jax.random.key(scene.seed), scene.cond(mix), scene.knobs()
    )
    threshold = metrics.preset_threshold(scene.preset) if scene.preset else None
    out = metrics.evaluate(mix, result.x0, scene.positive, scene.negative, threshold)
    return result, {**out, **run_metrics(scene, mix, den, result)}


def run_metrics(scene: Scene, mix: Mixture, den: denoisers.Denoiser, result) -> dict:
    """The metrics of a run beyond its final samples': `eta_used`; `p_neg_error` for rules that
    weight by a posterior; `net_error_on_path` for learned scores (the app shows them too)."""
    out = {"eta_used": sampler.effective_eta(scene.method, scene.eta)}  # tracked DNG: 1
    if "p_neg" in result.info:
        error = np.abs(np.asarray(result.info["p_neg"]) - exact_p_neg(scene, mix, result))
        out["p_neg_error"] = float(np.nanmean(error)) if np.isfinite(error).any() else float("nan")
    if scene.score == "learned":
        config = scene.sampler_config()
        out["net_error_on_path"] = float(
            fields.net_error_on_path(config, den, scene.cond(mix), result.traj)
        )
    return out
