"""Where the Fashion-MNIST UNet's unguided (null-class) judged histogram misses the issue's TV ≤ 0.1:
the sampler's steps, DDIM η, timestep spacing and x̂0 clipping, at a fixed sample size and seed.

    python benchmarks/fashion_unguided.py '[{"n": 500, "steps": 10, "eta": 0.0}, ...]' \
        [--unet pretrained/fashion_unet] [--threads 1]

Each setting: n null-class samples from the same initial noise (seed 0), judged by the shipped judge;
one JSON line per setting with the judged histogram, its TV to the data's class rates and the
off-manifold share (judge max-softmax < 0.5). Settings keys: n, steps, eta, spacing ('leading', the
bridge's, or 'trailing'), clip (DDIMScheduler clip_sample). The numbers are in
results/fashion_unguided.md. --unet: another UNet checkpoint stem (default the shipped one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from toydiff.bridge import digits, fashion, loop


def scheduler(spacing: str = "leading", clip: bool = False, steps: int = 10):
    """The bridge's DDIM (digits.SCHEDULER_CONFIG) with another spacing or x̂0 clipping."""
    from diffusers import DDIMScheduler

    s = DDIMScheduler(**dict(digits.SCHEDULER_CONFIG, timestep_spacing=spacing, clip_sample=clip))
    s.set_timesteps(steps)
    return s


def unguided(unet, n, steps, eta, spacing="leading", clip=False, seed=0, batch=500):
    """n null-class samples (rule 'none' through bridge.loop), clamped to [−1, 1]."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, 1, 28, 28), generator=g)
    out = []
    for i in range(0, n, batch):
        s = scheduler(spacing, clip, steps)
        fn = digits.eps_fn(unet, digits.NULL, None)
        kw = {"generator": g, "eta": eta}
        res = loop.sample(fn, s, noise[i : i + batch], s.timesteps, "none", {}, step_kwargs=kw)
        out.append(res.latents.clamp(-1, 1))
    return torch.cat(out)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", help="a JSON list of settings (keys of `unguided`)")
    ap.add_argument("--unet", default=fashion.UNET_STEM, help="UNet checkpoint stem")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    unet, judge = fashion.load_unet(args.unet)[0], fashion.load_judge()[0]
    rates = digits.class_rates(fashion.load("all")[1])
    for setting in json.loads(args.settings):
        t0 = time.time()
        x = unguided(unet, **setting)
        labels, conf, _ = digits.judge_images(judge, x)
        hist = digits.class_rates(labels)
        row = {
            **setting,
            "tv": round(digits.tv(hist, rates), 4),
            "off": round(float((conf < 0.5).mean()), 3),
            "hist": np.round(hist, 3).tolist(),
            "s": round(time.time() - t0, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
