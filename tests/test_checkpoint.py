"""Checkpoints: bit-exact round trip, one CheckpointError per corruption, shipped weights, cache."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toydiff import checkpoint, mixtures, nets, train
from toydiff.__main__ import main
from toydiff.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def mix():
    return mixtures.preset("overlap")


@pytest.fixture(scope="module")
def net(mix):
    config = dataclasses.replace(train.default_net_config(mix), hidden=16)
    return nets.init(jax.random.key(3), config), config


def _save(tmp_path, mix, net, **over):
    params, config = net
    meta = dict(
        preset="overlap",
        train={"steps": 0},
        seed=0,
        steps=0,
        wall_time_s=0.0,
        final_loss=1.0,
        errors={},
    )
    return checkpoint.save(tmp_path / "ck", params, config, mix, **{**meta, **over})


def _eps(params, config, mix):
    x = mixtures.sample(jax.random.key(0), mix, 64)
    return np.asarray(nets.apply(params, config, x, 123, 0.7, jnp.arange(64) % 3))


def test_round_trip_is_bit_exact(tmp_path, mix, net):
    stem = _save(tmp_path, mix, net)
    params, config, meta = checkpoint.load(stem, mix)
    assert config == net[1] and meta["mixture_hash"] == checkpoint.mixture_hash(mix)
    np.testing.assert_array_equal(_eps(params, config, mix), _eps(*net, mix))


def test_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_missing_file(tmp_path, mix, net, suffix):
    stem = _save(tmp_path, mix, net)
    stem.with_suffix(suffix).unlink()
    with pytest.raises(CheckpointError, match=f"missing checkpoint file .*ck\\{suffix}"):
        checkpoint.load(stem, mix)


def test_truncated_weights(tmp_path, mix, net):
    stem = _save(tmp_path, mix, net)
    path = stem.with_suffix(".safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(stem, mix)


def test_garbage_weights(tmp_path, mix, net):
    stem = _save(tmp_path, mix, net)
    stem.with_suffix(".safetensors").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(stem, mix)


def test_garbage_metadata(tmp_path, mix, net):
    stem = _save(tmp_path, mix, net)
    stem.with_suffix(".json").write_bytes(b"\x00{not json")
    with pytest.raises(CheckpointError, match="unreadable metadata"):
        checkpoint.load(stem, mix)


def _edit_meta(stem, fn):
    path = stem.with_suffix(".json")
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"hidden": 32},
            "tensor concept is float32\\[3, 16\\], the architecture needs float32\\[3, 32\\]",
        ),
        ({"depth": 4}, "tensors do not match the architecture .*hidden.2"),
        (
            {"n_concepts": 3},
            "tensor concept is float32\\[3, 16\\], the architecture needs float32\\[4, 16\\]",
        ),
        ({"widget": 1}, "architecture must be an object"),
        ({"hidden": "big"}, "architecture.hidden = 'big' is not a valid int"),
    ],
)
def test_architecture_mismatch(tmp_path, mix, net, change, message):
    stem = _save(tmp_path, mix, net)
    _edit_meta(stem, lambda m: m["architecture"].update(change))
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(stem, mix)


def test_metadata_missing_keys_and_version(tmp_path, mix, net):
    stem = _save(tmp_path, mix, net)
    _edit_meta(stem, lambda m: m.pop("errors"))
    with pytest.raises(CheckpointError, match="metadata lacks errors"):
        checkpoint.load(stem, mix)
    stem = _save(tmp_path, mix, net)
    _edit_meta(stem, lambda m: m.update(format_version=99))
    with pytest.raises(CheckpointError, match="format version 99, expected 1"):
        checkpoint.load(stem, mix)


def test_nan_weights(tmp_path, mix, net):
    params, config = net
    bad = jax.tree.map(lambda a: a, params)
    bad["hidden"][0]["w"] = bad["hidden"][0]["w"].at[2, 3].set(jnp.nan)
    stem = _save(tmp_path, mix, (bad, config))
    with pytest.raises(CheckpointError, match="tensor hidden.0.w has non-finite weights"):
        checkpoint.load(stem, mix)


def test_different_mixture(tmp_path, mix, net):
    stem = _save(tmp_path, mix, net)
    moved = np.asarray(mix.means) + 1e-3
    other = mixtures.Mixture(moved, mix.covs, mix.weights, mix.membership, mix.concepts)
    assert checkpoint.mixture_hash(other) != checkpoint.mixture_hash(mix)
    with pytest.raises(CheckpointError, match="trained on a different mixture"):
        checkpoint.load(stem, other)


def test_weights_from_another_checkpoint(tmp_path, mix, net):
    stem = _save(tmp_path, mix, net)
    _edit_meta(stem, lambda m: m.update(mixture_hash="0" * 16))
    with pytest.raises(
        CheckpointError, match="weights and metadata come from different checkpoints"
    ):
        checkpoint.load(stem)


def test_cache_reloads_when_the_file_changes(tmp_path, mix, net):
    stem = _save(tmp_path, mix, net)
    first = checkpoint.load(stem, mix)
    assert checkpoint.load(stem, mix)[0] is first[0]  # cached: the same arrays
    params, config = net
    _save(tmp_path, mix, (jax.tree.map(lambda a: a + 1.0, params), config))
    path = stem.with_suffix(".safetensors")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    np.testing.assert_array_equal(
        np.asarray(checkpoint.load(stem, mix)[0]["out"]["b"]), np.asarray(params["out"]["b"]) + 1.0
    )


def test_pretrained_denoiser_errors(tmp_path, mix):
    with pytest.raises(CheckpointError, match="learned scores need a preset"):
        checkpoint.pretrained_denoiser(None, mix)
    with pytest.raises(CheckpointError, match="missing checkpoint file .*overlap_weak.json"):
        checkpoint.pretrained_denoiser("overlap", mix, root=tmp_path)


@pytest.mark.parametrize("name", mixtures.PRESETS)
def test_shipped_denoiser_matches_its_files(name):
    mix = mixtures.preset(name)
    den = checkpoint.pretrained_denoiser(name, mix)
    params, config, meta = checkpoint.load(checkpoint.pretrained_stem(name), mix)
    assert meta["preset"] == name and den.eps_main.config == config
    np.testing.assert_array_equal(_eps(den.main, config, mix), _eps(params, config, mix))
    weak = checkpoint.pretrained_denoiser(name, mix, weak_only=True)
    small = train.weak_nets(name)["shipped"].small  # the tree's guide has the main architecture
    assert (weak.eps_main.config.hidden < config.hidden) == small
    assert not np.array_equal(_eps(weak.main, weak.eps_main.config, mix), _eps(params, config, mix))


def test_cli_unknown_preset(capsys):
    assert main(["train", "--preset", "nope", "--steps", "1"]) == 2
    assert "error: unknown preset 'nope'; valid: three_blobs" in capsys.readouterr().err
