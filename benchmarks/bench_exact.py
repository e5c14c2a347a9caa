"""Exact-score sampler: toydiff (JAX, jitted lax.scan) vs a straightforward numpy ε*, preset "tree".

4096 points × 50 DDIM steps, no guidance. The numpy reference forms (x − √ᾱμ_k) for every
component, its quadratic forms and a scipy logsumexp; it is timed on fewer steps and scaled per step
(said in the output). One run, interleaved repeats, medians. Writes benchmarks/results/exact.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import numpy as np
from scipy.special import logsumexp

from toydiff import denoisers, mixtures, sampler, schedule

RESULTS = Path(__file__).parent / "results"


def numpy_eps(means, covs, logw, x, ab) -> np.ndarray:
    """(N, 2) ε* = √(1−ᾱ) Σ_k r_k S_k⁻¹(x − √ᾱμ_k), r = softmax_k(log π_k + log N_k), MATH §2."""
    s = ab * covs + (1 - ab) * np.eye(2, dtype=covs.dtype)  # (K, 2, 2)
    prec = np.linalg.inv(s)
    logdet = np.linalg.slogdet(s)[1]  # (K,)
    d0 = x[:, :1] - np.sqrt(ab) * means[:, 0]  # (N, K) x − √ᾱμ_k, per coordinate
    d1 = x[:, 1:] - np.sqrt(ab) * means[:, 1]
    pd0 = prec[:, 0, 0] * d0 + prec[:, 0, 1] * d1  # (N, K) S_k⁻¹(x − √ᾱμ_k)
    pd1 = prec[:, 1, 0] * d0 + prec[:, 1, 1] * d1
    logits = logw - 0.5 * (d0 * pd0 + d1 * pd1) - 0.5 * logdet - np.log(2 * np.pi)  # (N, K)
    r = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    return np.sqrt(1 - ab) * np.stack([np.sum(r * pd0, 1), np.sum(r * pd1, 1)], 1)


def numpy_sample(mix, x_T, steps: int, max_steps: int | None = None) -> np.ndarray:
    """x after min(steps, max_steps) deterministic DDIM steps of the full `steps`-step schedule."""
    dtype = x_T.dtype
    means, covs = (np.asarray(a, dtype) for a in (mix.means, mix.covs))
    logw = np.log(np.asarray(mix.weights, dtype))
    _, ab_t, ab_next = schedule.step_alpha_bars("linear", steps)
    x = x_T.copy()
    for ab, ab_n in list(zip(ab_t.astype(dtype), ab_next.astype(dtype), strict=True))[:max_steps]:
        eps = numpy_eps(means, covs, logw, x, ab)
        x0_hat = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
        x = np.sqrt(ab_n) * x0_hat + np.sqrt(1 - ab_n) * eps  # DDIM η = 0
    return x


def timed(fn) -> float:
    """Seconds of one call of fn."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--repeats", type=int, default=5, help="interleaved repeats (medians reported)"
    )
    parser.add_argument("--n", type=int, default=4096, help="points")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument(
        "--numpy-steps", type=int, default=5, help="steps numpy is timed on (scaled)"
    )
    parser.add_argument("--out", default=str(RESULTS / "exact.md"), help="markdown output")
    args = parser.parse_args(argv)

    mix = mixtures.preset("tree")
    den = denoisers.exact_denoiser(mix)
    cfg = sampler.SamplerConfig(rule="none", steps=args.steps, n=args.n)
    knobs, cond, key = sampler.default_knobs("none"), sampler.Cond(0, 0), jax.random.key(0)
    compile_s = timed(lambda: jax.block_until_ready(sampler.sample(cfg, den, key, cond, knobs)))
    result = sampler.sample(cfg, den, key, cond, knobs)
    x_T = np.asarray(result.traj[0], np.float32)

    # agreement: full run in float32 (same precision as JAX) and float64 (reference)
    x32 = numpy_sample(mix, x_T, args.steps)
    x64 = numpy_sample(mix, x_T.astype(np.float64), args.steps)
    x_jax = np.asarray(result.x0, np.float64)
    diff32, diff64 = np.abs(x_jax - x32).max(), np.abs(x_jax - x64).max()
    diff_ref = np.abs(x32 - x64).max()

    k = min(args.numpy_steps, args.steps)
    t_jax, t_np = [], []
    for _ in range(args.repeats):
        t_jax.append(
            timed(lambda: jax.block_until_ready(sampler.sample(cfg, den, key, cond, knobs)))
        )
        t_np.append(timed(lambda: numpy_sample(mix, x_T, args.steps, k)) * args.steps / k)
    jax_s, np_s = statistics.median(t_jax), statistics.median(t_np)
    speedup = jax_s and np_s / jax_s
    ok = lambda good: "PASS" if good else "FAIL"
    agree = diff32 <= 1e-3 and diff64 <= 1e-3

    rows = [
        (
            "toydiff exact sampler (JAX)",
            f"{jax_s * 1e3:.0f} ms",
            f"{args.n} pts × {args.steps} steps, K = {mix.k}; "
            f"first call (compile) {compile_s:.2f} s",
        ),
        (
            "numpy reference (float32)",
            f"{np_s * 1e3:.0f} ms",
            f"timed on {k} steps, scaled ×{args.steps / k:g}",
        ),
        ("numpy / JAX time", f"{speedup:.1f}×", f"goal ≥ 10×: {ok(speedup >= 10)}"),
        (
            "max abs diff x0, JAX vs numpy f32",
            f"{diff32:.1e}",
            f"all {args.steps} steps: {ok(diff32 <= 1e-3)}",
        ),
        (
            "max abs diff x0, JAX vs numpy f64",
            f"{diff64:.1e}",
            f"numpy f32 vs f64: {diff_ref:.1e}: {ok(diff64 <= 1e-3)}",
        ),
    ]
    md = "\n".join(
        ["| quantity | value | note |", "|---|---|---|"]
        + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    )
    print(md)
    header = (
        f"# Exact sampler benchmark\n\njax {jax.__version__}, numpy {np.__version__}, "
        f"{args.repeats} interleaved repeats, medians; max |x0| = {np.abs(x_jax).max():.2f}; "
        f"1-min load average at the end {os.getloadavg()[0]:.1f}.\n\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + md + "\n")
    print(f"\nspeedup ≥ 10×: {ok(speedup >= 10)}   agree: {ok(agree)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
