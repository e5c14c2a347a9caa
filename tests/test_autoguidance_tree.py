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


def _rows(method: str, points) -> list[dict]:
    return [
        dict(main="learned", method=method, guide="g", w=w, off_support=off, branches=b)
        for w, off, b in points
    ]


def test_the_claim_needs_every_guided_cfg_point_beaten_by_a_sharper_autoguidance_point():
    unguided = (1.0, 0.12, 0.73)
    ag = _rows("autoguidance", [unguided, (1.5, 0.09, 0.68), (3.0, 0.06, 0.56)])
    cfg = _rows("cfg_weak", [unguided, (1.5, 0.105, 0.63), (2.0, 0.116, 0.61)])
    assert bench.claim_holds(ag + cfg, "learned", "g", "cfg_weak") == (True, "2 of 2")
    # a CFG point as precise as autoguidance's best with more branches is not beaten
    better = _rows("cfg_weak", [(2.5, 0.09, 0.69)])
    assert bench.claim_holds(ag + cfg + better, "learned", "g", "cfg_weak") == (False, "2 of 3")
    # beaten only by the unguided point (w = 1) does not count: guidance must do the work
    worse = _rows("cfg_weak", [(4.0, 0.2, 0.70)])
    assert bench.claim_holds(ag + cfg + worse, "learned", "g", "cfg_weak") == (False, "2 of 3")
    # every CFG point beaten, but CFG gets as precise as autoguidance ever does
    sharp = _rows("cfg_weak", [(3.0, 0.06, 0.40)])
    assert bench.claim_holds(ag + cfg + sharp, "learned", "g", "cfg_weak") == (False, "3 of 3")
