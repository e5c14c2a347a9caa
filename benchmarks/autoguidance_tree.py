"""Autoguidance vs CFG on the `tree` preset with the shipped nets (issue 7; Karras et al. 2024, Fig. 1).

For class A, sweeps the guidance weight of CFG (ε_∅ + w(ε_A − ε_∅)) and of autoguidance
(ε_weak + w(ε_main − ε_weak), the shipped weak net), and reports precision (off-support rate, NLL
under the exact density) against coverage: the share of class A's outer-branch components (depth ≥ 5)
that receive at least one sample, each sample assigned to its most responsible component.

    .venv/bin/python benchmarks/autoguidance_tree.py [--n 4000] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import toydiff  # noqa: E402
from toydiff import exact  # noqa: E402
from toydiff.scene import Scene, run  # noqa: E402

WEIGHTS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def outer_components(mix, depth_min: int = 5) -> np.ndarray:
    """Indices of class A components on branches of depth ≥ depth_min (the tree is built breadth first)."""
    per_class = mix.k // 2
    branch = np.arange(per_class) // 8
    depth = np.floor(np.log2(branch + 1)).astype(int)
    return np.flatnonzero(depth >= depth_min)


def coverage(mix, x0: np.ndarray, comps: np.ndarray) -> float:
    """Share of the given components that are the most responsible one for at least one sample."""
    x0 = x0[np.all(np.isfinite(x0), -1)]
    table = exact.concept_table(mix)[0]  # class A's component log-weights
    # responsibilities r_k ∝ π_k m_Ak N(x; μ_k, Σ_k): the argmax of the logits
    logits, _, _ = exact._component_logits(mix, jnp.asarray(x0), 1.0)
    owner = np.asarray(jnp.argmax(logits + table, axis=-1))
    return float(np.isin(comps, owner).mean())


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=4000, help="samples per setting")
    parser.add_argument(
        "--score",
        default="learned",
        choices=("learned", "exact"),
        help="shipped nets (weak net as guide) or the exact mixture (δ-blurred guide)",
    )
    parser.add_argument(
        "--out", default="benchmarks/results", help="folder for the CSV, PNG and MD"
    )
    args = parser.parse_args()
    mix = toydiff.preset("tree")
    comps = outer_components(mix)
    rows = []
    for method in ("cfg", "autoguidance"):
        for w in WEIGHTS:
            scene = Scene.from_dict(
                {
                    "preset": "tree",
                    "positive": "A",
                    "negative": None,
                    "method": method,
                    "gamma": w,
                    "score": args.score,
                    "n": args.n,
                }
            )
            result, m = run(scene)
            rows.append(
                {
                    "method": method,
                    "w": w,
                    "off_support": m["off_support"],
                    "nll": m["nll"],
                    "coverage_outer": coverage(mix, np.asarray(result.x0), comps),
                    "energy": m["energy"],
                }
            )
            print(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()},
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"autoguidance_tree_{args.score}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for method in ("cfg", "autoguidance"):
        rs = [r for r in rows if r["method"] == method]
        for ax, key in zip(axes, ("off_support", "nll")):
            ax.plot([r[key] for r in rs], [r["coverage_outer"] for r in rs], "o-", label=method)
            for r in rs:
                ax.annotate(f"{r['w']:g}", (r[key], r["coverage_outer"]), fontsize=7)
    for ax, key in zip(
        axes, ("off-support rate (lower = more precise)", "NLL (lower = more precise)")
    ):
        ax.set(xlabel=key, ylabel="outer-branch coverage (higher = more diverse)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"tree, class A, {args.score} scores: guidance weight w annotated")
    fig.tight_layout()
    fig.savefig(out / f"autoguidance_tree_{args.score}.png")
    lines = [
        "| method | w | off-support | NLL | outer coverage | energy |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['method']} | {r['w']:g} | {r['off_support']:.4f} | {r['nll']:.2f} | "
        f"{r['coverage_outer']:.3f} | {r['energy']:.4f} |"
        for r in rows
    ]
    (out / f"autoguidance_tree_{args.score}.md").write_text(
        f"Command: `.venv/bin/python benchmarks/autoguidance_tree.py --score {args.score}`\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
