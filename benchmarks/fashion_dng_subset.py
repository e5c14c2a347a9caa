"""DNG's knobs on a subset of the Fashion-MNIST class-removal protocol (10 DDIM steps, tracked DNG at
η = 1, removal = 1 − judged rate / 0.1), to choose the table's DNG sweep cheaply.

    python benchmarks/fashion_dng_subset.py CLASSES N STEPS '[{"gamma": 40, "prior": 0.1, ...}, ...]'

CLASSES a JSON list of removed classes, N samples per class (seed 0). One JSON line per setting: mean
and per-class removal, off-manifold share, and the tracked posterior p(n | x_t) averaged over the
samples at each step ("p_mean"). Runs on 1 torch thread; results in results/fashion_dng_subset.md.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from toydiff.bridge import digits, fashion


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    unet, judge = fashion.load_unet()[0], fashion.load_judge()[0]
    classes, n, steps = json.loads(argv[0]), int(argv[1]), int(argv[2])
    for knobs in json.loads(argv[3]):
        rule = knobs.pop("rule", "dng")
        t0 = time.time()
        neg = np.repeat(classes, n)
        x, info = digits.sample(unet, rule, knobs, len(neg), neg=neg, steps=steps, batch=500)
        labels, conf, _ = digits.judge_images(judge, x)
        rem = [
            1 - float((labels[i * n : (i + 1) * n] == c).mean()) / 0.1
            for i, c in enumerate(classes)
        ]
        extra = {"p_mean": np.round(info["p_neg"].mean(1), 3).tolist()} if "p_neg" in info else {}
        row = {
            "rule": rule,
            **knobs,
            "removal": round(float(np.mean(rem)), 3),
            "per": [round(r, 2) for r in rem],
            "off": round(float((conf < 0.5).mean()), 3),
            **extra,
            "s": round(time.time() - t0, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
