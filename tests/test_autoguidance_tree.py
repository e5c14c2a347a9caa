"""The tree benchmark's coverage measures (MATH §4) against closed forms."""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from toydiff import metrics, mixtures, train

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import autoguidance_tree as bench  # noqa: E402

MIX = mixtures.preset("tree")
THRESHOLD = metrics.preset_threshold("tree")


def _class_a(n: int, seed: int) -> np.ndarray:
    data = train.make_data(MIX)
    return np.asarray(train.sample_x0(jax.random.key(seed), data, jnp.zeros(n, jnp.int32)))


def test_branches_are_breadth_first_rows_of_eight():
    branch, depth = bench.branch_depths(MIX)
    assert np.bincount(branch).tolist() == [8] * 127
    assert np.bincount(depth[::8]).tolist() == [2**d for d in range(7)]
    assert len(np.unique(branch[depth >= 5])) == 96
    # children start where their parent ends: of all branches' last means, the one nearest to
    # branch b's first mean is its parent's, (b - 1) // 2
    means = np.asarray(MIX.means)[: MIX.k // 2].reshape(127, 8, 2)
    for b in range(1, 127):
        nearest = np.argmin(np.linalg.norm(means[:, -1] - means[b, 0], axis=-1))
        assert nearest == (b - 1) // 2, b


def test_exact_samples_cover_branches_as_the_binomial_formula_says():
    branch, depth = bench.branch_depths(MIX)
    w = np.asarray(MIX.weights)[: MIX.k // 2]
    share = np.bincount(branch, w) / w.sum()
    outer = np.unique(branch[depth >= 5])
    for n in (1000, 4000):
        want = np.mean(1 - (1 - share[outer]) ** n)  # P(branch b gets ≥ 1 of n samples), averaged
        got = [
            bench.branch_coverage(MIX, bench.owners(MIX, _class_a(n, s), THRESHOLD))
            for s in range(4)
        ]
        assert abs(np.mean(got) - want) < 0.03, (n, got, want)


def test_samples_on_one_subtree_cover_its_share_of_outer_branches():
    x = _class_a(20_000, 0)
    owner = bench.owners(MIX, x, THRESHOLD)
    branch, _ = bench.branch_depths(MIX)
    # keep the samples owned by the subtree under branch 3 (depth 2): 8 + 16 of the 96 outer branches
    sub, frontier = set(), [3]
    while frontier:
        b = frontier.pop()
        sub.add(b)
        frontier += [c for c in (2 * b + 1, 2 * b + 2) if c < 127]
    kept = owner[np.isin(branch[owner], sorted(sub))]
    assert bench.branch_coverage(MIX, kept) == 24 / 96
    off = np.full((5, 2), 40.0, np.float32)  # far off the support: owned by nobody
    assert len(bench.owners(MIX, off, THRESHOLD)) == 0
