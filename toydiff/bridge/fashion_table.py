"""The Fashion-MNIST class-removal table: `table.run` with `fashion.FASHION`, reported separately for the
look-alike classes (T-shirt/top, pullover, coat, shirt) and the others, as the CCFG paper's class pairs
with strong visual proximity ask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import fashion, table

# γ sweeps per rule on the 28×28 model; sd_negative at γ is nCFG at γ − 1 (the positive is the null class).
# τ for CCFG: ‖Δ_n‖² (a sum over 784 pixels) was 1–10 (10th–90th percentile, median 2–4) along the 10-step
# DDIM path of a pilot run, so λ⁻ = 2σ(−τ‖Δ_n‖²) spans 0.95–0.54 at τ = 0.1 and 0.76–0.01 at τ = 0.5.
DEFAULT_GRID = {
    "ncfg": [{"gamma": g} for g in (0.5, 1.0, 2.0)],
    "sd_negative": [{"gamma": 3.0}],
    "ccfg": [{"gamma": g, "tau": 0.1} for g in (1.0, 2.0)]
    + [{"gamma": g, "tau": 0.5} for g in (1.0, 2.0, 4.0)],
    # Temp = 1 (Bayes' rule) collapses the tracked p to ≈ 0 after the first of 10 steps (mean p 0.1 ->
    # 0.001 -> 0 at γ = 40): the guided step itself moves x away from μ_n and is counted as evidence, so DNG
    # pushes once. Temp = 0.2 (the official value) keeps p at 0.02-0.001 for the whole path
    # (benchmarks/results/fashion_dng_subset.md): 98.5 % mean removal at γ = 40 in the table.
    "dng": [
        {"gamma": g, "prior": 0.1, "temp": t, "offset": 0.0, "p_max": 0.8}
        for t, gammas in ((1.0, (10.0, 20.0, 40.0)), (0.2, (20.0, 40.0, 80.0)))
        for g in gammas
    ],
}
GROUPS = (
    ("look-alike (T-shirt/top, Pullover, Coat, Shirt)", fashion.LOOK_ALIKE),
    ("others (Trouser, Dress, Sandal, Sneaker, Bag, Ankle boot)", fashion.OTHERS),
)
# key, label, better direction
QUALITY = (
    ("kl", "KL to ideal histogram", -1),
    ("fd", "Fréchet distance (judge features)", -1),
    ("precision", "precision (5-NN)", 1),
    ("recall", "recall (5-NN)", 1),
    ("off", "off-manifold share", -1),
)
TARGETS = (0.9, 0.95)


def _row(r: dict) -> str:
    """One markdown row of a result (means over its classes)."""
    mark = " †" if r.get("partial_run") else ""
    return (
        f"| {r['rule']}{mark} | {table._knobs(r['knobs']) or '—'} | {100 * r['removal']:.1f} % "
        f"({100 * r['worst_removal']:.1f} %) | {r['kl']:.3f} | {r['pile']:.2f} | {r['fd']:.2f} | "
        f"{r['precision']:.3f} | {r['recall']:.3f} | {r['off']:.3f} |"
    )


HEAD = [
    "| rule | knobs | removal (worst) | KL | pile | FD | precision | recall | off |",
    "|---|---|---|---|---|---|---|---|---|",
]


def matched_lines(res: list[dict]) -> list[str]:
    """Markdown rows: every series at each matched removal target."""
    lines = ["| removal | rule | KL | pile | FD | precision | recall | off |", "|---" * 8 + "|"]
    for target in TARGETS:
        for name in table.all_series(res):
            m = table.matched(res, name, target)
            cells = (
                " | ".join(
                    f"{m[k]:.3f}" if k != "fd" else f"{m[k]:.2f}"
                    for k in ("kl", "pile", "fd", "precision", "recall", "off")
                )
                if m
                else "not reached | | | | |"
            )
            lines.append(f"| {100 * target:.0f} % | {name} | {cells} |")
    return lines


def verdicts(res: list[dict], group_name: str) -> list[str]:
    """Notes: each CCFG series against nCFG at matched removal, metric by metric, better or not."""
    out = []
    for target in (0.95, 0.9):
        n = table.matched(res, "ncfg", target)
        for name in (x for x in table.all_series(res) if x.startswith("ccfg")):
            c = table.matched(res, name, target)
            if not (c and n):
                out.append(f"- {group_name}, {100 * target:.0f} %: {name} or ncfg misses it.")
                continue
            parts = [
                f"{key} {c[key]:.3f} vs {n[key]:.3f} ({'better' if sign * (c[key] - n[key]) > 0 else 'NOT better'})"
                for key, _, sign in QUALITY
            ]
            wins = sum(sign * (c[k] - n[k]) > 0 for k, _, sign in QUALITY[:4])
            out.append(
                f"- {group_name}, {100 * target:.0f} % removal, {name} vs nCFG: "
                + "; ".join(parts)
                + f" — better on {wins} of 4 (KL, FD, precision, recall)."
            )
    return out


def markdown(record: dict, command: str, notes: str = "") -> str:
    """The Fashion-MNIST table as markdown, with the command that made it on top."""
    res, names = record["results"], record["class_names"]
    base = res[0]
    lines = [
        f"Command: `{command}`",
        "",
        "# Fashion-MNIST class removal: every negative rule through `toydiff.bridge.loop`",
        "",
        f"Removed classes: {record['classes']}, {record['n_per_class']} samples per class and setting (the same "
        f"initial noise for every rule), DDIM η=0 (tracked DNG: η=1), {record['steps']} steps, unguided "
        f"= null class (ε_p = ε_∅). Judge: small CNN, held-out accuracy "
        f"{record['judge_test_accuracy']:.4f}. Reference: {record['reference']}. Wall time "
        f"{record['wall_time_s']:.0f} s on {record['threads']} thread(s).",
        *(
            [
                "",
                "Rows marked † come from a later partial run (same classes, n, steps, seed and so the same "
                "initial noise; its unguided row matched this table's): "
                + "; ".join(
                    f"`{p['command']}` ({p['wall_time_s']:.0f} s on {p['threads']} thread(s))"
                    for p in record["partial_runs"]
                )
                + ". They are not in the Command's run.",
            ]
            if record.get("partial_runs")
            else []
        ),
        "",
        "Columns (means over the removed classes): **removal** = 1 − rate / data rate (worst class in "
        "brackets); **KL** = KL(remaining 9-class judged histogram ‖ data's); **pile** = largest "
        "(share / ideal share) among the remaining classes; **FD** = Fréchet distance of judge features "
        "to the real images of the other 9 classes; **precision / recall** = 5-NN balls in judge "
        f"feature space against {record['n_per_class']} real images of the other classes; **off** = "
        "judge max-softmax < 0.5.",
        "",
        "## All classes",
        "",
        *HEAD,
        *map(_row, res),
        "",
        f"Unguided: judged histogram {np.round(base['hist'], 3).tolist()}, TV vs data "
        f"{base['tv_vs_data']:.3f}, FD to all real images {base['fd_all']:.2f}.",
    ]
    for title, classes in GROUPS:
        sub = table.group(res, classes)
        lines += ["", f"## {title}", "", *HEAD, *map(_row, sub), ""]
        lines += [f"At matched removal ({title}; linear interpolation along γ):", ""]
        lines += matched_lines(sub)
    lines += ["", "## Removal per class (%) at each series' strongest setting", ""]
    lines += ["| series | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name in table.all_series(res):
        r = [x for x in res if x["rule"] != "none" and table.series(x) == name][-1]
        cells = " | ".join(f"{100 * p['removal']:.0f}" for p in r["per_class"])
        lines.append(f"| {name} ({table._knobs(r['knobs'])}) | {cells} |")
    if notes:
        lines += ["", "## Notes", "", notes]
    return "\n".join(lines) + "\n"


def auto_notes(record: dict) -> str:
    """Notes computed from the results: CCFG vs nCFG at matched removal per group, best removals."""
    res = record["results"]
    out = []
    for title, classes in GROUPS:
        out += verdicts(table.group(res, classes), title.split(" (")[0])
    best = {
        name: max(r["removal"] for r in res if r["rule"] != "none" and table.series(r) == name)
        for name in table.all_series(res)
    }
    out.append(
        "- Best mean removal per series: "
        + ", ".join(f"{k} {100 * v:.1f} %" for k, v in best.items())
        + "."
    )
    n = record["n_per_class"]
    out.append(
        f"- Noise floor: one removed class has {n} samples (KL bias ≈ 8/(2·{n}) = {4 / n:.3f}); a "
        "group mean is over 4 or 6 classes, so KL differences below ≈ 0.01 and precision/recall "
        "differences below ≈ 0.02 are not resolved."
    )
    return "\n".join(out)


def tradeoff(record: dict):
    """Figure: removal against each quality measure (columns), look-alike and other classes (rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(GROUPS), len(QUALITY), figsize=(4 * len(QUALITY), 3.6 * 2))
    for row, (title, classes) in zip(axes, GROUPS):
        sub = table.group(record["results"], classes)
        for ax, (key, label, sign) in zip(row, QUALITY):
            table.tradeoff_axes(
                ax, sub, key, f"{label} ({'lower' if sign < 0 else 'higher'} is better)", False
            )
            ax.set_title(title.split(" (")[0], fontsize=10)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        f"Fashion-MNIST class removal, {record['n_per_class']}/class, DDIM {record['steps']} steps"
    )
    fig.tight_layout()
    return fig


def write(record: dict, out, command: str, notes: str = "") -> list[Path]:
    """Writes fashion_table.md, fashion_table.json and fashion_tradeoff.png into out; returns the paths."""
    return table.write_report(
        record, out, command, notes, markdown, auto_notes, tradeoff, "tradeoff"
    )
