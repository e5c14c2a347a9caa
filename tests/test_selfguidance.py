"""Guidance without a condition in 2D (issue 7): the perturbed net and the SIMS net on learned scores."""

import jax
import numpy as np

import toydiff
from toydiff import checkpoint, denoisers, exact, nets, sims
from toydiff.scene import Scene, denoiser

MIX = toydiff.preset("three_blobs")


def test_skipping_a_layer_is_the_net_without_it():
    params, config, _ = checkpoint.load(checkpoint.pretrained_stem("three_blobs"), MIX)
    x = np.random.default_rng(0).normal(0, 2, (32, 2)).astype(np.float32)
    c = np.full(32, 3)
    got = nets.apply(params, config, x, 300.0, 0.4, c, skip=0)
    # by hand: drop hidden layer 0 from the parameters and apply the shorter net
    shorter = {**params, "hidden": params["hidden"][1:]}
    want = nets.apply(shorter, config, x, 300.0, 0.4, c)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert (
        np.abs(np.asarray(got) - np.asarray(nets.apply(params, config, x, 300.0, 0.4, c))).mean()
        > 1e-2
    )


def test_scene_denoisers_use_the_rules_weak_model():
    den = denoiser(Scene.from_dict({"method": "perturbed", "score": "learned"}), MIX)
    assert den.eps_weak.skip == 0 and den.eps_main.skip == -1 and den.weak is den.main
    den = denoiser(Scene.from_dict({"method": "autoguidance", "score": "learned"}), MIX)
    assert den.eps_weak.config.hidden == 32  # the shipped weak net


def test_self_mixture_keeps_samples_and_posterior_memberships():
    x = np.asarray(toydiff.mixtures.sample(jax.random.key(0), MIX, 300))
    fake = sims.self_mixture(MIX, np.concatenate([x, [[np.nan, 0.0]]]), bandwidth=0.1)
    assert fake.k == 300  # the non-finite sample is dropped before it becomes a component
    np.testing.assert_allclose(
        np.asarray(fake.membership).sum(0), 1.0, atol=1e-4
    )  # one-hot classes
    np.testing.assert_allclose(
        fake.membership[2], np.asarray(exact.posterior(MIX, x, 1.0, "C")), atol=1e-5
    )


def test_sims_net_is_a_fine_tuned_copy_that_moved():
    params, config, _ = checkpoint.load(checkpoint.pretrained_stem("three_blobs"), MIX)
    tuned = sims.sims_params(MIX, params, config, n=1000, steps=100)
    x = np.asarray(toydiff.mixtures.sample(jax.random.key(1), MIX, 500))
    c = np.full(500, 3)
    a = np.asarray(nets.apply(params, config, x, 100.0, 0.9, c))
    b = np.asarray(nets.apply(tuned, config, x, 100.0, 0.9, c))
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert 1e-4 < rel < 0.5, (
        rel
    )  # changed, but still the same model (fine-tuned, not re-initialised)
    den = denoisers.learned(MIX, params, config, tuned, config)
    assert den.weak is tuned
