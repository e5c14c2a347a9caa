"""The CCFG paper's claim on three_blobs (negate "C"): at equal leakage, CCFG stays on the data.

Sweeps γ for nCFG and γ × τ for CCFG (DDIM 50 steps, 2000 points, seed 0), records hard/soft
leakage, off-support rate and energy distance to the ideal target p(x | ¬C), then checks: some CCFG
(γ, τ) leaks no more than nCFG at its smallest γ with hard leakage < 10 %, at ≤ 1/10 of its
off-support.
Writes benchmarks/results/claim.{csv,png,md}.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from toydiff import scene as scenes

RESULTS = Path(__file__).parent / "results"
FIELDS = (
    "method",
    "tau",
    "gamma",
    "leakage_hard",
    "leakage",
    "off_support",
    "energy",
    "energy_baseline",
    "diverged",
    "nll",
)


def sweep(score: str, ncfg_gammas, ccfg_gammas, taus, seed: int) -> list[dict]:
    """One metrics row per (method, τ, γ); the denoiser is built once (exit 2 if it fails)."""
    base = scenes.Scene.from_dict(
        dict(
            preset="three_blobs",
            negative="C",
            method="ncfg",
            steps=50,
            n=2000,
            seed=seed,
            score=score,
        )
    )
    try:
        den = scenes.denoiser(base, base.build_mixture())
    except Exception as e:  # noqa: BLE001 - any load failure is reported the same way
        print(
            f"error: cannot build the {score!r} denoiser: {type(e).__name__}: {e}", file=sys.stderr
        )
        raise SystemExit(2) from None
    settings = [("ncfg", float("nan"), g) for g in ncfg_gammas]
    settings += [("ccfg", t, g) for t in taus for g in ccfg_gammas]
    rows = []
    for method, tau, gamma in settings:
        sc = base.replace(
            method=method, gamma=float(gamma), **({} if method == "ncfg" else {"tau": tau})
        )
        _, m = scenes.run(sc, den)
        rows.append(
            {"method": method, "tau": tau, "gamma": float(gamma), **{k: m[k] for k in FIELDS[3:]}}
        )
    return rows


def verdict(rows: list[dict], max_leak: float = 0.10) -> tuple[bool, dict | None, dict | None]:
    """(holds, nCFG row at the smallest γ with hard leakage < max_leak, best CCFG match)."""
    ncfg = sorted((r for r in rows if r["method"] == "ncfg"), key=lambda r: r["gamma"])
    ref = next((r for r in ncfg if r["leakage_hard"] < max_leak), None)
    if ref is None:
        return False, None, None
    ok = [
        r
        for r in rows
        if r["method"] == "ccfg"
        and r["leakage_hard"] <= ref["leakage_hard"]
        and r["off_support"] <= ref["off_support"] / 10
    ]
    best = min(ok, key=lambda r: (r["off_support"], r["leakage_hard"], r["energy"]), default=None)
    return best is not None, ref, best


def plot(rows: list[dict], ref, best, n: int, path: Path, title: str):
    """Left: hard leakage vs off-support (one curve per rule/τ); right: both vs γ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    groups = [("ncfg", float("nan"))] + sorted(
        {("ccfg", r["tau"]) for r in rows if r["method"] == "ccfg"}
    )
    colors = plt.cm.viridis(np.linspace(0.15, 0.85, len(groups) - 1))
    for (method, tau), color in zip(groups, ["crimson", *colors], strict=True):
        g = sorted(
            (r for r in rows if r["method"] == method and (method == "ncfg" or r["tau"] == tau)),
            key=lambda r: r["gamma"],
        )
        label = "nCFG" if method == "ncfg" else f"CCFG τ={tau:g}"
        off, leak, gam = (
            np.array([r[k] for r in g]) for k in ("off_support", "leakage_hard", "gamma")
        )
        ax.plot(off, leak, "o-", color=color, ms=4, label=label)
        ax2.plot(gam, leak, "o-", color=color, ms=4, label=f"{label}: hard leakage")
        ax2.plot(gam, off, "x--", color=color, ms=4, alpha=0.7)
    for r, mark, name in ((ref, "*", "nCFG reference"), (best, "P", "CCFG match")):
        if r is not None:
            ax.plot(
                r["off_support"],
                r["leakage_hard"],
                mark,
                ms=16,
                mfc="none",
                mec="k",
                mew=1.5,
                zorder=5,
                label=f"{name}: γ={r['gamma']:.3g}"
                + ("" if r["method"] == "ncfg" else f", τ={r['tau']:g}"),
            )
    ax.axhline(0.10, color="gray", lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=1.0 / n)  # 0 off-support stays on the axis
    ax.set_xlim(0, 1.3)
    ax.set_xlabel("off-support rate (fraction of samples below the data's 0.1 % log p quantile)")
    ax.set_ylabel("hard leakage: fraction with p(C | x0) > 0.5")
    ax.set_title("trade-off (lower left is better)")
    ax.legend(fontsize=8, markerscale=0.6)
    ax2.set_xscale("log")
    ax2.set_xlabel("guidance scale γ")
    ax2.set_ylabel("rate")
    ax2.set_title("solid o: hard leakage, dashed x: off-support")
    ax2.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(r) -> str:
    """One setting with its metrics, for the verdict."""
    tau = "" if r["method"] == "ncfg" else f", τ = {r['tau']:g}"
    return (
        f"{r['method']} γ = {r['gamma']:.3g}{tau}: hard leakage {r['leakage_hard']:.1%}, soft "
        f"{r['leakage']:.1%}, off-support {r['off_support']:.2%}, energy {r['energy']:.4f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--score",
        choices=("exact", "learned"),
        default="exact",
        help="exact oracle or the learned checkpoint in pretrained/",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    args = parser.parse_args(argv)
    ncfg_gammas = np.geomspace(0.1, 5.0, 16)
    ccfg_gammas = np.geomspace(0.1, 20.0, 16)  # CCFG's repulsion is bounded: it needs larger γ
    rows = sweep(args.score, ncfg_gammas, ccfg_gammas, (0.1, 0.3, 1.0, 3.0), args.seed)
    holds, ref, best = verdict(rows)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.score == "exact" else f"_{args.score}"
    with open(out / f"claim{suffix}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    title = (
        f"three_blobs, negate C, {args.score} scores, DDIM 50 steps, 2000 points, seed {args.seed}"
    )
    plot(rows, ref, best, 2000, out / f"claim{suffix}.png", title)

    lines = [
        f"# CCFG claim ({title})",
        "",
        "Claim: some CCFG (γ, τ) reaches hard leakage no higher than nCFG at its smallest γ with "
        "hard leakage < 10 %, with off-support ≤ 1/10 of nCFG's.",
        "",
    ]
    lines.append(
        f"- nCFG reference: {fmt(ref)}" if ref else "- nCFG never reaches hard leakage < 10 %"
    )
    lines.append(f"- CCFG match: {fmt(best)}" if best else "- no CCFG setting qualifies")
    lines += [
        "",
        f"**Verdict: {'HOLDS' if holds else 'DOES NOT HOLD'}**",
        "",
        f"![trade-off](claim{suffix}.png)",
        "",
        f"All {len(rows)} settings: claim{suffix}.csv.",
    ]
    (out / f"claim{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:8]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
