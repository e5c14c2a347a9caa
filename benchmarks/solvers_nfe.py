"""Energy distance against network evaluations (NFE) for every registered solver (issue "Open
seams", item 4): unguided exact-score sampling of a preset, n = 2000, the mean |energy| over seeds,
in units of the exact-vs-exact baseline's sd (1 = as close as two exact sample sets).

    .venv/bin/python benchmarks/solvers_nfe.py [--presets three_blobs,tree] [--seeds 3]

Writes results/solvers_nfe.md (table and the command) and results/solvers_nfe.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from toydiff import solvers  # noqa: E402
from toydiff.scene import Scene, run  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
STEPS = (5, 10, 20, 50, 100)


def nfe(solver: str, steps: int) -> int:
    """Network evaluations of a run: the solver's evaluations per step × steps."""
    return solvers.SOLVERS[solver].evals * steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", default="three_blobs,tree", help="comma-separated presets")
    p.add_argument("--seeds", type=int, default=3, help="seeds per point (default 3)")
    args = p.parse_args(argv)
    presets = args.presets.split(",")
    rows, start = [], time.time()
    todo = [(pr, s, k) for pr in presets for s in solvers.SOLVERS for k in STEPS]
    for preset, solver, steps in tqdm(todo, desc="solvers × steps"):
        base = {"preset": preset, "method": "none", "negative": None, "positive": None}
        energies, sd = [], None
        for seed in range(args.seeds):
            scene = Scene.from_dict({**base, "solver": solver, "steps": steps, "seed": seed})
            _, m = run(scene)
            energies.append(m["energy"])
            sd = m["energy_baseline_sd"]
        rows.append((preset, solver, steps, nfe(solver, steps), abs(np.mean(energies)) / sd))
    fig, axes = plt.subplots(1, len(presets), figsize=(5 * len(presets), 4), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        for solver in solvers.SOLVERS:
            pts = [(r[3], r[4]) for r in rows if r[0] == preset and r[1] == solver]
            ax.plot(*zip(*pts), "o-", label=solver)
        ax.axhline(3 / np.sqrt(args.seeds), color="grey", ls="--", lw=1, label="3 standard errors")
        ax.set(xscale="log", yscale="log", xlabel="network evaluations", title=preset)
        ax.set_ylabel(f"|mean energy| over {args.seeds} seeds / baseline sd")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "solvers_nfe.png", dpi=110)
    lines = [
        "# Energy distance against network evaluations, every solver",
        "",
        f"`.venv/bin/python benchmarks/solvers_nfe.py --presets {args.presets} --seeds "
        f"{args.seeds}` ({time.strftime('%Y-%m-%d %H:%M')}, {time.time() - start:.0f} s): "
        "unguided exact-score sampling, n = 2000, |mean energy over seeds| / baseline sd "
        f"(within 3/√{args.seeds} = {3 / np.sqrt(args.seeds):.2f}: as close as exact sets). "
        "Plot: solvers_nfe.png.",
        "",
        "| preset | solver | steps | NFE | |energy| / sd |",
        "|---|---|---:|---:|---:|",
        *(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2f} |" for r in rows),
    ]
    (OUT / "solvers_nfe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
