"""Sampler time of this checkout against another commit, side by side in one run (issue "Open
seams" acceptance): a git worktree of the commit and this checkout, run alternately in fresh
processes, each timing the jitted sampler (ncfg with a positive concept: 3 branches, 2000 points x
50 DDIM steps, exact scores and the shipped learned net; median of 7 after a warm-up call).

    .venv/bin/python benchmarks/ab_sampler.py --against 7254637 [--rounds 3]

Writes results/sampler_vs_<commit>.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import sys, time, statistics
sys.path.insert(0, sys.argv[1])
import jax
from toydiff import sampler
from toydiff.scene import Scene, denoiser
for score in ("exact", "learned"):
    s = Scene.from_dict({"preset": "three_blobs", "method": "ncfg", "positive": "A",
                         "negative": "C", "score": score})
    mix = s.build_mixture(); den = denoiser(s, mix)
    cfg, cond, kn = s.sampler_config(), s.cond(mix), s.knobs()
    sampler.sample(cfg, den, jax.random.key(0), cond, kn).x0.block_until_ready()
    ts = []
    for i in range(7):
        t = time.perf_counter()
        sampler.sample(cfg, den, jax.random.key(i), cond, kn).x0.block_until_ready()
        ts.append(time.perf_counter() - t)
    print(score, statistics.median(ts))
"""


def probe(root: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True, check=True
    ).stdout
    return {k: float(v) for k, v in (line.split() for line in out.splitlines())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--against", required=True, help="the commit to compare with")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-f", str(old), args.against],
            check=True,
            capture_output=True,
        )
        try:
            runs = {"old": [], "new": []}
            for _ in range(args.rounds):
                runs["old"].append(probe(old))
                runs["new"].append(probe(ROOT))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                check=False,
                capture_output=True,
            )
    med = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()
    }
    lines = [
        f"# Sampler: this checkout against {args.against}",
        "",
        f"`.venv/bin/python benchmarks/ab_sampler.py --against {args.against} --rounds "
        f"{args.rounds}` ({time.strftime('%Y-%m-%d %H:%M')}): ncfg with a positive concept "
        "(3 branches), 2000 points × 50 DDIM steps, median of 7 timed calls per process, "
        "processes alternating old / new; the median over rounds.",
        "",
        "| score | old | new | new / old |",
        "|---|---:|---:|---:|",
        *(
            f"| {k} | {med['old'][k] * 1e3:.1f} ms | {med['new'][k] * 1e3:.1f} ms | "
            f"{med['new'][k] / med['old'][k]:.2f} |"
            for k in med["old"]
        ),
    ]
    out = ROOT / "benchmarks" / "results" / f"sampler_vs_{args.against}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
