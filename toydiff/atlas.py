"""Method atlas: one row per guidance method (MATH §3), built from the RULES registry, plus the
image-only perturbation methods; rendered as Markdown with a link to a scene that shows each."""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import urlencode

from . import guidance, scenes
from .scene import Scene

_SYMBOL = {
    "uncond": "ε_∅",
    "neg": "ε_n",
    "rand": "ε(x_t, c_random)",
    "weak_uncond": "ε_∅ of the weak net or δ-blurred mixture",
}
_GUIDE = {  # Rule.weak -> (negative branch, extra training)
    "weak": (
        "ε_weak: weak net or δ-blurred mixture",
        "a weak net (shipped, small or short), or none with the δ-blur",
    ),
    "sims": ("ε_sims: net fine-tuned on its own samples", "fine-tuning on its own samples"),
    "skip": ("ε with hidden layer 0 skipped", "none"),
}
# Scene.from_dict input of the column that shows each rule (the other column: no guidance).
_BLOBS = dict(preset="three_blobs", negative="C")
_ROUND = dict(preset="overlap", positive="round", negative=None)
_BOTH = dict(preset="overlap", positive="round", negative="warm")
_TREE = dict(preset="tree", positive="A", negative=None, delta=0.03, t=300.0)
SCENES = {
    "none": dict(_BLOBS, negative=None),
    "cfg": _ROUND,
    "cfg_weak": _TREE,
    "ncfg": _BLOBS,
    "ccfg": dict(_BLOBS, tau=1.0),
    "dng": _BLOBS,
    "dng_oracle": _BLOBS,
    "sd_negative": _BOTH,
    "perp_neg": _BOTH,
    "autoguidance": _TREE,
    "sims": dict(_BLOBS, negative=None, score="learned"),
    "perturbed": dict(_BLOBS, negative=None, score="learned"),
    "icg": _ROUND,
}
_INTERVAL = dict(_ROUND, method="cfg", gamma=5.0, t_lo=200.0, t_hi=800.0)
_LEFT = {"interval": dict(t_lo=0.0, t_hi=1000.0)}  # the other column; default: no guidance


# How each rule's scale maps onto CFG's γ (ε̂ = ε_∅ + γΔ_p, γ = 1 no guidance; MATH §3.3); a rule
# not listed writes its γ as CFG does. Papers that write ε_c + w(ε_c − ε_∅) use w = γ − 1.
CONVENTIONS = {
    "none": "no scale",
    "cfg": "γ; papers' ε_c + w(ε_c − ε_∅) is γ = w + 1",
    "ncfg": "γ on Δ_p and on Δ_n (the CCFG paper's form)",
    "ccfg": "γ, each difference weighted by λ∓ ∈ (0, 2)",
    "dng": "γ_n on Δ_n·p/(1−p), γ_p (CFG's γ) on Δ_p",
    "dng_oracle": "γ_n on Δ_n·p/(1−p), γ_p (CFG's γ) on Δ_p",
    "sd_negative": "γ on Δ_p with the negative scale tied to γ − 1: nCFG + CFG at (γ, γ − 1)",
    "autoguidance": "w as γ, towards the main net away from the weak one",
    "cfg_weak": "γ, with the weak net's ε_∅",
    "sims": "w: ε_main − w(ε_sims − ε_main), i.e. γ = w + 1 from ε_sims",
    "perturbed": "w: ε + w(ε − ε_perturbed), i.e. γ = w + 1 from ε_perturbed",
    "apg": "γ as CFG's in x̂0 space (η = 1, r = ∞, β = 0: CFG at γ)",
    "cfg_pp": "λ ∈ [0, 1] in the data estimate; re-noising with ε_∅",
    "cfg_zero_star": "γ as CFG's on velocities, after α* scales v_∅",
    "sld": "γ as CFG's; the safety term is subtracted inside γ(…)",
}


def scale_convention(name: str) -> str:
    """How the rule's scale maps onto CFG's γ (CONVENTIONS; unlisted rules write γ as CFG does)."""
    return CONVENTIONS.get(name, "γ as CFG's")


def evaluations(r: guidance.Rule) -> str:
    """Network evaluations per sampling step (DDIM; Heun doubles it): one per distinct branch,
    plus the positive branch a rule that takes one optionally adds ('cond' is ε_p or ε_∅)."""
    n = len(set(r.branches))
    return f"{n} (+1 with a positive)" if r.optional_pos else str(n)


class Row(NamedTuple):
    name: str  # rule name, or the image method's
    label: str
    condition: str  # "yes" | "no": needs a conditional model (a concept or prompt)
    training: str  # training beyond one conditional model
    negative: str  # the branch guidance steers away from
    formula: str
    where: str  # 2D · digits · SD
    scene: dict | None  # Scene.from_dict input of the column showing it (None: no 2D scene)
    evals: str = "—"  # network evaluations per step (evaluations)
    scale: str = "—"  # how its scale maps onto CFG's γ (CONVENTIONS)


class ImageMethod(NamedTuple):
    name: str
    label: str
    negative: str
    formula: str
    where: str


# Image-only methods, run by diffusers' own code in toydiff/bridge/perturb.py (SAG: the SD 1.5
# pipeline only; the guider hooks also on the digits UNet); the 2D analogue of each is
# perturbed-network guidance (the same net, perturbed, as the negative branch).
IMAGE_METHODS = (  # formulas as MATH §3.1: CFG plus w · shift, w = w_pert
    ImageMethod(
        "pag",
        "Perturbed-attention guidance (Ahn et al. 2024)",
        "ε_pert: mid-block self-attention map replaced by the identity",
        "ε̂ = ε_∅ + γΔ_p + w(ε_p − ε_pert), softmax(QKᵀ/√d)V → V",
        "digits · SD (diffusers)",
    ),
    ImageMethod(
        "sag",
        "Self-attention guidance (Hong et al. 2023)",
        "ε_deg: ε(x_deg, ∅), x̂_0 blurred where self-attention is high",
        "ε̂ = ε_∅ + γΔ_p + w(ε_∅ − ε_deg)",
        "SD 1.5 (diffusers)",
    ),
    ImageMethod(
        "seg",
        "Smoothed energy guidance (Hong 2024)",
        "ε_pert: self-attention queries Gaussian-blurred",
        "ε̂ = ε_∅ + γΔ_p + w(ε_p − ε_pert), Q → G_σ * Q",
        "digits · SD (diffusers)",
    ),
    ImageMethod(
        "slg",
        "Skip-layer guidance (Stability AI, SD 3.5)",
        "ε_pert: attention blocks skipped",
        "ε̂ = ε_∅ + γΔ_p + w(ε_p − ε_pert), chosen blocks → identity",
        "digits · SD (diffusers)",
    ),
)


def formula(fn) -> str:
    """The formula of a rule function: its docstring's first sentence after 'Name (...): '
    (MATH §3), its lines joined."""
    paragraph = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split()).replace("`", "")
    return re.split(r"(?<!\bcf)(?<!\bal)\.\s+(?=[A-Z])", paragraph.split(": ", 1)[-1])[0].rstrip(
        "."
    )


def runs_on_images(r: guidance.Rule) -> bool:
    """Whether the bridge runs the rule: only ∅, positive and negative branches, no exact posterior
    (the test of bridge.loop.bridge_rule, repeated here so the atlas needs no torch)."""
    return set(r.branches) <= {"uncond", "pos", "neg", "cond"} and not (r.state and r.state.exact)


def _negative(r: guidance.Rule) -> str:
    if "weak" in r.branches:
        return _GUIDE[r.weak][0]
    found = [_SYMBOL[b] for b in ("neg", "rand", "weak_uncond", "uncond") if b in r.branches]
    return found[0] if found else "—"


def _training(r: guidance.Rule) -> str:
    if "weak" in r.branches:
        return _GUIDE[r.weak][1]
    if "weak_uncond" in r.branches:
        return f"{_GUIDE[r.weak][1]}, with condition dropout"
    return "condition dropout (for ε_∅)" if "uncond" in r.branches else "none"


def rule_row(r: guidance.Rule) -> Row:
    """The atlas row of a registered rule, read off its branches, weak model and docstring."""
    return Row(
        r.name,
        r.label,
        "yes" if {"pos", "neg", "rand"} & set(r.branches) else "no",
        _training(r),
        _negative(r),
        formula(r.fn),
        "2D · digits · SD" if runs_on_images(r) else "2D",
        {**SCENES.get(r.name, default_scene(r)), "method": r.name},
        evaluations(r),
        scale_convention(r.name),
    )


def default_scene(r: guidance.Rule) -> dict:
    """The scene of a rule no curated entry lists (one registered from outside): overlap with the
    concepts it needs (positive 'round', negative 'warm'), at its registry defaults."""
    return {
        **_BOTH,
        "positive": _BOTH["positive"] if guidance.needs_positive(r) else None,
        "negative": _BOTH["negative"] if guidance.needs_negative(r) else None,
    }


def rows() -> list[Row]:
    """Every method: the registered rules, the guidance interval, then the image-only methods."""
    out = [rule_row(r) for r in guidance.RULES.values()]
    label, neg = "Guidance interval (wraps any rule)", "that of the wrapped rule"
    out.append(
        Row(
            "interval",
            label,
            "as the rule",
            "none",
            neg,
            formula(guidance.interval),
            "2D",
            _INTERVAL,
            "that of the wrapped rule",
            "that of the wrapped rule",
        )
    )
    out += [
        Row(
            m.name,
            m.label,
            "no",
            "none",
            m.negative,
            m.formula,
            m.where,
            None,
            "3",
            "w on the perturbation",
        )
        for m in IMAGE_METHODS
    ]
    return out


def scene_pair(row: Row) -> dict[str, Scene]:
    """The two columns a row links to: the method on the right, no guidance (or for the interval,
    the same rule at every t) on the left; image-only rows show perturbed-network guidance."""
    right = Scene.from_dict(row.scene or {**SCENES["perturbed"], "method": "perturbed"})
    return {"left": right.replace(**_LEFT.get(row.name, {"method": "none"})), "right": right}


def link(row: Row, base_url: str = "") -> str:
    """Relative link (base_url + '?query') to the row's scene pair, in the app's URL encoding."""
    return f"{base_url}?{urlencode(scenes.encode_query(scene_pair(row)))}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # p(n | x_t) must not split the Markdown cell


def table(base_url: str = "") -> str:
    """The atlas as one Markdown table: method, condition?, extra training, negative branch,
    formula, evaluations per step, its scale against CFG's γ, where it runs, and a link to a
    scene (image-only rows: their 2D analogue)."""
    lines = [
        "| Method | Condition? | Extra training | Negative branch | Formula | Evaluations / step "
        "| Scale vs CFG's γ | Runs on | Scene |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows():
        shown = "2D analogue" if row.scene is None else "open"
        cells = (row.label, row.condition, row.training, row.negative)
        cells += (f"`{row.formula}`", row.evals, row.scale, row.where)
        cells += (f"[{shown}]({link(row, base_url)})",)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
