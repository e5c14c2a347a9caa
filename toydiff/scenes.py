"""Curated lecture scenes (two columns each) and the URL query encoding of a pair of scenes.

Pure functions, no Streamlit. A query holds the two columns' Scenes: keys with equal values in both
columns appear once (`gamma=3`), keys that differ carry the column (`left.gamma=2&right.gamma=5`).
Values are JSON when they parse as JSON (`3`, `null`, `{...}` for an inline mixture), else plain
strings (`ccfg`). Reserved keys: `scene` (a curated scene's name) and `present` (presentation mode).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from . import guidance
from .scene import Scene, knob_names
from .scene import run as run_scene

SIDES = ("left", "right")
RESERVED = ("scene", "present")
ALWAYS = ("preset", "positive", "negative", "method")  # written even at their defaults
MAX_QUERY_CHARS = 200_000  # longer queries are refused before parsing (an inline tree is ≈ 120 k)
MAX_COMPONENTS = 5000  # inline mixtures beyond this are refused (the tree preset has 2032)


NOT_IN_LINKS = ("checkpoint",)  # a link must not make the server read a folder it names


def _keys() -> tuple[str, ...]:
    """Every scene key of a link: the fields but NOT_IN_LINKS and every rule's knobs (flat)."""
    return (*(k for k in Scene.fields() if k not in NOT_IN_LINKS), *knob_names())


def _defaults(scene: Scene) -> dict:
    """The default scene of that scene's rule, as a dict (its knobs at the registry's defaults)."""
    return Scene(method=scene.method).to_dict()


SCORES = ("exact", "learned", "everywhere")  # the score sources a claim can hold for
# `scenes --json` (issue 18's contract) lists the sources that are values of the scene key
# "score"; the everywhere nets' checks (score learned, net everywhere) stay internal
CONTRACT_SCORES = ("exact", "learned")
SOURCES = {  # each source's scene keys: the oracle, the standard nets, the everywhere nets
    "exact": {"score": "exact"},
    "learned": {"score": "learned", "net": "standard"},
    "everywhere": {"score": "learned", "net": "everywhere"},
}
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
CLAIM_METRICS = (  # keys of the metrics dict of toydiff.scene.run (and of `metrics --json`)
    "leakage",
    "leakage_hard",
    "alignment",
    "off_support",
    "nll",
    "energy",
    "energy_baseline",
    "energy_baseline_sd",
    "diverged",
    "non_finite",
    "p_neg_error",
    "net_error_on_path",
)


class Claim(NamedTuple):
    """A predicate on one column's metrics: `metric op value` for each listed score source."""

    column: str  # "left" | "right"
    metric: str  # a CLAIM_METRICS key
    op: str  # an OPS key
    value: float
    scores: tuple[str, ...] = SCORES

    def holds(self, measured: float) -> bool:
        """Whether the measured value satisfies the comparison (NaN never does)."""
        return bool(measured == measured and OPS[self.op](measured, self.value))

    def to_dict(self) -> dict:
        """The claim as the `scenes --json` contract writes it."""
        return {
            "column": self.column,
            "metric": self.metric,
            "op": self.op,
            "value": self.value,
            "scores": [s for s in self.scores if s in CONTRACT_SCORES],
        }

    def text(self) -> str:
        """One readable line: 'right off_support <= 0.02 (exact, learned)'."""
        return f"{self.column} {self.metric} {self.op} {self.value:g} ({', '.join(self.scores)})"


def _check_claim(name: str, claim: Claim) -> Claim:
    """The claim itself; ValueError names the scene and the bad field."""
    if claim.column not in SIDES:
        raise ValueError(f"{name}: claim column {claim.column!r} is not one of {SIDES}")
    if claim.metric not in CLAIM_METRICS:
        raise ValueError(f"{name}: claim metric {claim.metric!r} is not one of {CLAIM_METRICS}")
    if claim.op not in OPS:
        raise ValueError(f"{name}: claim op {claim.op!r} is not one of {tuple(OPS)}")
    if not claim.scores or not set(claim.scores) <= set(SCORES):
        raise ValueError(f"{name}: claim scores {claim.scores!r} must be among {SCORES}")
    return claim


class Curated(NamedTuple):
    name: str  # URL slug: ?scene=<name>
    title: str
    caption: str  # two or three sentences: what to look at, asserting only what `claims` check
    left: dict  # Scene.from_dict input of each column
    right: dict
    heat: str = "scale_neg"  # the field view's heatmap
    claims: tuple[Claim, ...] = ()  # every number of the caption, checked by tests/test_claims.py

    def scenes(self) -> dict[str, Scene]:
        """{'left': Scene, 'right': Scene} of this curated scene."""
        return {"left": Scene.from_dict(self.left), "right": Scene.from_dict(self.right)}

    def claim_scene(self, claim: Claim, score: str) -> Scene:
        """The scene a claim is evaluated on: its column with the source's keys (SOURCES)."""
        return Scene.from_dict({**getattr(self, claim.column), **SOURCES[score]})

    def to_dict(self) -> dict:
        """The `scenes --json` entry: name, title, caption, both complete scenes, the claims."""
        return {
            "name": self.name,
            "title": self.title,
            "caption": self.caption,
            **{side: scene.to_dict() for side, scene in self.scenes().items()},
            "claims": [
                claim.to_dict() for claim in self.claims if set(claim.scores) & set(CONTRACT_SCORES)
            ],
        }


class Checked(NamedTuple):
    """A claim with what was measured: {score: value} and whether it holds for every score."""

    claim: Claim
    measured: dict[str, float]
    holds: bool


def check_claims(
    curated_scene: Curated, metrics_of: Callable[[Scene], Mapping] | None = None
) -> list[Checked]:
    """Every claim of a curated scene evaluated: its column run once per listed score source.

    metrics_of(scene) -> metrics dict; by default toydiff.scene.run(scene)[1], each (column, score)
    run once per call. Pass a memoised one to share runs between calls."""
    if metrics_of is None:
        runs: dict[str, Mapping] = {}  # this call's runs, one per (column, score)

        def metrics_of(scene: Scene) -> Mapping:
            key = scene.to_json()
            if key not in runs:
                runs[key] = run_scene(scene)[1]
            return runs[key]

    out = []
    for claim in curated_scene.claims:
        measured = {
            score: float(metrics_of(curated_scene.claim_scene(claim, score))[claim.metric])
            for score in claim.scores
        }
        out.append(Checked(claim, measured, all(map(claim.holds, measured.values()))))
    return out


def _pair(common: dict, left: dict, right: dict) -> tuple[dict, dict]:
    return {**common, **left}, {**common, **right}


L, R = "left", "right"
EXACT, LEARNED, EVERYWHERE = ("exact",), ("learned",), ("everywhere",)

CURATED: tuple[Curated, ...] = tuple(
    Curated(
        name,
        title,
        caption,
        *_pair(common, left, right),
        **extra,
        claims=tuple(_check_claim(name, Claim(*c)) for c in claims),
    )
    for name, title, caption, common, left, right, extra, claims in (
        (
            "why_ncfg_fails",
            "Why nCFG fails",
            "Negated CFG keeps pushing away from class C with full weight long after a sample has "
            "left it: over 95 % of the samples are flung off the data (grey points), under 1 % stay "
            "in C. Contrastive CFG at the same γ, with τ = 5, fades its weight λ⁻ once a sample no "
            "longer resembles C, so its samples land on A and B: under 2 % off the data (5 % with "
            "the learned net) and under 5 % in C.",
            dict(preset="three_blobs", negative="C", gamma=3.0, t=500.0),
            dict(method="ncfg"),
            # τ = 5, not 1: at τ = 1 15 % of CCFG's samples (41 % with the learned net) end off
            # the data, which the picture showed while the caption said "land on A and B"
            dict(method="ccfg", tau=5.0),
            {},
            (
                (L, "off_support", ">=", 0.95),
                (L, "leakage_hard", "<=", 0.01),
                (R, "off_support", "<=", 0.02, EXACT),
                (R, "off_support", "<=", 0.05, LEARNED),
                (R, "leakage_hard", "<=", 0.05),
            ),
        ),
        (
            "attenuation_map",
            "The attenuation map",
            "The heatmap is CCFG's negative weight λ⁻ over the plane at timestep t (nCFG's is 1 "
            "everywhere): ≈ 1 for t ≥ 700, it shrinks to a halo around class C by t ≈ 200 and "
            "climbs back above 0.8 everywhere for t ≤ 10, because Δ_n, and with it the push that "
            "λ⁻ scales, carries a factor √(1−ᾱ_t) that vanishes as t → 0. Both rules leave under "
            "2 % of the samples in C, but nCFG flings over 95 % of them off the data, CCFG under "
            "35 %.",
            dict(preset="nested", negative="center", gamma=3.0, t=900.0),
            dict(method="ncfg"),
            dict(method="ccfg", tau=1.0),
            dict(heat="lam_neg"),
            (
                (L, "off_support", ">=", 0.95),
                (L, "leakage_hard", "<=", 0.02, EXACT),
                (R, "off_support", "<=", 0.35, EXACT),
                (R, "off_support", "<=", 0.5, LEARNED),
                (R, "leakage_hard", "<=", 0.02, EXACT),
            ),
        ),
        (
            "overlapping_concepts",
            "Overlapping concepts",
            "'warm' owns the left mode, shares the middle one with 'round' and holds 30 % of the "
            "top one: negating it, both rules bring the mean p(warm | x) below 0.15. nCFG pays "
            "with over 60 % of the samples off the data, while CCFG (τ = 2) keeps under 5 % off "
            "it (10 % with the learned net).",
            dict(preset="overlap", negative="warm", gamma=3.0, t=500.0),
            dict(method="ncfg"),
            # τ = 2, not 1: with the learned net τ = 1 put 29 % of the samples off the data
            dict(method="ccfg", tau=2.0),
            {},
            (
                (L, "leakage", "<=", 0.15),
                (L, "off_support", ">=", 0.6),
                (R, "leakage", "<=", 0.15),
                (R, "off_support", "<=", 0.05, EXACT),
                (R, "off_support", "<=", 0.1, LEARNED),
            ),
        ),
        (
            "temperature_tau",
            "The temperature τ",
            "τ sets how fast CCFG's weight λ⁻ = 2σ(−τ‖Δ‖²) decays: at τ = 0.01 (left) it stays "
            "near 1 and CCFG acts like nCFG, over 95 % of the samples flung off the data and under "
            "1 % left in C. At τ = 10 (right) it fades so fast that under 1 % land off the data "
            "(4 % with the learned net) but over 4 % leak back into C: compare the off-support "
            "and leakage rows.",
            dict(preset="three_blobs", negative="C", method="ccfg", gamma=3.0, t=500.0),
            dict(tau=0.01),
            dict(tau=10.0),
            dict(heat="lam_neg"),
            (
                (L, "off_support", ">=", 0.95),
                (L, "leakage_hard", "<=", 0.01),
                (R, "off_support", "<=", 0.01, EXACT),
                (R, "off_support", "<=", 0.04, LEARNED),
                (R, "leakage_hard", ">=", 0.04),
            ),
        ),
        (
            "dng_posterior",
            "DNG's tracked posterior",
            "Dynamic negative guidance scales the negative term by a running estimate of p(C | x_t), "
            "updated along each trajectory (left); the right column uses the exact posterior of the "
            "mixture instead. Both leave under 1 % of the samples in C and under 2 % off the data, "
            "and the tracked estimate stays within 0.03 of the exact one on average over steps and "
            "samples; the weights panel draws both.",
            dict(preset="three_blobs", negative="C", gamma=5.0, t=500.0),
            dict(method="dng"),
            dict(method="dng_oracle"),
            dict(heat="p_neg"),
            (
                (L, "leakage_hard", "<=", 0.01),
                (L, "off_support", "<=", 0.02),
                (L, "p_neg_error", "<=", 0.03),
                (L, "diverged", "<=", 0),
                (R, "leakage_hard", "<=", 0.01),
                (R, "off_support", "<=", 0.02),
                (R, "diverged", "<=", 0),
            ),
        ),
        (
            "autoguidance_tree",
            "Autoguidance on the tree",
            "The autoguidance paper's picture. CFG with a weak unconditional model (left: the "
            "mixture blurred by δ = 0.03, at ∅) pushes class A away from B, so that the subtrees "
            "nearest B lose their samples: over 10 % of the samples off the data and an energy "
            "distance to p(x | A) above 0.05. Autoguidance (right) extrapolates away from the same "
            "blurred mixture given A: under 3.5 % off the data and an energy distance below "
            "0.005, every branch kept.",
            dict(preset="tree", positive="A", negative="B", gamma=3.0, t=300.0, delta=0.03),
            dict(method="cfg_weak"),
            dict(method="autoguidance", gamma=2.0),
            dict(heat="log_p"),
            (  # exact only: with learned scores the guide is a net, not the blurred mixture
                (L, "off_support", ">=", 0.1, EXACT),
                (L, "energy", ">=", 0.05, EXACT),
                (R, "off_support", "<=", 0.035, EXACT),
                (R, "energy", "<=", 0.005, EXACT),
            ),
        ),
        (
            "autoguidance_tree_learned",
            "Autoguidance on the tree, learned nets",
            "The same pair on the shipped nets at the same w = 2, the guide being the main net's "
            "training stopped at a quarter of its steps. Both keep under 12 % of the samples off "
            "the data, but CFG with the guide's ε_∅ (left) distorts class A, its energy distance "
            "to p(x | A) above 0.02, while autoguidance (right) stays below 0.005 and keeps the "
            "outer branches (benchmarks/autoguidance_tree.py sweeps w).",
            dict(preset="tree", positive="A", negative="B", gamma=2.0, t=300.0, score="learned"),
            dict(method="cfg_weak"),
            dict(method="autoguidance"),
            dict(heat="log_p"),
            (  # learned only: the scene is about the shipped nets and their guide
                (L, "off_support", "<=", 0.12, LEARNED),
                (L, "energy", ">=", 0.02, LEARNED),
                (R, "off_support", "<=", 0.12, LEARNED),
                (R, "energy", "<=", 0.005, LEARNED),
            ),
        ),
        (
            "guidance_not_tilting",
            "Guidance is not tilting",
            "At γ = 1 (left) CFG samples p(x | round) exactly: its energy distance to the blue "
            "target is within ±0.006 of zero, like that between two exact sample sets. At γ = 5 "
            "(right) the mean p(round | x) rises from under 0.93 to above 0.95 with under 1 % of "
            "the samples off the data, yet the energy distance to p(x | round) exceeds 0.5: "
            "tilting p(x | round) by p(round | x)^γ would keep the shared middle mode, where "
            "p(round | x) = 1, but guidance moves almost all of its samples to the right mode.",
            dict(preset="overlap", positive="round", negative=None, method="cfg", t=500.0),
            dict(gamma=1.0),
            dict(gamma=5.0),
            dict(heat="log_p"),
            (
                (L, "energy", "<=", 0.006),
                (L, "energy", ">=", -0.006),
                (L, "alignment", "<=", 0.93),
                (R, "alignment", ">=", 0.95),
                (R, "off_support", "<=", 0.01, EXACT),
                (R, "off_support", "<=", 0.02, LEARNED),
                (R, "energy", ">=", 0.5),
            ),
        ),
        (
            "linear_targets",
            "Linear targets are exact",
            "With the exact posterior p = p(warm | x_t) and γ = 1, DNG's weight p/(1 − p) turns the "
            "score of p_t(x) into that of p_t(x | ¬warm), a linear combination of the data's "
            "densities, which noising keeps: its samples are draws of the blue target, energy "
            "distance within ±0.0075 of zero (three times the estimator's sd) and under 2 % off "
            "the data. nCFG at the same γ aims at a geometric mixture p^(1+γ)/p_warm^γ, which "
            "noising does not keep: its energy distance exceeds 0.4 and over 20 % of its samples "
            "leave the data.",
            dict(preset="overlap", positive=None, negative="warm", gamma=1.0, t=500.0),
            dict(method="dng_oracle", p_max=0.999),
            dict(method="ncfg"),
            dict(heat="p_neg"),
            (
                (L, "energy", "<=", 0.0075),
                (L, "energy", ">=", -0.0075),
                (L, "off_support", "<=", 0.02),
                (R, "energy", ">=", 0.4),
                (R, "off_support", ">=", 0.2),
            ),
        ),
        (
            "two_or_three_evaluations",
            "Two evaluations or three",
            "Both columns remove 'warm' from 'round' on the same seeds, under 1 % of the samples "
            "left in it. The SD negative prompt (left) puts ε_n where ε_∅ was, 2 network "
            "evaluations per step, nCFG + CFG with the negative scale tied to γ − 1: that tied "
            "push sends over 85 % of the samples off the data. CCFG (right, τ = 2) pays a third "
            "evaluation for ε_∅ and keeps under 5 % off the data (15 % with the learned net).",
            dict(preset="overlap", positive="round", negative="warm", gamma=3.0, t=500.0),
            dict(method="sd_negative"),
            dict(method="ccfg", tau=2.0),
            {},
            (
                (L, "leakage_hard", "<=", 0.01),
                (L, "off_support", ">=", 0.85),
                (R, "leakage_hard", "<=", 0.01),
                (R, "off_support", "<=", 0.05, ("exact", "everywhere")),
                (R, "off_support", "<=", 0.15, LEARNED),
            ),
        ),
        (
            "rotated_plane",
            "Turn the plane",
            "three_blobs turned by 45° (a net answers in its own frame: R ε(Rᵀx)). SLD's safety "
            "mask acts on each coordinate separately, so its answer depends on the axes: over 25 % "
            "of its samples land in C here (under 6 % on the unturned preset). CCFG is built from "
            "norms, which a rotation keeps: under 4 % in C and under 2 % off the data (4 % with "
            "the learned net), turned or not.",
            dict(preset="three_blobs", rotate=45.0, negative="C", gamma=3.0, t=500.0),
            dict(method="sld"),
            dict(method="ccfg", tau=5.0),
            {},
            (  # the shipped nets turned with the data (scene key rotate)
                (L, "leakage_hard", ">=", 0.25),
                (R, "leakage_hard", "<=", 0.04),
                (R, "off_support", "<=", 0.02, ("exact", "everywhere")),
                (R, "off_support", "<=", 0.04, LEARNED),
            ),
        ),
        (
            "net_never_been",
            "Where the net has never been",
            "nCFG (left) flings over 95 % of the samples off the data, where the standard net "
            "was never trained: the relative ε error of the branches it evaluates along the run "
            "is above 0.45. CCFG (right, τ = 5) keeps them on A and B, under 5 % off the data, "
            "and its error stays under 0.4: not small, since the negative branch ε(x | C) is still "
            "asked about points far from C. With the everywhere net (sidebar: learned net) "
            "CCFG's error is under 0.05.",
            dict(preset="three_blobs", negative="C", gamma=3.0, t=50.0, score="learned"),
            dict(method="ncfg"),
            dict(method="ccfg", tau=5.0),
            {},
            (
                (L, "off_support", ">=", 0.95),
                (L, "net_error_on_path", ">=", 0.45, LEARNED),
                (R, "off_support", "<=", 0.05),
                (R, "net_error_on_path", "<=", 0.4, LEARNED),
                (R, "net_error_on_path", "<=", 0.05, EVERYWHERE),
            ),
        ),
    )
)
NAMES = tuple(c.name for c in CURATED)


def curated(name: str) -> Curated:
    """The curated scene of that name; ValueError lists the valid names."""
    for c in CURATED:
        if c.name == name:
            return c
    raise ValueError(f"scene: unknown curated scene {name!r}; valid: {', '.join(NAMES)}")


# ----------------------------------------------------------------------------------- URL encoding
def _minimal(scene: Scene) -> dict:
    """The scene's keys that differ from the defaults, plus the ALWAYS keys (and mixture if inline)."""
    d, defaults = scene.to_dict(), _defaults(scene)
    keep = {k for k in ALWAYS} | ({"mixture"} if scene.mixture is not None else set())
    return {k: v for k, v in d.items() if k in keep or v != defaults.get(k)}


def encode_value(value: Any) -> str:
    """A query value: JSON for numbers, null and objects; plain text for strings unless they read as JSON."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
        return json.dumps(value)  # "1" or "null" as a concept name stays a string
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return str(int(value))  # 3.0 -> "3": shorter, and from_dict coerces it back
    return json.dumps(value, separators=(",", ":"))


def decode_value(text: str) -> Any:
    """Inverse of encode_value: JSON if it parses, else the text itself."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested past the parser's limit
        return text


def encode_query(scenes: Mapping[str, Scene], **extra) -> dict[str, str]:
    """Query parameters of the two columns' scenes (shared keys once, differing keys per column)."""
    parts = {side: _minimal(scenes[side]) for side in SIDES}
    defaults = {side: _defaults(scenes[side]) for side in SIDES}
    out: dict[str, str] = {k: encode_value(v) for k, v in extra.items() if v is not None}
    for key in _keys():
        values = [parts[side].get(key, defaults[side].get(key)) for side in SIDES]
        present = [key in parts[side] for side in SIDES]
        if not any(present):
            continue
        if all(present) and values[0] == values[1]:
            out[key] = encode_value(values[0])
        else:
            for side, value, here in zip(SIDES, values, present):
                if here:
                    out[f"{side}.{key}"] = encode_value(value)
    return out


class Decoded(NamedTuple):
    scenes: dict[str, Scene] | None  # None: nothing (valid) in the query, use the defaults
    curated: str | None  # name of the curated scene the query starts from
    present: bool  # presentation mode
    warnings: list[str]  # one message per problem, each naming the key


def _single(key: str, value, warnings: list[str]) -> str:
    """One string per key: the last of repeated values (a warning if they differ)."""
    if isinstance(value, (list, tuple)):
        if not value:
            return ""
        if len(set(value)) > 1:
            warnings.append(
                f"{key}: given {len(value)} times with different values; using the last"
            )
        value = value[-1]
    return str(value)


def _flag(key: str, text: str, warnings: list[str]) -> bool:
    if text.lower() in ("1", "true", "yes", "on", ""):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    warnings.append(f"{key}: expected 1 or 0, got {text[:40]!r}; presentation mode off")
    return False


def _check_mixture(key: str, value) -> None:
    if (
        isinstance(value, dict)
        and isinstance(value.get("means"), list)
        and len(value["means"]) > MAX_COMPONENTS
    ):
        raise ValueError(
            f"{key}: at most {MAX_COMPONENTS} components in a link, got {len(value['means'])}"
        )


def _column(shared: dict, own: dict, side: str, warnings: list[str]) -> dict:
    """One column's keys: the shared ones, then its own; knobs its rule does not have are dropped
    (silently when shared by both columns, with a warning when given for this column)."""
    method = own.get("method", shared.get("method", "ccfg"))
    if not isinstance(method, str) or method not in guidance.RULES:
        return {**shared, **own}  # Scene.from_dict names the bad method
    mine = guidance.rule(method).all_params
    foreign = set(knob_names()) - set(mine) - set(Scene.fields())
    for key in sorted(foreign & set(own)):
        warnings.append(f"{side}.{key}: {method!r} has no knob {key!r}; ignored")
    return {k: v for k, v in {**shared, **own}.items() if k not in foreign}


def decode_query(params: Mapping[str, Any]) -> Decoded:
    """The scenes a query describes; any problem gives a warning naming the key (never an exception).

    Unknown keys are ignored (with a warning); an invalid value drops the whole query's scenes, so the
    page falls back to its defaults rather than showing a half-applied link.
    """
    warnings: list[str] = []
    try:
        size = sum(len(str(k)) + len(str(v)) for k, v in params.items())
    except Exception:  # noqa: BLE001 - a hostile mapping must not escape
        return Decoded(None, None, False, ["query: unreadable"])
    if size > MAX_QUERY_CHARS:
        return Decoded(
            None, None, False, [f"query: {size} characters is too long (limit {MAX_QUERY_CHARS})"]
        )
    raw = {str(k): _single(str(k), v, warnings) for k, v in params.items()}
    present = _flag("present", raw.pop("present"), warnings) if "present" in raw else False
    base: dict[str, Any] = {}
    name = raw.pop("scene", None)
    if name is not None:
        try:
            base = dict(encode_query(curated(name).scenes()))
        except ValueError as e:
            warnings.append(f"{e}; showing the default view")
            name = None
    shared: dict[str, Any] = {}
    per: dict[str, dict] = {side: {} for side in SIDES}
    keys = _keys()
    for key, text in {**base, **raw}.items():
        side, _, field = key.rpartition(".")
        if field not in keys or (side and side not in SIDES):
            warnings.append(
                f"{key[:60]!r}: unknown key ignored; valid keys: scene, present, "
                f"{', '.join(keys)} (optionally prefixed left. or right.)"
            )
            continue
        (per[side] if side else shared)[field] = decode_value(text)
    dicts = {side: _column(shared, per[side], side, warnings) for side in SIDES}
    if not any(dicts.values()):
        return Decoded(None, name, present, warnings)
    scenes = {}
    for side in SIDES:
        try:
            _check_mixture("mixture", dicts[side].get("mixture"))
            scenes[side] = Scene.from_dict(dicts[side])
        except Exception as e:  # noqa: BLE001 - hostile links (deep JSON, odd types) must never raise
            warnings.append(f"{side} column: {e}; showing the default view")
            return Decoded(None, None, present, warnings)
    return Decoded(scenes, name, present, warnings)


# ------------------------------------------------------------------------------------ scene files
def pair_to_json(scenes: Mapping[str, Scene]) -> str:
    """JSON of both columns: {"left": scene dict, "right": scene dict} (each one a CLI scene file)."""
    return json.dumps({side: scenes[side].to_dict() for side in SIDES}, indent=1, sort_keys=True)


def pair_from_json(text: str, into: str = "both") -> dict[str, Scene]:
    """Scenes from a pair file ({"left", "right"}) or a single scene file (into 'left', 'right' or both).

    ValueError names the column and key of the first problem.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"scene JSON: {getattr(e, 'msg', e)}") from None
    if isinstance(data, dict) and set(data) == set(SIDES):
        out = {}
        for side in SIDES:
            try:
                out[side] = Scene.from_dict(data[side])
            except ValueError as e:
                raise ValueError(f"{side}: {e}") from None
        return out
    scene = Scene.from_dict(data)
    return {side: scene for side in (SIDES if into == "both" else (into,))}
