"""Training throughput: toydiff.train (jit + lax.scan chunks) vs a PyTorch-eager loop, same run.

Same net (the main 3×128 MLP with input Fourier features), batch 512, fresh exact samples, AdamW +
global-norm clip + warm-up cosine schedule + parameter EMA. Repeats are interleaved (the machine is
shared and noisy) and the median steps/s is reported. Usage: python benchmarks/bench_train.py
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
import torch

from toydiff import mixtures, schedule, train

PRESET, REPEATS, JAX_STEPS, TORCH_STEPS = "three_blobs", 5, 1000, 300


class TorchNet(torch.nn.Module):
    """toydiff.nets.apply in torch: scaled input + Fourier features, time and concept embeddings."""

    def __init__(self, c):
        super().__init__()
        self.c, h = c, c.hidden
        self.x = torch.nn.Linear(2 + 4 * c.x_freqs, h)
        self.t = torch.nn.Linear(2 * c.freqs, h)
        self.concept = torch.nn.Embedding(c.n_concepts + 1, h)
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(h, h) for _ in range(c.depth - 1))
        self.out = torch.nn.Linear(h, 2)
        self.register_buffer("tf", torch.exp(torch.linspace(0, math.log(schedule.T / 2), c.freqs)))
        self.register_buffer("xf", torch.exp(torch.linspace(0, math.log(c.x_freq_max), c.x_freqs)))

    def forward(self, x, t, ab, concept):
        c = self.c
        x_in = x / torch.sqrt(ab * c.data_std**2 + 1 - ab)[:, None]
        angle = (x_in[:, :, None] * self.xf).flatten(1)
        feats = torch.cat([x_in, torch.sin(angle), torch.cos(angle)], -1)
        ta = t[:, None] / schedule.T * self.tf
        h = (
            self.x(feats)
            + self.t(torch.cat([torch.sin(ta), torch.cos(ta)], -1))
            + self.concept(concept)
        )
        h = torch.nn.functional.silu(h)
        for layer in self.hidden:
            h = torch.nn.functional.silu(layer(h))
        c_out = torch.sqrt((1 - ab) / (1 - ab + c.min_std**2))[:, None]
        return c_out * self.out(h)


def torch_trainer(mix, net_config, config):
    """A closure running n steps of the eager torch loop."""
    torch.manual_seed(0)
    net = TorchNet(net_config)
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warm = lambda s: (
        s / config.warmup
        if s < config.warmup
        else 0.01
        + 0.99
        * 0.5
        * (1 + math.cos(math.pi * (s - config.warmup) / (config.steps - config.warmup)))
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warm)
    table = torch.softmax(torch.tensor(np.array(train.exact.concept_table(mix))), -1)  # (C+1, K)
    means, chol = (
        torch.as_tensor(np.asarray(mix.means)),
        torch.linalg.cholesky(torch.as_tensor(mix.covs)),
    )
    ab_all, b, n_c = torch.as_tensor(schedule.alpha_bars()), config.batch, len(mix.concepts)

    def run(n):
        for _ in range(n):
            concept = torch.where(torch.rand(b) < config.p_uncond, n_c, torch.randint(0, n_c, (b,)))
            k = torch.multinomial(table[concept], 1)[:, 0]
            x0 = means[k] + torch.einsum("nij,nj->ni", chol[k], torch.randn(b, 2))
            t = torch.randint(0, schedule.T, (b,))
            ab, eps = ab_all[t], torch.randn(b, 2)
            x_t = ab.sqrt()[:, None] * x0 + (1 - ab).sqrt()[:, None] * eps
            loss = torch.mean((net(x_t, t.float(), ab, concept) - eps) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.clip)
            opt.step()
            sched.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, list(net.parameters()), 1 - config.ema_decay)
        return loss.item()

    return run


def torch_threads(run) -> int:
    """The faster torch thread count (2 threads collapse when the shared machine is oversubscribed)."""
    rates = {}
    for n in (1, os.cpu_count() or 2):
        torch.set_num_threads(n)
        rates[n] = rate(run, 30)
    best = max(rates, key=rates.get)
    torch.set_num_threads(best)
    return best


def jax_trainer(mix, net_config, config):
    """A closure running n steps of toydiff.train's scan chunks."""
    data, key = train.make_data(mix), jax.random.key(1)
    state = [train.init_state(jax.random.key(0), net_config, config)]

    def run(n):
        state[0], loss = train.train_chunk(state[0], data, key, net_config, config, n)
        return float(loss)  # blocks until done

    return run


def rate(run, n) -> float:
    """Steps per second of one timed call."""
    start = time.perf_counter()
    run(n)
    return n / (time.perf_counter() - start)


def main() -> str:
    mix = mixtures.preset(PRESET)
    net_config, config = train.default_net_config(mix), train.TrainConfig()
    runs = {
        "JAX (jit + lax.scan, optax)": (jax_trainer(mix, net_config, config), JAX_STEPS),
        "PyTorch eager (AdamW + clip)": (torch_trainer(mix, net_config, config), TORCH_STEPS),
    }
    for run, n in runs.values():
        run(n)  # warm-up: compile, allocator
    threads = torch_threads(runs["PyTorch eager (AdamW + clip)"][0])
    rates = {name: [] for name in runs}
    for _ in range(REPEATS):  # interleaved, so load changes hit both alike
        for name, (run, n) in runs.items():
            rates[name].append(rate(run, n))
    med = {name: statistics.median(r) for name, r in rates.items()}
    base = med["PyTorch eager (AdamW + clip)"]
    lines = [
        f"Training throughput, preset {PRESET}, net {net_config.depth}×{net_config.hidden} "
        f"(x_freqs={net_config.x_freqs}), batch {config.batch}, median of {REPEATS} interleaved repeats, "
        f"{os.cpu_count()} CPU cores (torch: {threads} thread(s), its faster setting here), "
        f"load average {os.getloadavg()[0]:.1f}.",
        "",
        "| implementation | steps/s (median) | min–max | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rates.items():
        lines.append(
            f"| {name} | {med[name]:.0f} | {min(r):.0f}–{max(r):.0f} | {med[name] / base:.2f}× |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__).parse_args()
    table = main()
    print(table)
    out = Path(__file__).parent / "results" / "train.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("# Training throughput\n\n" + table)
    sys.exit(0)
