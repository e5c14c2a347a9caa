"""Mixture validation, presets and exact sampling against closed-form moments (MATH §2, §6)."""

import jax
import numpy as np
import pytest

import toydiff
from toydiff import mixtures

GOOD = dict(
    means=[[0, 0], [1, 1]],
    covs=[np.eye(2), np.eye(2)],
    weights=[1, 3],
    membership=[[1, 0], [0.5, 1]],
    concepts=("a", "b"),
)


def test_weights_are_normalised():
    np.testing.assert_allclose(toydiff.Mixture(**GOOD).weights, [0.25, 0.75])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("means", [[0, 0, 0], [1, 1, 1]], "means: shape"),
        ("covs", [np.eye(2)], "covs: shape"),
        ("covs", [np.eye(2), [[1, 2], [2, 1]]], "covs: must be symmetric positive definite"),
        ("covs", [np.eye(2), [[1, 0.5], [0, 1]]], "covs: must be symmetric"),
        ("weights", [1, 0], "weights: every weight must be > 0"),
        ("weights", [1, 2, 3], "weights: shape"),
        ("membership", [[1, 0]], "membership: shape"),
        ("membership", [[1, 2], [0, 1]], "membership: values must lie in [0, 1]"),
        ("membership", [[0, 0], [0, 1]], "membership: every concept needs a component"),
        ("concepts", ("a", "a"), "concepts: names must be unique"),
        ("means", [[0, 0], [np.nan, 1]], "means: values must be finite"),
        ("means", "oops", "means: not a numeric array"),
        # float32 ranges (issue 18, item 8): refused naming the field and the allowed range
        ("means", [[0, 0], [1e30, 1]], "means: |value| must be ≤ 100, got 1e+30"),
        ("covs", [np.eye(2), 1e-9 * np.eye(2)], "covs: eigenvalues must lie in [1e-06, 10000]"),
        ("covs", [np.eye(2), 1e5 * np.eye(2)], "covs: eigenvalues must lie in [1e-06, 10000]"),
        ("covs", [np.eye(2), np.diag([1e-3, 1e2])], "covs: condition number λmax/λmin must be ≤"),
        ("weights", [1, 1e7], "weights: largest / smallest must be ≤ 1e+06, got 1e+07"),
    ],
)
def test_bad_fields_raise_one_line_errors_naming_the_field(field, value, message):
    with pytest.raises(ValueError) as e:
        toydiff.Mixture(**{**GOOD, field: value})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_unknown_preset_and_concept_list_valid_names():
    with pytest.raises(ValueError, match="unknown preset 'nope'; valid: three_blobs, ring"):
        toydiff.preset("nope")
    with pytest.raises(ValueError, match="unknown concept 'z'; valid: a, b"):
        toydiff.Mixture(**GOOD).concept_index("z")


@pytest.mark.parametrize("name", toydiff.PRESETS)
def test_presets_are_valid_and_described(name):
    mix = toydiff.preset(name)
    assert mixtures.DESCRIPTIONS[name] and len(mix.concepts) >= 2
    info = mixtures.preset_info(name)
    for concept in (info.negative, info.positive):
        assert concept is None or concept in mix.concepts


def test_tree_follows_the_published_recipe():
    mix = toydiff.preset("tree")
    assert mix.k == 2 * 1016
    covs = np.asarray(mix.covs)
    eig = np.linalg.eigvalsh(covs)
    assert np.median(eig[:, 1] / eig[:, 0]) > 2  # long along the branch, thin across
    # the first component of class A sits at fraction 0.07 along a branch leaving the origin at π/4
    first = np.asarray(mix.means)[0] / np.array([1.3136, 1.3844]) - np.array([0.0030, 0.0325])
    np.testing.assert_allclose(np.arctan2(first[1], first[0]), np.pi / 4, atol=1e-5)


@pytest.mark.parametrize("positive, negative", [(None, None), ("a", None), (None, "a"), ("b", "a")])
def test_exact_sampling_matches_closed_form_moments(positive, negative):
    mix = toydiff.Mixture(**GOOD)
    x = np.asarray(mixtures.sample(jax.random.key(0), mix, 200_000, positive, negative))
    m = dict(zip(mix.concepts, np.asarray(mix.membership)))
    w = (
        np.asarray(mix.weights)
        * (m[positive] if positive else 1)
        * (1 - m[negative] if negative else 1)
    )
    w = w / w.sum()
    mean = w @ np.asarray(mix.means)
    second = np.einsum("k,kij->ij", w, np.asarray(mix.covs)) + np.einsum(
        "k,ki,kj->ij", w, np.asarray(mix.means), np.asarray(mix.means)
    )
    np.testing.assert_allclose(x.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(np.cov(x.T), second - np.outer(mean, mean), atol=0.02)


def test_empty_target_is_refused():
    mix = toydiff.Mixture(**{**GOOD, "membership": [[1, 1], [0, 1]]})
    with pytest.raises(ValueError, match="empty"):
        mixtures.sample(jax.random.key(0), mix, 10, None, "a")
