"""Scene validation (one-line errors naming the key), JSON round trip and the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest

from toydiff import guidance
from toydiff.scene import Scene


def test_round_trip_is_exact():
    scene = Scene.from_dict({"preset": "ring", "method": "dng", "gamma": 4.0, "seed": 3})
    assert Scene.from_json(scene.to_json()) == scene
    assert scene.negative == "odd"  # the preset's default negative fills an absent key


def test_knobs_hold_exactly_the_rule_parameters_as_floats():
    for name, rule in guidance.RULES.items():
        pos = "row1" if guidance.needs_positive(rule) else None
        gamma = {"gamma": 2} if "gamma" in rule.all_params else {}
        scene = Scene.from_dict({"preset": "grid", "method": name, "positive": pos, **gamma})
        knobs = scene.knobs()
        common = {"eta", "t_lo", "t_hi", "g_schedule", "g_late", "t_switch"}
        assert set(knobs) == set(rule.all_params) | common
        assert all(type(v) is float for v in knobs.values())
        assert knobs.get("gamma", 2.0) == 2.0


INLINE = {
    "means": [[0, 0], [3, 0]],
    "covs": [[[1, 0], [0, 1]], [[1, 0], [0, 1]]],
    "weights": [1, 1],
    "membership": [[1, 0], [0, 1]],
    "concepts": ["left", "right"],
}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"gama": 1}, "scene: unknown key 'gama'"),
        ({"preset": "blobs"}, "unknown preset 'blobs'; valid: three_blobs"),
        ({"method": "nfcg"}, "unknown method 'nfcg'; valid: none, cfg"),
        ({"negative": "D"}, "unknown concept 'D'; valid: A, B, C"),
        ({"method": "cfg"}, "method 'cfg' needs a positive concept (key 'positive')"),
        ({"gamma": 50}, "gamma: 50.0 is outside [0.0, 20.0]"),
        ({"gamma": "big"}, "gamma: expected a number, got 'big'"),
        ({"gamma": True}, "gamma: expected a number, got True"),
        ({"tau": float("nan")}, "tau: must be finite"),
        ({"steps": 2.5}, "steps: expected an integer, got 2.5"),
        ({"steps": 0}, "steps: 0 is outside [1, 1000]"),
        ({"n": 10**7}, "n: 10000000 is outside"),
        ({"eta": -0.1}, "eta: -0.1 is outside [0.0, 1.0]"),
        ({"score": "magic"}, "score: 'magic' is not one of exact, learned, weak"),
        ({"weak": "tiny"}, "weak: 'tiny' is not one of shipped, small, short, blur"),
        ({"weak": 3}, "weak: expected a string, got 3"),
        ({"schedule": "sqrt"}, "unknown schedule 'sqrt'; valid: linear, cosine"),
        ({"t_lo": 600, "t_hi": 400}, "t_lo: 600.0 is above t_hi = 400.0"),
        (
            {"positive": "A", "negative": "A", "method": "ccfg"},
            "positive and negative must be different",
        ),
        (
            {"mixture": {**INLINE, "weights": [1]}, "negative": "left"},
            "mixture.weights: shape (2,)",
        ),
        (
            {"mixture": {**INLINE, "covs": [[[1, 2], [2, 1]]] * 2}, "negative": "left"},
            "mixture.covs: must be",
        ),
        (
            {"mixture": {"means": [[0, 0]]}},
            "mixture: missing ['covs', 'weights', 'membership', 'concepts']",
        ),
        (
            {"mixture": INLINE, "preset": "ring"},
            "scene: give exactly one of 'preset' and 'mixture'",
        ),
        ([1, 2], "scene: expected a JSON object, got list"),
        ({"rotate": float("inf")}, "rotate: must be finite, got inf"),
        ({"rotate": "45"}, "rotate: expected a number, got '45'"),
        ({"rotate": 400}, "rotate: 400.0 is outside [-360.0, 360.0]"),
    ],
)
def test_bad_scenes_give_one_line_errors_naming_the_key(data, message):
    with pytest.raises(ValueError) as e:
        Scene.from_dict(data)
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_malformed_json_names_line_and_column():
    with pytest.raises(
        ValueError, match="scene JSON: Expecting ',' delimiter at line 1, column 19"
    ):
        Scene.from_json('{"preset": "ring" "x"}')


def test_inline_mixture_runs_with_exact_metrics():
    from toydiff.scene import run

    scene = Scene.from_dict(
        {
            "mixture": INLINE,
            "negative": "left",
            "method": "ccfg",
            "gamma": 3.0,
            "tau": 1.0,
            "n": 500,
            "steps": 30,
        }
    )
    result, m = run(scene)
    assert result.x0.shape == (500, 2) and m["n"] == 500
    # independent check of the hard leakage: samples nearer the 'left' mean than the 'right' one
    x = np.asarray(result.x0)
    assert abs(m["leakage_hard"] - np.mean(x[:, 0] < 1.5)) < 0.01


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "toydiff", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_cli_metrics_json_equals_the_library(tmp_path):
    from toydiff.scene import run

    scene = {"preset": "three_blobs", "method": "ncfg", "gamma": 1.0, "n": 500}
    (tmp_path / "s.json").write_text(json.dumps(scene))
    out = cli("metrics", "--scene", str(tmp_path / "s.json"), "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    _, want = run(Scene.from_dict(scene))
    for k in ("leakage", "leakage_hard", "off_support", "nll", "energy", "diverged"):
        assert got[k] == pytest.approx(want[k], rel=1e-5), k
    assert got["alignment"] is None  # NaN (no positive concept) is written as JSON null


def test_cli_render_writes_an_image(tmp_path):
    (tmp_path / "s.json").write_text('{"preset": "ring", "n": 300, "steps": 20}')
    out = cli("render", "--scene", str(tmp_path / "s.json"), "--out", str(tmp_path / "a.png"))
    assert out.returncode == 0, out.stderr
    from PIL import Image

    assert Image.open(tmp_path / "a.png").size[0] >= 400


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "error: --scene: cannot read"),
        ('{"preset": 3}', "error: preset: expected a string, got 3"),
        ('{"method": "ccfg",', "error: scene JSON: Expecting"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(tmp_path, content, message):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    out = cli("metrics", "--scene", str(path))
    assert out.returncode == 2 and out.stderr.startswith(message), out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1


def test_knob_defaults_come_from_the_registry_and_foreign_knobs_are_refused():
    """Issue 'Open seams': {"method": "dng"} runs at DNG's registry γ (5), not a Scene-wide 3; a knob
    the rule lacks is refused with a message listing the rule's knobs; JSON keeps flat keys."""
    for name, rule in guidance.RULES.items():
        pos = "row1" if guidance.needs_positive(rule) else None
        scene = Scene.from_dict({"preset": "grid", "method": name, "positive": pos})
        assert scene.params == {k: p.initial for k, p in rule.all_params.items()}
    assert (
        Scene.from_dict({"method": "dng"}).gamma
        == guidance.rule("dng").params["gamma"].default
        == 5.0
    )
    with pytest.raises(ValueError, match=r"tau: not a knob of 'ncfg'; its knobs: gamma"):
        Scene.from_dict({"method": "ncfg", "tau": 1.0})
    s = Scene.from_dict({"method": "ccfg", "tau": 0.25, "tau_schedule": "kernel"})
    assert s.to_dict()["tau"] == 0.25 and "params" not in s.to_dict()
    assert Scene.from_json(s.to_json()) == s
    assert s.replace(method="ncfg").params == {"gamma": 3.0}  # a new rule keeps what it shares


# ------------------------------------------------------------------------ rotate: the turned plane
def _turn(degrees: float) -> np.ndarray:
    """R of a counter-clockwise turn, written out here (float64), not toydiff's."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s], [s, c]])


def test_rotate_turns_the_mixture_and_exact_scores_equal_the_inline_turned_mixture():
    from toydiff import exact, mixtures
    from toydiff.scene import run

    base = dict(negative="C", method="ccfg", gamma=3.0, tau=5.0, n=300, steps=20)
    turned = Scene.from_dict({**base, "preset": "three_blobs", "rotate": 45.0})
    blobs = mixtures.preset("three_blobs")
    rot = _turn(45.0)
    mix = turned.build_mixture()
    np.testing.assert_allclose(mix.means, np.asarray(blobs.means) @ rot.T, atol=1e-6)
    np.testing.assert_allclose(mix.covs, rot @ np.asarray(blobs.covs) @ rot.T, atol=1e-6)
    x = np.random.default_rng(0).normal(0, 3, (64, 2)).astype(np.float32)  # p_R(x) = p(Rᵀx)
    np.testing.assert_allclose(
        exact.log_prob(mix, x), exact.log_prob(blobs, (x @ rot).astype(np.float32)), atol=1e-4
    )
    inline = Scene.from_dict({**base, "mixture": mixtures.rotated(blobs, 45.0).to_dict()})
    (r1, m1), (r2, m2) = run(turned), run(inline)
    np.testing.assert_array_equal(np.asarray(r1.x0), np.asarray(r2.x0))
    assert m1["leakage_hard"] == m2["leakage_hard"] and m1["energy"] == m2["energy"]


@pytest.mark.parametrize(
    "method, branch", [("ccfg", "neg"), ("autoguidance", "weak"), ("perturbed", "weak")]
)
def test_learned_turned_denoiser_is_the_net_asked_in_its_frame(method, branch):
    """Every branch of the turned denoiser is R ε(Rᵀx) of the unturned scene's (main nets, the
    guide net, the net minus a layer), on random points, times and concepts."""
    import jax.numpy as jnp

    from toydiff import denoisers
    from toydiff.scene import denoiser

    keys = {"preset": "three_blobs", "method": method, "score": "learned", "positive": None}
    keys["negative"] = "C" if method == "ccfg" else None
    turned = Scene.from_dict({**keys, "rotate": -30.0})
    plain = Scene.from_dict(keys)
    den_r = denoiser(turned, turned.build_mixture())
    den = denoiser(plain, plain.build_mixture())
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (200, 2)).astype(np.float32)
    ab = rng.uniform(0.01, 0.99, 200).astype(np.float32)
    concepts = jnp.asarray(rng.integers(0, 4, (2, 200)))  # 3 = the null concept
    models = ("main", denoisers.BRANCH_MODELS[branch])
    rot = _turn(-30.0)
    got = np.asarray(denoisers.eval_branches(den_r, models, x, 500.0, ab, concepts))
    asked = np.asarray(
        denoisers.eval_branches(den, models, (x @ rot).astype(np.float32), 500.0, ab, concepts)
    )
    want = asked.astype(np.float64) @ rot.T
    assert np.abs(want).max() > 0.1  # the nets say something
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)
    # its exact mixture (DNG's oracle, the metrics) is the turned one
    np.testing.assert_allclose(den_r.mix.means, np.asarray(den.mix.means) @ rot.T, atol=1e-6)


def test_a_new_angle_does_not_recompile():
    import jax

    from toydiff import sampler
    from toydiff.scene import denoiser

    def sample(degrees):
        s = Scene.from_dict(
            dict(preset="three_blobs", score="learned", rotate=degrees, n=64, steps=7)
        )
        mix = s.build_mixture()
        out = sampler.sample(
            s.sampler_config(), denoiser(s, mix), jax.random.key(0), s.cond(mix), s.knobs()
        )
        return np.asarray(out.x0)

    first = sample(45.0)
    size = sampler.sample._cache_size()
    second = sample(30.0)
    assert sampler.sample._cache_size() == size  # the angle is traced (the params' R)
    # 15° apart: the samples turn by 15° with the nets (the noise x_T does not turn)
    assert not np.allclose(first, second)


def test_rotate_is_in_scene_json_and_links():
    from toydiff import scenes

    scene = Scene.from_dict({"preset": "three_blobs", "rotate": 45, "method": "sld"})
    assert scene.rotate == 45.0 and json.loads(scene.to_json())["rotate"] == 45.0
    assert Scene.from_json(scene.to_json()) == scene
    query = scenes.encode_query({"left": scene, "right": scene.replace(method="ccfg")})
    assert query["rotate"] == "45"
    assert scenes.decode_query(query).scenes["left"] == scene
    assert "rotate" not in scenes.encode_query({side: Scene() for side in scenes.SIDES})
