"""Matplotlib figures for the bridge: the rules × seeds image grid and the weights over time."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

from .. import guidance

PANELS = (
    ("scale_neg", "negative scale γλ⁻"),
    ("d_neg_sq", "‖Δ_n‖² = ‖ε_n − ε_∅‖²"),
    ("p_neg", "DNG's tracked p(n | x_t)"),
)
PERT_PANEL = ("pert_norm", "perturbation's push ‖ε̂ − ε_cfg‖")  # pag, sag, seg, slg (perturb.py)


def label(name: str) -> str:
    """The display name of a guidance rule or a perturbation method."""
    from .perturb import METHODS

    return METHODS[name].label if name in METHODS else guidance.RULES[name].label


def grid(images: dict, seeds: list[int], title: str = "") -> Figure:
    """Rows = rules, columns = seeds; images[rule] is (B, H, W, 3) in [0, 1]."""
    rows, cols = len(images), len(seeds)
    fig = Figure(figsize=(1.8 * cols + 0.6, 1.8 * rows + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for r, (name, imgs) in enumerate(images.items()):
        for c, seed in enumerate(seeds):
            ax = axes[r, c]
            ax.imshow(np.clip(imgs[c], 0, 1))
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"seed {seed}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label(name), fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def weights(infos: dict) -> Figure:
    """Per-step diagnostics against t (mean over seeds, min–max band): γλ⁻, ‖Δ_n‖², DNG's p_t (+ push)."""
    pert = any(PERT_PANEL[0] in info for info in infos.values())
    panels = PANELS + (PERT_PANEL,) * pert
    fig = Figure(figsize=(4 * len(panels), 3.4), layout="constrained")
    for ax, (key, title) in zip(fig.subplots(1, len(panels)), panels, strict=True):
        for i, (name, info) in enumerate(infos.items()):
            if key in info:
                v = np.asarray(info[key], np.float64)  # (S, B)
                ls = ("-", "--", ":", "-.")[
                    i % 4
                ]  # rules with equal weights (nCFG, SD) stay visible
                ax.plot(info["t"], v.mean(1), ls=ls, label=label(name))
                ax.fill_between(info["t"], v.min(1), v.max(1), alpha=0.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("timestep t")
        ax.invert_xaxis()  # sampling runs from t = T down to 0
        if key == "d_neg_sq":
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig
