"""CFG vs autoguidance on the `tree` preset, class A (issue 7; Karras et al. 2024, Fig. 1).

Sweeps the guidance weight w of three rules on three main models:
  cfg           ε_∅ + w(ε_A − ε_∅), the main model's own ε_∅ (the app's CFG);
  cfg_weak      ε_∅^guide + w(ε_A − ε_∅^guide): the paper's toy CFG, whose unconditional model is
                small and short-trained;
  autoguidance  ε_A^guide + w(ε_A − ε_A^guide).
Main models: `learned` (the shipped net; guides: the shipped, small and short nets of Scene.weak),
`imperfect` (the exact mixture blurred by δ = 0.01, an analytic model that, like a net, spreads mass
between the thin branches; guide: blurred by δ = 0.02, the same error but stronger) and `exact` (the
oracle, nothing to correct; guide δ = 0.03). Reports precision (off-support rate, NLL) and how much of
class A the samples keep: outer-branch coverage (the share of the 96 branches of depth ≥ 5 owning an
on-support sample, MATH §4), component coverage (all 1016 components, and those of depth ≥ 5) and the
energy distance to p(x|A). Each autoguidance point is compared with the best point of each CFG
sweep (same main model) that is at least as precise, and the paper's claim is checked as a Pareto
statement (claim_holds): every guided CFG point is beaten by a guided autoguidance point at least as
precise that keeps more outer branches, and autoguidance gets more precise than CFG ever does.

    .venv/bin/python benchmarks/autoguidance_tree.py [--n 4000] [--seeds 2] [--out benchmarks/results]
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
from toydiff import denoisers, exact, metrics  # noqa: E402
from toydiff.scene import Scene, run  # noqa: E402

WEIGHTS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
BLUR = {"imperfect": (0.01, 0.02), "exact": (0.0, 0.03)}  # (main δ, guide δ) of the analytic models
SETTINGS = (  # (main model, rule, guide)
    ("learned", "cfg", None),
    *(
        ("learned", m, g)
        for g in ("shipped", "small", "short")
        for m in ("cfg_weak", "autoguidance")
    ),
    *((main, m, "blur") for main in BLUR for m in ("cfg", "cfg_weak", "autoguidance")),
)
CFGS = ("cfg", "cfg_weak")
COVERAGES = ("branches", "coverage", "coverage_outer")
OUTER_DEPTH = 5


def branch_depths(mix) -> tuple[np.ndarray, np.ndarray]:
    """(branch index, depth) of each class A component: the tree is built breadth first, 8
    components a branch, so branch b has depth ⌊log2(b + 1)⌋ (MATH §6)."""
    branch = np.arange(mix.k // 2) // 8
    return branch, np.floor(np.log2(branch + 1)).astype(int)


def outer_components(mix, depth_min: int = OUTER_DEPTH) -> np.ndarray:
    """Indices of class A components on branches of depth ≥ depth_min."""
    return np.flatnonzero(branch_depths(mix)[1] >= depth_min)


def owners(mix, x0: np.ndarray, threshold: float) -> np.ndarray:
    """The most responsible class A component of each finite on-support sample (log p(x) ≥ the
    preset's off-support threshold, MATH §4)."""
    x0 = x0[np.all(np.isfinite(x0), -1)]
    logits, _, _ = exact._component_logits(mix, jnp.asarray(x0), 1.0)  # (N, K) log N(x; μ_k, Σ_k)
    owner = np.asarray(jnp.argmax(logits + exact.concept_table(mix)[0], axis=-1))
    return owner[np.asarray(exact.log_prob(mix, x0)) >= threshold]


def coverage(owner: np.ndarray, comps: np.ndarray) -> float:
    """Share of the given components that own at least one sample."""
    return float(np.isin(comps, owner).mean())


def branch_coverage(mix, owner: np.ndarray, depth_min: int = OUTER_DEPTH) -> float:
    """Share of class A's branches of depth ≥ depth_min that own at least one sample (MATH §4)."""
    branch, depth = branch_depths(mix)
    return coverage(branch[owner], np.unique(branch[depth >= depth_min]))


def analytic_denoiser(mix, main: str):
    """The analytic main model and guide of BLUR, or None: the scene's own (learned nets)."""
    if main not in BLUR:
        return None
    return denoisers.combine(mix, *(denoisers.exact_model(d) for d in BLUR[main]))


def measure(mix, main, method, guide, w, n, seed, threshold) -> dict:
    """Metrics of one sampler run: off-support, NLL, energy and the three coverages."""
    scene = Scene.from_dict(
        dict(preset="tree", positive="A", negative=None, method=method, gamma=w, n=n, seed=seed)
        | dict(score="exact" if main in BLUR else "learned", weak=guide)
    )
    result, m = run(scene, analytic_denoiser(mix, main))
    owner = owners(mix, np.asarray(result.x0), threshold)
    return {
        "off_support": m["off_support"],
        "nll": m["nll"],
        "energy": m["energy"],
        "branches": branch_coverage(mix, owner),
        "coverage": coverage(owner, np.arange(mix.k // 2)),
        "coverage_outer": coverage(owner, outer_components(mix)),
    }


def sweep(mix, n: int, seeds: int) -> list[dict]:
    """One row per (setting, w): metrics averaged over seeds, plus the coverage spread over seeds."""
    threshold, rows = metrics.preset_threshold("tree"), []
    for main, method, guide in SETTINGS:
        for w in WEIGHTS:
            runs = [measure(mix, main, method, guide, w, n, s, threshold) for s in range(seeds)]
            row = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
            spread = max(np.ptp([r[k] for r in runs]) for k in COVERAGES)
            rows.append(dict(main=main, method=method, guide=guide or "—", w=w, **row))
            rows[-1]["spread"] = float(spread)
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()})
    return rows


def best_at_least_as_precise(cfg_rows: list[dict], off: float, key: str) -> float | None:
    """The most `key` any point of a CFG sweep keeps while being at least as precise (off-support
    ≤ off); None where no point of the sweep is that precise."""
    vals = [r[key] for r in cfg_rows if r["off_support"] <= off]
    return max(vals) if vals else None


def cfg_sweep(rows: list[dict], main: str, method: str, guide: str) -> list[dict]:
    """The rows of one sweep; for cfg, whichever guide (cfg does not use it)."""
    return [
        r
        for r in rows
        if r["main"] == main and r["method"] == method and (method == "cfg" or r["guide"] == guide)
    ]


def matched(rows: list[dict]) -> list[dict]:
    """Each autoguidance point (w > 1) beside the best of each CFG sweep at equal or better
    precision (MATH §4: the Pareto comparison of precision and kept branches)."""
    out = []
    for r in rows:
        if r["method"] != "autoguidance" or r["w"] == 1.0:
            continue
        pair = {k: r[k] for k in ("main", "guide", "w", "off_support", *COVERAGES)}
        for c in CFGS:
            sweep_c = cfg_sweep(rows, r["main"], c, r["guide"])
            pair |= {
                f"{c}_{k}": best_at_least_as_precise(sweep_c, r["off_support"], k)
                for k in COVERAGES
            }
        out.append(pair)
    return out


def claim_holds(rows: list[dict], main: str, guide: str, c: str) -> tuple[bool, str]:
    """The paper's claim against CFG sweep c, as a Pareto statement (MATH §4): every point of c
    (w > 1) is beaten, i.e. some autoguidance point (w > 1) at least as precise keeps more outer
    branches, and autoguidance's most precise point is more precise than any point of c.
    (holds, how many of c's points are beaten)."""
    guided = lambda rs: [r for r in rs if r["w"] > 1]
    ag, cfg = guided(cfg_sweep(rows, main, "autoguidance", guide)), cfg_sweep(rows, main, c, guide)
    beaten = [
        (b := best_at_least_as_precise(ag, r["off_support"], "branches")) is not None
        and b > r["branches"]
        for r in guided(cfg)
    ]
    sharper = min(r["off_support"] for r in ag) < min(r["off_support"] for r in cfg)
    return all(beaten) and sharper, f"{sum(beaten)} of {len(beaten)}"


def verdict(rows: list[dict], pairs: list[dict], main: str, guide: str) -> str:
    """One line per CFG: at how many autoguidance points CFG cannot be as precise, keeps fewer
    outer branches, or keeps more, and the most precise point of each sweep; then whether the
    claim holds (claim_holds)."""
    ps = [p for p in pairs if p["main"] == main and p["guide"] == guide]
    lines = []
    for c in CFGS:
        holds, beaten = claim_holds(rows, main, guide, c)
        best = [p[f"{c}_branches"] for p in ps]
        never = sum(b is None for b in best)
        fewer = sum(b is not None and p["branches"] > b for p, b in zip(ps, best))
        reach = "; ".join(
            f"{name} at its most precise: off-support {b['off_support']:.4f} (w = {b['w']:g}), "
            f"outer branches {b['branches']:.3f}"
            for name, b in (
                (n, min(cfg_sweep(rows, main, n, guide), key=lambda r: r["off_support"]))
                for n in ("autoguidance", c)
            )
        )
        lines.append(
            f"- {main} main, guide {guide}, vs {c}: of {len(ps)} autoguidance points (w > 1), "
            f"{c} is never as precise at {never}, keeps fewer outer branches at {fewer} and at "
            f"least as many at {len(ps) - never - fewer}. {reach}. {c} points (w > 1) beaten by "
            f"an autoguidance point at least as precise with more outer branches: {beaten}; "
            f"claim holds: {'yes' if holds else 'no'}"
        )
    return "\n".join(lines)


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def markdown(rows: list[dict], pairs: list[dict], args) -> str:
    """The result page: command, the sweep table, the matched-precision table and the verdicts."""
    lines = [
        f"Command: `.venv/bin/python benchmarks/autoguidance_tree.py --n {args.n} "
        f"--seeds {args.seeds}` (class A of `tree`, DDIM 50 steps; metrics averaged over "
        f"{args.seeds} seeds; coverages count on-support samples only; analytic models: main δ / "
        f"guide δ = {BLUR['imperfect']} (imperfect), {BLUR['exact']} (exact))",
        "",
        "| main | rule | guide | w | off-support | NLL | energy | outer branches | coverage | "
        "outer components | ± |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['main']} | {r['method']} | {r['guide']} | {r['w']:g} | {r['off_support']:.4f} | "
        f"{r['nll']:.2f} | {r['energy']:.4f} | {r['branches']:.3f} | {r['coverage']:.3f} | "
        f"{r['coverage_outer']:.3f} | {r['spread']:.3f} |"
        for r in rows
    ]
    lines += [
        "",
        "outer branches: share of class A's 96 branches of depth ≥ 5 owning an on-support sample; "
        "coverage: share of its 1016 components; outer components: of its 768 components of depth "
        "≥ 5; ± : largest seed-to-seed difference of the three.",
        "",
        "At equal precision: the most each CFG sweep keeps at an off-support rate no higher than "
        "autoguidance's (any w; — : no point of that sweep is as precise):",
        "",
        "| main | guide | w | off-support | outer branches AG / CFG / CFG weak ∅ | "
        "coverage AG / CFG / CFG weak ∅ |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['main']} | {p['guide']} | {p['w']:g} | {p['off_support']:.4f} | "
        f"{p['branches']:.3f} / {_fmt(p['cfg_branches'])} / {_fmt(p['cfg_weak_branches'])} | "
        f"{p['coverage']:.3f} / {_fmt(p['cfg_coverage'])} / {_fmt(p['cfg_weak_coverage'])} |"
        for p in pairs
    ]
    guides = dict.fromkeys((p["main"], p["guide"]) for p in pairs)
    return "\n".join(lines + ["", *(verdict(rows, pairs, *g) for g in guides)]) + "\n"


def plot(rows: list[dict], path: Path):
    """Outer-branch coverage against off-support rate, a panel per main model, w annotated."""
    mains = list(dict.fromkeys(r["main"] for r in rows))
    fig, axes = plt.subplots(1, len(mains), figsize=(5.5 * len(mains), 4.4), dpi=120)
    for ax, main in zip(axes, mains):
        curves = dict.fromkeys((r["method"], r["guide"]) for r in rows if r["main"] == main)
        for method, guide in curves:
            rs = cfg_sweep(rows, main, method, guide)
            label = method if method == "cfg" else f"{method} ({guide})"
            ax.plot([r["off_support"] for r in rs], [r["branches"] for r in rs], "o-", label=label)
            for r in rs:
                ax.annotate(f"{r['w']:g}", (r["off_support"], r["branches"]), fontsize=7)
        ax.set(
            title=f"{main} main model",
            xlabel="off-support rate (lower = more precise)",
            ylabel="outer branches kept (higher = more variation)",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("tree, class A: guidance weight w annotated")
    fig.tight_layout()
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=4000, help="samples per run")
    parser.add_argument("--seeds", type=int, default=2, help="runs per setting, averaged")
    parser.add_argument("--out", default="benchmarks/results", help="folder for CSV, PNG and MD")
    args = parser.parse_args()
    mix = toydiff.preset("tree")
    rows = sweep(mix, args.n, args.seeds)
    pairs = matched(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "autoguidance_tree.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "autoguidance_tree.png")
    text = markdown(rows, pairs, args)
    (out / "autoguidance_tree.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
