"""Matplotlib figures for files: final samples over the density, coloured by outcome."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import exact, fields  # noqa: E402
from ..mixtures import Mixture  # noqa: E402

OUTCOME_COLORS = {"allowed": "#2b8cbe", "leaked": "#e34a33", "off-support": "#636363"}


def outcomes(mix: Mixture, x0, negative, threshold: float) -> np.ndarray:
    """(N,) labels: 'off-support' (log p below threshold or non-finite), 'leaked' (p(n|x) > ½), 'allowed'."""
    x0 = np.nan_to_num(np.asarray(x0, np.float32), nan=1e6, posinf=1e6, neginf=-1e6)
    log_p = np.asarray(exact.log_prob(mix, x0))
    leaked = np.asarray(exact.posterior(mix, x0, 1.0, negative)) > 0.5 if negative is not None else 0
    return np.where(log_p < threshold, "off-support", np.where(leaked, "leaked", "allowed"))


def samples_figure(mix: Mixture, x0, negative, threshold: float, title: str = "", res: int = 200):
    """Figure of final samples over log p(x) contours, the negative concept's region shaded."""
    lim = fields.extent(mix)
    g = fields.grid(lim, res)
    log_p = np.asarray(exact.log_prob(mix, g)).reshape(res, res)
    u = np.linspace(-lim, lim, res)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.contourf(u, u, np.exp(log_p), levels=12, cmap="Greys", alpha=0.5)
    if negative is not None:
        post = np.asarray(exact.posterior(mix, g, 1.0, negative)).reshape(res, res)
        ax.contourf(u, u, post, levels=[0.5, 1.0], colors=[OUTCOME_COLORS["leaked"]], alpha=0.12)
    labels = outcomes(mix, x0, negative, threshold)
    x0 = np.asarray(x0)
    for name, color in OUTCOME_COLORS.items():
        pts = x0[labels == name]
        ax.scatter(pts[:, 0], pts[:, 1], s=3, color=color, label=f"{name} ({len(pts)})")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title)
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    fig.tight_layout()
    return fig
