"""Linear targets are exact (issue 21, item 1; MATH §3.2): with the exact posterior, DNG at γ = 1
samples p(x | ¬n), and FBG samples the de-mixed target ∝ p(x | c) − (1 − π)p(x) where that is a
density.

    python benchmarks/linear_targets.py [--out benchmarks/results] [--presets a,b,...] [--steps 100]
        [--settings ddim:1,ddim:0,dpmpp_2m_sde:1]

Every energy is toydiff's own (toydiff.run, toydiff.metrics), so a row agrees with `python -m
toydiff metrics` on the same scene: `energy` is the U-statistic to the exact target set of
metrics.reference (n samples, key 1); ratio = |energy| / sd (the acceptance bound is 3), where sd
is that of 200 exact-vs-exact energies (toydiff.run's energy_baseline_sd, 32 of them, is shown
beside it: it can fall 30 % short). DNG (dng_oracle, γ = 1, p_max 0.999): each concept of each
preset negated in turn; its soft leakage over seeds 0-3 (8 000 samples, with its standard error)
beside the target's own, 100 000 exact samples scored the same way. FBG (fbg_oracle): on
an inline mixture whose de-mixed target is a mixture of its components (π = 0.6); no preset's is
a density at π = 0.95 (hard memberships), so none runs there. Controls: the unguided sampler
against p(x), its ratio the sampler's own floor; the mean energy to 8 other exact target sets
over the sd, since one target set is one draw; for DNG, that mean over the runs of seeds 0-3 too
(its spread is the null's over √4): one draw of exact samples reads |E|/sd > 3 in 1.5-2.5 % of
draws (the null is skewed: 400 exact-vs-exact energies on overlap ¬round reach 8.2 sd), so 42 rows
of a perfect sampler hold one such row on average; the pooled mean is what says "biased". 100 steps (--steps), n = 2000, seed 0, three
solver settings (--settings, solver:η): DDIM with η = 1 (the DDPM kernel) and η = 0 (deterministic),
and DPM-Solver++(2M) SDE with η = 1 (stochastic, second order, on the EDM σ grid).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys

import jax
import numpy as np

from toydiff import exact, metrics, mixtures, solvers
from toydiff.scene import Scene, run

N, STEPS, PI, OTHER_SETS = 2000, 100, 0.95, 8
# DNG's leakage pools the runs of seeds 0 to SEEDS − 1 (8 000 samples): its se ≤ 0.0034 on every preset
SEEDS = 4
SD_DRAWS = 200  # the sd behind |E|/sd: exact-vs-exact energies (toydiff.run's own sd uses 32)
SETTINGS = "ddim:1,ddim:0,dpmpp_2m_sde:1"  # solver:η of every row kind
# on this mixture every point is partly "c" (r ≥ 0.57), so at π = 0.6 the de-mixed target is a
# mixture of the two components: 86 % on the left mode where p(x | c) has 71 %
SOFT = dict(
    means=[[-1.5, 0.0], [1.5, 0.0]],
    covs=[[[0.25, 0.0], [0.0, 0.25]], [[0.25, 0.0], [0.0, 0.25]]],
    weights=[0.5, 0.5],
    membership=[[1.0, 0.4], [0.0, 0.6]],
    concepts=["c", "d"],
)
SOFT_PI = 0.6


def demixed_mixture(mix, concept: str, pi: float) -> mixtures.Mixture:
    """q ∝ p(x | c) − (1 − π)p(x) = Σ_k π_k (m_ck / p(c) − (1 − π)) N_k as a Mixture of the same
    components; ValueError when a coefficient is negative (q is then no mixture of them)."""
    c = mix.concept_index(concept)
    weights, member = np.asarray(mix.weights, np.float64), np.asarray(mix.membership, np.float64)
    coef = member[c] / (weights @ member[c]) - (1 - pi)
    if np.any(coef < 0):
        raise ValueError(f"{concept}: the de-mixed target at π = {pi} is no mixture of components")
    keep = coef > 0
    return mixtures.Mixture(
        np.asarray(mix.means)[keep],
        np.asarray(mix.covs)[keep],
        (weights * coef)[keep],
        member[:, keep],
        mix.concepts,
    )


def negated_mixture(mix, concept: str) -> dict:
    """p(x | ¬concept) = Σ_k π_k (1 − m_nk) N_k / p(¬n) as an inline scene mixture of one concept
    't' (the components it keeps): what DNG's oracle at γ = 1 samples."""
    w = np.asarray(mix.weights, np.float64) * (
        1 - np.asarray(mix.membership)[mix.concept_index(concept)]
    )
    keep = w > 0
    return dict(
        means=np.asarray(mix.means)[keep].tolist(),
        covs=np.asarray(mix.covs)[keep].tolist(),
        weights=(w[keep] / w[keep].sum()).tolist(),
        membership=[[1.0] * int(keep.sum())],
        concepts=["t"],
    )


def demixed(key, mix, concept: str, n: int, pi: float = PI) -> np.ndarray:
    """n exact samples of q ∝ p(x | c) − (1 − π)p(x) where positive, by rejection (independent of
    demixed_mixture): x ~ p(x | c), kept with probability max(0, 1 − (1 − π)/r(x)),
    r = p(x | c)/p(x) = p(c | x)/p(c)."""
    c = mix.concept_index(concept)
    p_c = float(np.asarray(mix.weights) @ np.asarray(mix.membership)[c])
    out = []
    while sum(len(o) for o in out) < n:
        key, k1, k2 = jax.random.split(key, 3)
        x = np.asarray(mixtures.sample(k1, mix, 8 * n, positive=concept))
        r = np.asarray(exact.posterior(mix, x, 1.0, concept)) / p_c
        keep = np.asarray(jax.random.uniform(k2, (len(x),))) < np.maximum(0, 1 - (1 - pi) / r)
        out.append(x[keep])
    return np.concatenate(out)[:n]


def is_density(mix, concept: str, pi: float = PI) -> bool:
    """Whether p(x | c) − (1 − π)p(x) ≥ 0 on the data (200 000 samples of p(x)): r ≥ 1 − π."""
    c = mix.concept_index(concept)
    p_c = float(np.asarray(mix.weights) @ np.asarray(mix.membership)[c])
    x = mixtures.sample(jax.random.key(7), mix, 200_000)
    return bool(np.min(np.asarray(exact.posterior(mix, x, 1.0, concept))) / p_c >= 1 - pi)


def ratio(m: dict) -> float:
    """|energy| / energy_baseline_sd of a metrics dict (toydiff.run's, metrics.evaluate's)."""
    return abs(m["energy"]) / m["energy_baseline_sd"]


def null_sd(mix, negative=None, draws: int = SD_DRAWS, n: int = N) -> float:
    """The sd of `draws` exact-vs-exact energies at n samples (metrics.reference's baseline): 32
    draws, toydiff.run's, estimate it to ±12 % (1/√(2·31)) and can fall 30 % short (tree ¬B)."""
    return metrics.reference(mix, None, negative, n, draws=draws).baseline_sd


@functools.cache
def preset_sd(preset: str, negative: str | None, draws: int = SD_DRAWS) -> float:
    """null_sd of a preset's target, once per process (every solver setting shares it)."""
    return null_sd(mixtures.preset(preset), negative, draws)


def settings(text: str) -> list[tuple[str, float]]:
    """'ddim:1,dpmpp_2m_sde:1' -> [(solver, η), ...]; ValueError names a malformed entry."""
    out = []
    for item in text.split(","):
        name, _, eta = item.partition(":")
        try:
            out.append((solvers.solver(name.strip()).name, float(eta)))
        except ValueError as e:
            raise ValueError(f"--settings: {item!r} is not solver:η ({e})") from None
    return out


def energy_columns(m: dict, x0, mix, sd: float, negative=None) -> dict:
    """A row's energy columns: toydiff.run's energy and sd, the sd given, |E|/sd and the
    mean over other target sets."""
    return dict(
        energy=m["energy"],
        sd_run=m["energy_baseline_sd"],
        sd=sd,
        ratio=abs(m["energy"]) / sd,
        other_sets=other_sets(mix, x0, sd, negative),
    )


def _soft_leakage(scene: Scene, x) -> np.ndarray:
    """(M,) exact p(n | x) of the finite samples: the per-sample soft leakage of metrics.evaluate."""
    x = np.asarray(x)
    x = x[np.all(np.isfinite(x), -1)]
    return np.asarray(exact.posterior(scene.build_mixture(), x, 1.0, scene.negative), np.float64)


def target_leakage(scene: Scene, n: int = 100_000) -> float:
    """Soft leakage of n exact samples of the target p(x | ¬n), scored as toydiff.run scores
    samples: its expectation to ±0.001. A set of the run's size would add noise as large as the
    run's own (leak_se)."""
    y = mixtures.sample(jax.random.key(2), scene.build_mixture(), n, None, scene.negative)
    return float(np.mean(_soft_leakage(scene, y)))


def leak_se(scene: Scene, x0) -> float:
    """The standard error of the run's soft leakage: sd of p(n | x) over its samples / √n."""
    post = _soft_leakage(scene, x0)
    return float(np.std(post) / np.sqrt(len(post)))


def other_sets(mix, x0, sd: float, negative=None, sets: int = OTHER_SETS) -> float:
    """Mean energy_distance_u of x0 to `sets` other exact sets of p(x | ¬negative) (as many samples
    as x0), over sd: the energy's spread from one target set to the next averaged out. Off the
    target that spread is of order 1/√n, at it 1/n: a large one says the samples are off."""
    x0 = np.asarray(x0)
    x0 = x0[np.all(np.isfinite(x0), -1)]
    draw = lambda i: mixtures.sample(jax.random.key(1000 + i), mix, len(x0), None, negative)
    return float(np.mean([metrics.energy_distance_u(x0, draw(i)) for i in range(sets)])) / sd


def fbg_row(eta: float, steps: int = STEPS, solver: str = "ddim") -> dict:
    """FBG's oracle on SOFT against its de-mixed target, measured as toydiff.run measures."""
    soft = mixtures.Mixture(**SOFT)
    scene = Scene.from_dict(
        dict(mixture=SOFT, method="fbg_oracle", positive="c", negative=None, pi=SOFT_PI)
        | dict(steps=steps, eta=eta, n=N, seed=0, solver=solver)
    )
    target, x0 = demixed_mixture(soft, "c", SOFT_PI), run(scene)[0].x0
    m = metrics.evaluate(target, x0)
    return dict(
        rule="fbg_oracle",
        preset="soft (inline, π = 0.6)",
        concept="c",
        solver=solver,
        eta=eta,
        density=is_density(soft, "c", SOFT_PI),
        **energy_columns(m, x0, target, null_sd(target)),
    )


def dng_row(
    preset: str,
    concept: str,
    eta: float,
    seeds: int = SEEDS,
    sd_draws: int = SD_DRAWS,
    steps: int = STEPS,
    solver: str = "ddim",
) -> dict:
    """DNG's oracle at γ = 1 negating `concept`: toydiff.run's metrics of seed 0, the leakage of
    seeds 0 to seeds − 1 pooled, |E| over the sd of sd_draws null energies, and the controls."""
    scene = Scene.from_dict(
        dict(preset=preset, method="dng_oracle", negative=concept, positive=None, gamma=1.0)
        | dict(p_max=0.999, steps=steps, eta=eta, n=N, seed=0, solver=solver)
    )
    result, m = run(scene)
    runs = [result.x0] + [run(scene.replace(seed=s))[0].x0 for s in range(1, seeds)]
    x0, mix, sd = np.concatenate(runs), scene.build_mixture(), preset_sd(preset, concept, sd_draws)
    return dict(
        rule="dng_oracle",
        preset=preset,
        concept=concept,
        solver=solver,
        eta=eta,
        leakage=float(np.mean(_soft_leakage(scene, x0))),
        ideal_leakage=target_leakage(scene),
        leak_se=leak_se(scene, x0),
        off_support=m["off_support"],
        **energy_columns(m, result.x0, mix, sd, concept),
        pooled=float(np.mean([other_sets(mix, x, sd, concept) for x in runs])),
    )


def unguided_row(preset: str, eta: float, steps: int = STEPS, solver: str = "ddim") -> dict:
    """The sampler alone (rule none) against p(x): the floor of its discretisation."""
    scene = Scene.from_dict(
        dict(preset=preset, method="none", negative=None, positive=None)
        | dict(steps=steps, eta=eta, n=N, seed=0, solver=solver)
    )
    result, m = run(scene)
    mix = scene.build_mixture()
    return dict(
        rule="none",
        preset=preset,
        concept="—",
        solver=solver,
        eta=eta,
        off_support=m["off_support"],
        **energy_columns(m, result.x0, mix, preset_sd(preset, None)),
    )


_SDS = ("ratio", "other_sets", "pooled")  # columns in units of the sd


def table(rows: list[dict]) -> list[str]:
    """Markdown rows: every measured column, — where a rule has none."""
    cols = ("leakage", "leak_se", "ideal_leakage", "off_support", "energy", "sd_run", "sd", "ratio")
    cols += ("other_sets", "pooled")
    fmt = lambda r, k: "—" if k not in r else f"{r[k]:.2f}" if k in _SDS else f"{r[k]:.4g}"
    head = (
        "| rule | preset | concept | solver | η | leakage | its se | target's | off-support | energy | sd, 32 | "
        "sd, 200 | "
    )
    tail = "\\|E\\|/sd | mean E/sd, 8 other sets | mean E/sd, seeds × 8 sets |"
    lines = [head + tail, "|---" * 15 + "|"]
    for r in rows:
        cells = [r["rule"], r["preset"], r["concept"], r["solver"], f"{r['eta']:g}"]
        lines.append("| " + " | ".join(cells + [fmt(r, k) for k in cols]) + " |")
    return lines


def summary(rows: list[dict]) -> str:
    """The acceptance counts: DNG leakage within 0.01 of the target's, |E|/sd ≤ 3; FBG |E|/sd ≤ 3."""
    dng = [r for r in rows if r["rule"] == "dng_oracle"]
    fbg = [r for r in rows if r["rule"] == "fbg_oracle" and r["density"]]
    name = lambda r: f"{r['preset']} ¬{r['concept']} {r['solver']} η {r['eta']:g}"
    delta = lambda r: abs(r["leakage"] - r["ideal_leakage"])
    leak = [
        f"{name(r)}: {delta(r):.4f}, {delta(r) / r['leak_se']:.1f} se"
        for r in dng
        if delta(r) > 0.01
    ]
    energy = [f"{name(r)}: {r['ratio']:.2f}" for r in dng if r["ratio"] > 3]
    pooled = [f"{name(r)}: {r['pooled']:.2f}" for r in dng if abs(r["pooled"]) > 3]
    fails = lambda found: f" (not: {'; '.join(found)})" if found else ""
    return (
        f"DNG: soft leakage within 0.01 of the target's in {len(dng) - len(leak)}/{len(dng)}"
        f"{fails(leak)}; |E|/sd ≤ 3 in {len(dng) - len(energy)}/{len(dng)}{fails(energy)}; "
        f"the mean over seeds and target sets within 3 sd in {len(dng) - len(pooled)}/{len(dng)}"
        f"{fails(pooled)}. "
        f"FBG where its target is a density: |E|/sd ≤ 3 in "
        f"{sum(r['ratio'] <= 3 for r in fbg)}/{len(fbg)}."
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--presets", default=",".join(mixtures.PRESETS), help="comma-separated")
    ap.add_argument("--steps", type=int, default=STEPS, help="sampler steps (the issue's: 100)")
    ap.add_argument("--settings", default=SETTINGS, help="comma-separated solver:η")
    args = ap.parse_args(argv)
    presets, todo = args.presets.split(","), settings(args.settings)
    for name in presets:
        mixtures.preset_info(name)  # unknown name -> ValueError listing the valid ones
    rows = [fbg_row(eta, args.steps, solver) for solver, eta in todo]
    for preset in presets:
        for solver, eta in todo:
            rows.append(unguided_row(preset, eta, args.steps, solver))
            print(json.dumps(rows[-1]), flush=True)
            for concept in mixtures.preset(preset).concepts:
                rows.append(dng_row(preset, concept, eta, steps=args.steps, solver=solver))
                print(json.dumps(rows[-1]), flush=True)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "linear_targets.json").write_text(json.dumps(rows, indent=1) + "\n")
    command = "python benchmarks/linear_targets.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    (out / "linear_targets.md").write_text(
        f"# Linear targets are exact\n\n`{command.strip()}` (n = {N}, {args.steps} steps, "
        f"seed 0; the energies of toydiff.run, |E| over the sd of {SD_DRAWS} null energies, DNG's "
        f"leakage over {SEEDS} seeds)\n\n{summary(rows)}\n\n" + "\n".join(table(rows)) + "\n"
    )
    print(summary(rows))


if __name__ == "__main__":
    main()
