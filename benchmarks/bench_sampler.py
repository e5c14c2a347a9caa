"""Sampler throughput: JAX lax.scan sampler vs this machine's JAX matmul peak and vs PyTorch eager.

One run, interleaved repeats, medians. Net: random-weight 3×128 MLP, preset three_blobs, rule ncfg
with a positive concept (3 branches), DDIM η = 0, 2000 points × 50 steps.
Writes benchmarks/results/sampler.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

from toydiff import denoisers, mixtures, nets, sampler, schedule

RESULTS = Path(__file__).parent / "results"


def timed(fn) -> float:
    """Seconds of one call of fn (fn must block until its result is ready)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------- JAX
def make_matmul(size: int):
    """A zero-arg function running one jitted size² f32 matmul; its FLOPs = 2·size³."""
    a, b = (
        jax.random.normal(k, (size, size), jnp.float32) for k in jax.random.split(jax.random.key(0))
    )
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    return lambda: mm(a, b).block_until_ready()


def make_jax_sampler(params, net_cfg, cfg, cond, knobs):
    """A zero-arg function running toydiff.sampler.sample once, and its Result (for checks)."""
    den = denoisers.learned(mixtures.preset("three_blobs"), params, net_cfg)
    key = jax.random.key(0)
    result = sampler.sample(cfg, den, key, cond, knobs)
    jax.block_until_ready(result)
    return (lambda: jax.block_until_ready(sampler.sample(cfg, den, key, cond, knobs))), result


# -------------------------------------------------------------------------------------- torch
def torch_sampler(params, net_cfg, cfg, cond, gamma, x_T, n_concepts):
    """Closure running the same net, DDIM(η=0) and nCFG (with positive) in PyTorch eager -> x0."""
    p = jax.tree_util.tree_map(lambda a: torch.from_numpy(np.array(a, np.float32)), params)
    layers = [(l["w"], l["b"]) for l in p["hidden"]]
    ts, ab_t, ab_next = schedule.step_alpha_bars(cfg.schedule, cfg.steps)
    freqs = torch.exp(torch.linspace(0.0, float(np.log(schedule.T / 2.0)), net_cfg.freqs))
    # branch order as in the sampler: uncond (null = C), neg, pos
    emb = p["concept"][[n_concepts, cond.neg, cond.pos]][:, None, :]  # (3, 1, H)
    x_T = torch.from_numpy(np.array(x_T, np.float32))  # a writable copy

    def eps_branches(x, t, ab):
        x_in = x / np.sqrt(ab * net_cfg.data_std**2 + 1 - ab)
        angle = torch.tensor(float(t), dtype=torch.float32) / schedule.T * freqs
        temb = torch.cat([torch.sin(angle), torch.cos(angle)]) @ p["t"]["w"] + p["t"]["b"]
        h = torch.nn.functional.silu(
            (x_in @ p["x"]["w"] + p["x"]["b"] + temb)[None] + emb
        )  # (3,N,H)
        for w, b in layers:
            h = torch.nn.functional.silu(h @ w + b)
        return h @ p["out"]["w"] + p["out"]["b"]  # (3, N, 2)

    @torch.no_grad()
    def run():
        x = x_T.clone()
        for t, ab, ab_n in zip(
            ts, ab_t.astype(np.float64), ab_next.astype(np.float64), strict=True
        ):
            eps_u, eps_n, eps_p = eps_branches(x, t, ab)
            eps = eps_u + gamma * (eps_p - eps_u) - gamma * (eps_n - eps_u)  # nCFG, MATH §3
            x0_hat = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
            x = np.sqrt(ab_n) * x0_hat + np.sqrt(max(1 - ab_n, 0.0)) * eps  # DDIM η = 0
        return x

    return run


# ------------------------------------------------------------------------------------- report
def table(rows: list[tuple[str, str, str]]) -> str:
    """A markdown table of (quantity, value, note) rows."""
    lines = ["| quantity | value | note |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--repeats", type=int, default=15, help="interleaved repeats (medians reported)"
    )
    parser.add_argument("--n", type=int, default=2000, help="points")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--matmul", type=int, default=2048, help="matmul size for the peak")
    parser.add_argument("--out", default=str(RESULTS / "sampler.md"), help="markdown output")
    args = parser.parse_args(argv)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)

    net_cfg = nets.NetConfig(n_concepts=3)
    params = nets.init(jax.random.key(0), net_cfg)
    cfg = sampler.SamplerConfig(rule="ncfg", steps=args.steps, n=args.n, has_pos=True)
    cond, gamma = sampler.Cond(pos=0, neg=2), 3.0
    knobs = sampler.default_knobs("ncfg", gamma=gamma)
    assert cfg.branches == ("uncond", "neg", "pos"), cfg.branches

    matmul = make_matmul(args.matmul)
    jax_run, result = make_jax_sampler(params, net_cfg, cfg, cond, knobs)
    torch_run = torch_sampler(params, net_cfg, cfg, cond, gamma, result.traj[0], net_cfg.n_concepts)
    x_torch = torch_run().numpy()
    x_jax = np.asarray(result.x0)
    diff = float(np.max(np.abs(x_torch - x_jax)))
    scale = float(np.max(np.abs(x_jax)))

    times = {"matmul": [], "jax": [], "torch": []}
    for _ in range(args.repeats):  # interleaved: machine noise hits all three alike
        times["matmul"].append(timed(matmul))
        times["jax"].append(timed(jax_run))
        times["torch"].append(timed(torch_run))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}  # shown beside the medians: this machine is shared

    branches = len(cfg.branches)
    flops = nets.flops_per_eval(net_cfg) * args.n * args.steps * branches
    flops_mm = 2 * args.matmul**3
    peak = flops_mm / med["matmul"] / 1e9
    gflops = flops / med["jax"] / 1e9
    frac, speedup = gflops / peak, med["torch"] / med["jax"]
    frac_best = best["matmul"] / flops_mm * flops / best["jax"]
    ok = lambda good: "PASS" if good else "FAIL"
    agree = diff <= 1e-3 * max(scale, 1.0)
    rows = [
        (
            "matmul peak (JAX)",
            f"{peak:.0f} GFLOP/s",
            f"{args.matmul}² f32, 2·n³ FLOPs / median time; "
            f"best run {flops_mm / best['matmul'] / 1e9:.0f}",
        ),
        (
            "JAX sampler",
            f"{med['jax'] * 1e3:.1f} ms",
            f"{args.n} pts × {args.steps} steps × {branches} branches; "
            f"best {best['jax'] * 1e3:.1f} ms",
        ),
        (
            "JAX sampler",
            f"{gflops:.0f} GFLOP/s",
            f"{nets.flops_per_eval(net_cfg)} FLOP/eval (matmuls only) × pts × steps × branches"
            f" = {flops / 1e9:.2f} GFLOP",
        ),
        ("JAX / peak", f"{frac:.2f}", f"goal ≥ 0.5: {ok(frac >= 0.5)}; best runs {frac_best:.2f}"),
        (
            "PyTorch eager",
            f"{med['torch'] * 1e3:.1f} ms",
            f"same weights, torch {torch.__version__}, {threads} threads; "
            f"best {best['torch'] * 1e3:.1f} ms",
        ),
        (
            "torch / JAX time",
            f"{speedup:.2f}",
            f"goal ≥ 1.5: {ok(speedup >= 1.5)}; best runs {best['torch'] / best['jax']:.2f}",
        ),
        ("max abs diff x0", f"{diff:.1e}", f"max abs x0 {scale:.2f}: {ok(agree)}"),
    ]
    md = table(rows)
    load = os.getloadavg()[0]
    header = (
        f"# Sampler benchmark\n\njax {jax.__version__}, {threads} CPU threads, "
        f"{args.repeats} interleaved "
        f"repeats, medians; 1-min load average at the end {load:.1f}.\n\n"
    )
    print(md)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + md + "\n")
    print(
        f"\nJAX/peak ≥ 0.5: {ok(frac >= 0.5)}   torch/JAX ≥ 1.5: {ok(speedup >= 1.5)}   "
        f"agree: {ok(agree)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
