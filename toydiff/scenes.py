"""Curated lecture scenes (two columns each) and the URL query encoding of a pair of scenes.

Pure functions, no Streamlit. A query holds the two columns' Scenes: keys with equal values in both
columns appear once (`gamma=3`), keys that differ carry the column (`left.gamma=2&right.gamma=5`).
Values are JSON when they parse as JSON (`3`, `null`, `{...}` for an inline mixture), else plain
strings (`ccfg`). Reserved keys: `scene` (a curated scene's name) and `present` (presentation mode).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from .scene import Scene

SIDES = ("left", "right")
RESERVED = ("scene", "present")
ALWAYS = ("preset", "positive", "negative", "method")  # written even at their defaults
MAX_QUERY_CHARS = 200_000  # longer queries are refused before parsing (an inline tree is ≈ 120 k)
MAX_COMPONENTS = 5000  # inline mixtures beyond this are refused (the tree preset has 2032)
_FIELDS = tuple(f.name for f in dataclasses.fields(Scene))
_DEFAULTS = Scene().to_dict()


class Curated(NamedTuple):
    name: str  # URL slug: ?scene=<name>
    title: str
    caption: str  # two sentences: what to look at
    left: dict  # Scene.from_dict input of each column
    right: dict
    heat: str = "scale_neg"  # the field view's heatmap

    def scenes(self) -> dict[str, Scene]:
        """{'left': Scene, 'right': Scene} of this curated scene."""
        return {"left": Scene.from_dict(self.left), "right": Scene.from_dict(self.right)}


def _pair(common: dict, left: dict, right: dict) -> tuple[dict, dict]:
    return {**common, **left}, {**common, **right}


CURATED: tuple[Curated, ...] = tuple(
    Curated(name, title, caption, *_pair(common, left, right), **extra)
    for name, title, caption, common, left, right, extra in (
        (
            "why_ncfg_fails",
            "Why nCFG fails",
            "Negated CFG keeps pushing away from class C with full weight long after a sample has left it, "
            "so almost every sample is flung off the data (grey points; see the off-support row). "
            "Contrastive CFG removes C just as well, but its weight λ⁻ fades once a sample no longer "
            "resembles C, so the samples land on A and B.",
            dict(preset="three_blobs", negative="C", gamma=3.0, t=500.0),
            dict(method="ncfg"),
            dict(method="ccfg", tau=1.0),
            {},
        ),
        (
            "attenuation_map",
            "The attenuation map",
            "The heatmap is CCFG's negative weight λ⁻ over the plane at timestep t: drag t from 999 down to "
            "0 and watch it shrink to a halo around class C while nCFG's stays 1 everywhere. "
            "The arrows show the guidance term that this weight scales.",
            dict(preset="nested", negative="center", gamma=3.0, t=900.0),
            dict(method="ncfg"),
            dict(method="ccfg", tau=1.0),
            dict(heat="lam_neg"),
        ),
        (
            "overlapping_concepts",
            "Overlapping concepts",
            "'warm' shares its middle mode with 'round', so negating warm should keep round's share of it. "
            "Look at the middle mode: nCFG blasts it (and more) off the data, while CCFG keeps most samples "
            "on the allowed modes at the same leakage.",
            dict(preset="overlap", negative="warm", gamma=3.0, t=500.0),
            dict(method="ncfg"),
            dict(method="ccfg", tau=1.0),
            {},
        ),
        (
            "temperature_tau",
            "The temperature τ",
            "τ sets how fast CCFG's weight λ⁻ = 2σ(−τ‖Δ‖²) decays: at τ → 0 it stays 1 and CCFG is nCFG "
            "(left, flung samples), at large τ it vanishes and CCFG approaches no guidance (right, some "
            "leakage back into C). Compare the off-support and leakage rows.",
            dict(preset="three_blobs", negative="C", method="ccfg", gamma=3.0, t=500.0),
            dict(tau=0.01),
            dict(tau=10.0),
            dict(heat="lam_neg"),
        ),
        (
            "dng_posterior",
            "DNG's tracked posterior",
            "Dynamic negative guidance scales the negative term by a running estimate of p(C | x_t), "
            "updated along each trajectory (left); the right column uses the exact posterior of the "
            "mixture instead. The weights panel shows how far the tracked estimate is from the exact one.",
            dict(preset="three_blobs", negative="C", gamma=5.0, t=500.0),
            dict(method="dng"),
            dict(method="dng_oracle"),
            dict(heat="p_neg"),
        ),
        (
            "autoguidance_tree",
            "Autoguidance on the tree",
            "The autoguidance paper's picture. CFG with a weak unconditional model (left: the "
            "mixture blurred by δ = 0.03, at ∅) pushes class A away from B: the subtrees nearest B "
            "lose their samples and the rest pile up at the far tips, energy distance far above "
            "the baseline. Autoguidance (right) extrapolates away from the same blurred mixture "
            "given A: fewer samples off the data than unguided sampling, every branch kept.",
            dict(preset="tree", positive="A", negative="B", gamma=3.0, t=300.0, delta=0.03),
            dict(method="cfg_weak"),
            dict(method="autoguidance", gamma=2.0),
            dict(heat="log_p"),
        ),
        (
            "autoguidance_tree_learned",
            "Autoguidance on the tree, learned nets",
            "The same pair on the shipped nets at the same w = 2, the guide being the main net's "
            "training stopped at a quarter of its steps. Both put fewer samples off the data than "
            "unguided sampling, but CFG with the guide's ε_∅ (left) also distorts class A, its "
            "energy distance to p(x | A) far above the baseline, while autoguidance (right) is "
            "more precise still, stays near the baseline and keeps the outer branches "
            "(benchmarks/autoguidance_tree.py sweeps w).",
            dict(preset="tree", positive="A", negative="B", gamma=2.0, t=300.0, score="learned"),
            dict(method="cfg_weak"),
            dict(method="autoguidance"),
            dict(heat="log_p"),
        ),
        (
            "guidance_not_tilting",
            "Guidance is not tilting",
            "At γ = 1 (left) CFG samples p(x | round) exactly: its energy distance to the blue target is at "
            "the baseline. At γ = 5 (right) the samples do not just reweight the modes by p(round | x)^γ: "
            "they move within and between modes, and the distance to any density on the data grows.",
            dict(preset="overlap", positive="round", negative=None, method="cfg", t=500.0),
            dict(gamma=1.0),
            dict(gamma=5.0),
            dict(heat="log_p"),
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
    d = scene.to_dict()
    keep = {k for k in ALWAYS} | ({"mixture"} if scene.mixture is not None else set())
    return {k: v for k, v in d.items() if k in keep or v != _DEFAULTS[k]}


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
    out: dict[str, str] = {k: encode_value(v) for k, v in extra.items() if v is not None}
    for key in _FIELDS:
        values = [parts[side].get(key, _DEFAULTS[key]) for side in SIDES]
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
    for key, text in {**base, **raw}.items():
        side, _, field = key.rpartition(".")
        if field not in _FIELDS or (side and side not in SIDES):
            warnings.append(
                f"{key[:60]!r}: unknown key ignored; valid keys: scene, present, "
                f"{', '.join(_FIELDS)} (optionally prefixed left. or right.)"
            )
            continue
        (per[side] if side else shared)[field] = decode_value(text)
    dicts = {side: {**shared, **per[side]} for side in SIDES}  # a column's own keys win
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
