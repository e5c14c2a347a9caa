"""Matplotlib figures for files: final samples over the density, coloured by outcome."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import exact, fields  # noqa: E402
from ..metrics import OUTCOME_COLORS, outcomes  # noqa: E402, F401 - outcomes re-exported
from ..mixtures import Mixture  # noqa: E402


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


def tradeoff_figure(rows: list[dict], x: str = "off_support", y: str = "leakage_hard"):
    """Figure of one curve per (method, τ) through its γ sweep: leakage against off-support."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    curves = {}
    for r in rows:
        label = r["method"] + ("" if r["tau"] != r["tau"] else f" τ={r['tau']:g}")
        curves.setdefault(label, []).append(r)
    for label, rs in curves.items():
        rs = sorted(rs, key=lambda r: r["gamma"])
        ax.plot([r[x] for r in rs], [r[y] for r in rs], "o-", ms=3, label=label)
    ax.set(
        xlabel=x.replace("_", " "), ylabel=y.replace("_", " "), title="γ sweep: removal vs quality"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def animation(mix: Mixture, traj, negative, threshold: float, title: str = "", frames: int = 50):
    """matplotlib FuncAnimation of the trajectory (S+1, N, 2), points coloured by final outcome."""
    from matplotlib.animation import FuncAnimation

    traj = np.asarray(traj)
    idx = np.unique(np.linspace(0, len(traj) - 1, min(frames, len(traj))).round().astype(int))
    fig = samples_figure(mix, traj[-1], negative, threshold, title)
    ax = fig.axes[0]
    colors = np.array([OUTCOME_COLORS[o] for o in outcomes(mix, traj[-1], negative, threshold)])
    for coll in list(ax.collections)[-len(OUTCOME_COLORS) :]:
        coll.remove()  # the static final scatter is replaced by the moving one
    scat = ax.scatter(traj[0, :, 0], traj[0, :, 1], s=3, c=colors)
    label = ax.text(0.02, 0.97, "", transform=ax.transAxes, va="top", fontsize=9)

    def update(i):
        scat.set_offsets(traj[idx[i]])
        label.set_text(f"step {idx[i]}/{len(traj) - 1}")
        return scat, label

    return FuncAnimation(fig, update, frames=len(idx), interval=60, blit=True)


def save_animation(anim, path: str, fps: int = 15):
    """Writes a GIF (Pillow) or an MP4 (the ffmpeg that imageio-ffmpeg ships) by the path's suffix."""
    if str(path).endswith(".mp4"):
        import imageio_ffmpeg

        matplotlib.rcParams["animation.ffmpeg_path"] = imageio_ffmpeg.get_ffmpeg_exe()
        anim.save(path, writer="ffmpeg", fps=fps)
    else:
        anim.save(path, writer="pillow", fps=fps)
