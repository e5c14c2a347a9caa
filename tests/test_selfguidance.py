"""Guidance without a condition in 2D (issue 7): the perturbed net and the SIMS net on learned scores."""

import jax
import numpy as np
import pytest

import toydiff
from toydiff import checkpoint, denoisers, exact, nets, scenes, sims, train
from toydiff.scene import Scene, denoiser, run

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


# ------------------------------------------------------------- autoguidance's guides (Scene.weak)
MAIN_STEPS = train.TrainConfig().steps


@pytest.mark.parametrize("name", toydiff.PRESETS)
def test_guide_nets_follow_their_recipes_and_are_weaker_on_held_out_samples(name):
    mix = toydiff.preset(name)
    params, config, _ = checkpoint.load(checkpoint.pretrained_stem(name), mix)
    main_loss = train.heldout_loss(mix, params, config, n=50_000)
    for kind, recipe in train.weak_nets(name).items():
        weak, weak_config, meta = checkpoint.load(checkpoint.pretrained_stem(name, kind), mix)
        assert (weak_config.hidden < config.hidden) == recipe.small
        assert meta["steps"] == MAIN_STEPS // recipe.fraction  # steps actually trained
        assert meta["train"]["steps"] == (meta["steps"] if recipe.complete else MAIN_STEPS)
        # same held-out x_0, t and ε for every net: the gap is the nets', not sampling noise
        assert train.heldout_loss(mix, weak, weak_config, n=50_000) > main_loss * 1.003, kind


def test_stopping_early_is_the_longer_run_cut_short():
    cfg = train.TrainConfig(steps=16, batch=64, warmup=4, chunk=8)
    net_config = nets.NetConfig(3, hidden=8, depth=2)
    state, log = train.train(MIX, net_config, cfg, seed=3, progress=False, stop=5)
    # reference: five single steps of the 16-step schedule, keys as train() draws them
    init_key, train_key = jax.random.split(jax.random.key(3))
    ref, data = train.init_state(init_key, net_config, cfg), train.make_data(MIX)
    for i in range(5):
        ref, _ = train.train_step(ref, data, jax.random.fold_in(train_key, i), net_config, cfg)
    assert log["steps"] == 5 and int(state.step) == 5
    np.testing.assert_allclose(state.ema["out"]["w"], ref.ema["out"]["w"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "score, weak, main_kind, weak_kind",
    [
        ("learned", None, "main", "shipped"),
        ("learned", "small", "main", "small"),
        ("learned", "short", "main", "short"),
        ("learned", "blur", "main", "blur"),
        ("exact", None, "exact", "blur"),
        ("exact", "short", "exact", "short"),
        ("weak", "small", "small", "small"),
    ],
)
def test_scene_weak_key_picks_the_guide(score, weak, main_kind, weak_kind):
    scene = Scene.from_dict({"method": "autoguidance", "score": score, "weak": weak, "delta": 0.1})
    den = denoiser(scene, MIX)
    for model, params, kind in (("main", den.main, main_kind), ("weak", den.weak, weak_kind)):
        fn = getattr(den, f"eps_{model}")
        if kind in ("exact", "blur"):
            assert isinstance(fn, denoisers.ExactEps)
            assert float(params) == pytest.approx(0.1 if kind == "blur" else 0.0)
        else:
            stem = checkpoint.pretrained_stem("three_blobs", None if kind == "main" else kind)
            want, config, _ = checkpoint.load(stem, MIX)
            assert fn.config == config
            np.testing.assert_array_equal(params["out"]["w"], want["out"]["w"])


def test_weak_key_round_trips_through_json_and_the_url():
    scene = Scene.from_dict({"preset": "tree", "positive": "A", "method": "autoguidance"})
    for weak in (None, "shipped", "small", "short", "blur"):
        s = scene.replace(weak=weak)
        assert Scene.from_json(s.to_json()) == s
        query = scenes.encode_query({"left": scene, "right": s})
        assert ("right.weak" in query) == (weak is not None)
        assert scenes.decode_query(query).scenes == {"left": scene, "right": s}


def test_guide_nets_sample_and_autoguidance_differs_by_guide():
    base = {"preset": "tree", "positive": "A", "negative": None, "method": "autoguidance"}
    base |= {"score": "learned", "n": 256, "steps": 20, "gamma": 3.0}
    x = {w: np.asarray(run(Scene.from_dict({**base, "weak": w}))[0].x0) for w in ("small", "short")}
    assert all(np.isfinite(v).all() for v in x.values())
    assert np.abs(x["small"] - x["short"]).mean() > 1e-3  # same noise: only the guide differs
