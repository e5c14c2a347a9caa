"""Property tests over random scenes (issue 18, item 8).

Hypothesis draws a rule (every registered one), its knobs at their bounds, 1 to 1000 steps, both
schedules, every solver the rule may run on, η at 0 or 1, and a batch of BATCH mixtures of one
size K (1 to 50 components): anisotropic, near-singular covariances (condition up to
mixtures.COND_MAX, eigenvalues across [EIG_MIN, EIG_MAX]), means anywhere in the allowed box,
weights across their allowed ratio, overlapping memberships with 0 and 1 among them. The batch is
sampled in one vmapped call of `sampler.sample` (one compile per example, not per scene), and each
scene is evaluated by `metrics.evaluate`: EXAMPLES × BATCH per rule, ≥ 500 scenes in all in the
default run.

Checked per scene: no exception, no RuntimeWarning, every non-finite sample counted in
`non_finite` and every sample that is non-finite or past metrics.DIVERGED_RADIUS in `diverged`
(recounted here), and no NaN in a metric that is defined (NaN only where evaluate's docstring
says undefined: alignment without a positive concept, energy and its baseline for an empty target
or fewer than 2 finite samples, nll without a finite sample).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from toydiff import guidance, metrics, mixtures, sampler, solvers
from toydiff.mixtures import COND_MAX, EIG_MAX, EIG_MIN, MEAN_MAX, WEIGHT_RATIO_MAX
from toydiff.scene import Scene, denoiser

BATCH = 20  # scenes per example, sampled in one vmapped call (one compile)
SCENES = 500  # at least this many scenes in all, spread evenly over the registered rules
EXAMPLES = -(-SCENES // (BATCH * len(guidance.RULES)))  # per rule: 13 rules -> 2 (520 scenes)
N = 6  # samples per scene
SIZES = (50, 1, 2, 3, 7)  # K: few distinct shapes, so that compiled code is reused
STEPS = (1000, 1, 2, 3, 50)  # hypothesis starts from the first: the longest chain
CONCEPTS = ("a", "b", "c")


@st.composite
def mixture_dicts(draw, k: int):
    """An inline mixture (scene JSON) of k components and three concepts.

    Hypothesis picks the regime (how far apart the means, the eigenvalue range, how anisotropic,
    how uneven the weights, how soft the memberships: each up to its allowed bound) and a seed;
    numpy draws the k components in it, so that a 50-component mixture is cheap to generate."""
    spread = draw(st.sampled_from((MEAN_MAX, 1.0, 10.0)))
    eig_lo = draw(st.sampled_from((EIG_MIN, 1e-2, 1.0, 1e2)))
    cond = draw(st.sampled_from((COND_MAX, 1.0, 10.0)))
    ratio = draw(st.sampled_from((WEIGHT_RATIO_MAX, 1.0, 1e3)))
    hard = draw(st.sampled_from((0.5, 0.0, 1.0)))  # share of memberships that are exactly 0 or 1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    means = rng.uniform(-spread, spread, (k, 2))
    small = np.exp(rng.uniform(np.log(eig_lo), np.log(EIG_MAX), k))
    large = np.minimum(small * np.exp(rng.uniform(0.0, np.log(cond), k)), EIG_MAX)
    angle = rng.uniform(0.0, np.pi, k)
    rot = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], -1)
    rot = rot.reshape(k, 2, 2)
    covs = rot @ (np.stack([small, large], -1)[:, :, None] * np.swapaxes(rot, 1, 2))
    covs = 0.5 * (covs + np.swapaxes(covs, 1, 2))
    weights = np.exp(rng.uniform(0.0, np.log(ratio), k))
    membership = np.where(
        rng.random((len(CONCEPTS), k)) < hard,
        rng.integers(0, 2, (len(CONCEPTS), k)),
        rng.random((len(CONCEPTS), k)),
    )
    empty = membership.max(1) < 1e-6  # every concept needs a component
    membership[empty, rng.integers(0, k)] = 1.0
    return dict(
        means=means.tolist(),
        covs=covs.tolist(),
        weights=weights.tolist(),
        membership=membership.tolist(),
        concepts=list(CONCEPTS),
    )


@st.composite
def batches(draw, name: str):
    """(scenes, mixtures): BATCH valid scenes of rule `name` with one steps, schedule, solver and
    size K."""
    r = guidance.rule(name)
    stochastic_state = r.state is not None and r.state.eta is not None
    ok_solvers = [s for s, v in solvers.SOLVERS.items() if v.stochastic or not stochastic_state]
    has_pos = guidance.needs_positive(r) or (r.optional_pos and draw(st.booleans()))
    common = dict(
        preset=None,
        method=name,
        positive="a" if has_pos else None,
        negative="b" if guidance.needs_negative(r) or draw(st.booleans()) else None,
        steps=draw(st.sampled_from(STEPS)),
        schedule=draw(st.sampled_from(("linear", "cosine"))),
        solver=draw(st.sampled_from(ok_solvers)),
        n=N,
    )
    k = draw(st.sampled_from(SIZES))
    scenes, mixes = [], []
    for i in range(BATCH):
        knobs = {
            key: draw(st.sampled_from(p.choices if p.choices else (p.lo, p.hi, p.default)))
            for key, p in r.all_params.items()
        }
        eta = draw(st.sampled_from((0.0, 1.0)))
        data = dict(common, mixture=draw(mixture_dicts(k)), seed=i, eta=eta, **knobs)
        scene = Scene.from_dict(data)
        scenes.append(scene)
        mixes.append(scene.build_mixture())
    return scenes, mixes


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def sample_batch(scenes: list[Scene], mixes: list) -> np.ndarray:
    """(BATCH, N, 2) final samples of every scene, in one vmapped sampler call."""
    first = scenes[0]
    config, cond = first.sampler_config(), first.cond(mixes[0])
    den = denoiser(first, mixes[0])

    def one(mix, key, knobs):
        return sampler.sample(config, dataclasses.replace(den, mix=mix), key, cond, knobs).x0

    keys = jnp.stack([jax.random.key(s.seed) for s in scenes])
    knobs = _stack([{k: jnp.float32(v) for k, v in s.knobs().items()} for s in scenes])
    return np.asarray(jax.vmap(one)(_stack(mixes), keys, knobs))


def _defined(key: str, scene: Scene, mix, n_finite: int) -> bool:
    """Whether evaluate's docstring promises a number (not NaN) for this metric."""
    if key == "alignment":
        return scene.positive is not None and n_finite > 0
    if key in ("leakage", "leakage_hard"):
        return scene.negative is not None and n_finite > 0
    if key == "nll":
        return n_finite > 0
    if key in ("energy", "energy_baseline", "energy_baseline_sd"):
        logw = mixtures.log_weights(mix, scene.positive, scene.negative)
        return bool(np.isfinite(logw).any()) and n_finite >= 2
    return True


@pytest.mark.filterwarnings("error::RuntimeWarning")
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same scenes on every run
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(data=st.data())
@pytest.mark.parametrize("rule", sorted(guidance.RULES))
def test_random_scenes_run_and_count_every_sample(rule, data):
    scenes, mixes = data.draw(batches(rule))
    event(f"steps {scenes[0].steps}, K = {mixes[0].k}, solver {scenes[0].solver}")
    x0 = sample_batch(scenes, mixes)
    for scene, mix, x in zip(scenes, mixes, x0):
        m = metrics.evaluate(mix, x, scene.positive, scene.negative)
        finite = np.isfinite(x).all(-1)
        far = np.linalg.norm(np.nan_to_num(x.astype(np.float64)), axis=-1) > metrics.DIVERGED_RADIUS
        assert m["n"] == N and m["non_finite"] == int((~finite).sum()), scene.to_json()
        assert m["diverged"] == int((~finite | far).sum()), scene.to_json()
        event(f"scene with diverged samples: {m['diverged'] > 0}")
        for key, value in m.items():
            if isinstance(value, float) and _defined(key, scene, mix, int(finite.sum())):
                assert not math.isnan(value), (key, scene.to_json())
