"""Learned vs exact scores on every preset (issue "Learned nets you can trust"): off-support and
hard leakage under the issue's rules, for the exact oracle and each kind of shipped net.

    python benchmarks/learned_vs_exact.py [--nets standard,everywhere] [--out benchmarks/results]

Writes learned_vs_exact.md (and .json): per preset and rule the exact value, each net's value and
its difference; the acceptance bounds are checked in the last columns.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from toydiff import mixtures
from toydiff.scene import Scene, run

RULES = {  # the rules (n = 2000, 50 DDIM steps, seed 3)
    "none": {},
    "ncfg": {"gamma": 2.0},
    "ccfg": {"gamma": 2.0, "tau": 1.0},
    "dng_oracle": {},
}
KEYS = ("off_support", "leakage_hard")
BOUND_EVERYWHERE = 0.03  # |learned − exact| of both metrics, every guided rule
STANDARD_FACTOR, STANDARD_SLACK = 1.5, 0.01  # unguided off-support ≤ 1.5 × exact + 0.01


def measure(preset: str, method: str, knobs: dict, score: str, net: str) -> dict[str, float]:
    scene = Scene.from_dict(
        dict(preset=preset, method=method, score=score, net=net, n=2000, steps=50, seed=3, **knobs)
    )
    _, m = run(scene)
    return {k: m[k] for k in KEYS}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="standard,everywhere")
    ap.add_argument("--presets", default=",".join(mixtures.PRESETS))
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    nets = args.nets.split(",")
    rows = []
    for preset in args.presets.split(","):
        for method, knobs in RULES.items():
            row = dict(
                preset=preset,
                method=method,
                exact=measure(preset, method, knobs, "exact", "standard"),
            )
            for net in nets:
                row[net] = measure(preset, method, knobs, "learned", net)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learned_vs_exact.json").write_text(json.dumps(rows, indent=1) + "\n")
    head = "| preset | rule | metric | exact | " + " | ".join(nets) + " | checks |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        for key in KEYS:
            e = row["exact"][key]
            checks = []
            if "everywhere" in row and row["method"] != "none":
                d = abs(row["everywhere"][key] - e)
                checks.append(f"everywhere Δ {d:.3f} {'ok' if d <= BOUND_EVERYWHERE else 'FAIL'}")
            if "standard" in row and row["method"] == "none" and key == "off_support":
                bound = STANDARD_FACTOR * e + STANDARD_SLACK
                ok = row["standard"][key] <= bound
                checks.append(f"standard ≤ {bound:.3f} {'ok' if ok else 'FAIL'}")
            vals = " | ".join(f"{row[n][key]:.3f}" for n in nets)
            lines.append(
                f"| {row['preset']} | {row['method']} | {key} | {e:.3f} | {vals} | {'; '.join(checks)} |"
            )
    (out / "learned_vs_exact.md").write_text(
        "# Learned vs exact (n = 2000, 50 DDIM steps, seed 3)\n\n"
        "`python benchmarks/learned_vs_exact.py`\n\n" + "\n".join(lines) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
