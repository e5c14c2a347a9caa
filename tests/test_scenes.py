"""Curated scenes and the URL query encoding: exact round trips, and hostile queries never raise."""

from __future__ import annotations

import json
import random

import pytest

from toydiff import guidance, scenes
from toydiff.scene import Scene

SIDES = scenes.SIDES


def test_at_least_six_curated_scenes_with_two_sentence_captions():
    assert len(scenes.CURATED) >= 6 and len(set(scenes.NAMES)) == len(scenes.NAMES)
    for c in scenes.CURATED:
        pair = c.scenes()  # valid scenes
        assert set(pair) == set(SIDES) and pair["left"] != pair["right"], c.name
        sentences = [s for s in c.caption.replace("e.g.", "eg").split(". ") if s.strip()]
        assert 2 <= len(sentences) <= 3, (c.name, sentences)
        assert c.name.isidentifier() and c.name == c.name.lower()


@pytest.mark.parametrize("name", scenes.NAMES)
def test_curated_query_round_trip(name):
    pair = scenes.curated(name).scenes()
    query = scenes.encode_query(pair)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in query.items())
    assert scenes.decode_query(query).scenes == pair
    by_name = scenes.decode_query({"scene": name})
    assert by_name.scenes == pair and by_name.curated == name and not by_name.warnings


def _random_scene(rng: random.Random) -> Scene:
    method = rng.choice(list(guidance.RULES))
    rule = guidance.rule(method)
    d = {
        "preset": "grid",
        "method": method,
        "positive": "row1" if rng.random() < 0.5 else None,
        "negative": rng.choice(["col2", "col0", None]),
        "seed": rng.randrange(2**31),
        "n": rng.randrange(1, 5000),
        "steps": rng.randrange(1, 300),
        "eta": rng.random(),
        "t": float(rng.randrange(999)),
        "t_lo": float(rng.randrange(400)),
        "t_hi": float(rng.randrange(500, 1000)),
        "schedule": rng.choice(["linear", "cosine"]),
        "delta": rng.random() * 2,
        "weak": rng.choice([None, "shipped", "small", "short", "blur"]),
    }
    if guidance.needs_positive(rule):
        d["positive"] = "row1"
    if guidance.needs_negative(rule):
        d["negative"] = d["negative"] or "col2"
    if d["positive"] == d["negative"]:
        d["negative"] = None
    for name, p in rule.all_params.items():  # arbitrary floats: the encoding must keep every bit
        d[name] = rng.choice(p.choices) if p.choices else rng.uniform(p.lo, p.hi)
    if rule.state is None or rule.state.eta is None:  # a stochastic state needs ddim
        d["solver"] = rng.choice(["ddim", "heun", "euler", "flow_euler"])
    return Scene.from_dict(d)


def test_random_scene_pairs_round_trip_exactly():
    rng = random.Random(0)
    for _ in range(200):
        pair = {"left": _random_scene(rng), "right": _random_scene(rng)}
        if rng.random() < 0.3 and "gamma" in pair["left"].params:
            pair["right"] = pair["left"].replace(gamma=pair["left"].gamma / 2)
        decoded = scenes.decode_query(scenes.encode_query(pair))
        assert decoded.scenes == pair and not decoded.warnings


def test_inline_mixture_and_odd_concept_names_round_trip():
    mix = {
        "means": [[0, 0], [2, 1]],
        "covs": [[[1, 0], [0, 1]], [[0.5, 0.1], [0.1, 0.3]]],
        "weights": [1, 2],
        "membership": [[1, 0], [0, 1]],
        "concepts": ["null", "1"],
    }
    left = Scene.from_dict({"mixture": mix, "negative": "null", "method": "ncfg"})
    right = left.replace(method="ccfg", negative="1", positive="null")
    query = scenes.encode_query({"left": left, "right": right})
    assert query["left.negative"] == '"null"' and query["right.negative"] == '"1"'
    assert scenes.decode_query(query).scenes == {"left": left, "right": right}


@pytest.mark.parametrize(
    "query, key",
    [
        ({"gamma": "NaN"}, "gamma"),
        ({"left.gamma": "1e999"}, "gamma"),
        ({"steps": "2.5"}, "steps"),
        ({"method": "bogus"}, "method"),
        ({"bogus": "1"}, "bogus"),
        ({"middle.gamma": "1"}, "middle.gamma"),
        ({"scene": "nope"}, "scene"),
        ({"present": "maybe"}, "present"),
        ({"preset": "[1,2"}, "preset"),
        ({"mixture": '{"means": [[0,0]]'}, "mixture"),
        ({"negative": "Z"}, "Z"),
        ({"n": "-1"}, "n"),
        ({"seed": "true"}, "seed"),
        ({"gamma": ["1", "2"]}, "gamma"),
        ({"mixture": "[" * 5000}, "mixture"),
    ],
)
def test_bad_queries_warn_naming_the_key_and_fall_back(query, key):
    decoded = scenes.decode_query(query)
    assert decoded.warnings and any(key in w for w in decoded.warnings), decoded.warnings
    if (
        key not in ("bogus", "middle.gamma", "present", "gamma")
        or "NaN" in str(query)
        or "1e999" in str(query)
    ):
        assert decoded.scenes is None


def test_random_garbage_never_raises():
    rng = random.Random(1)
    atoms = [
        "gamma",
        "left.tau",
        "right.method",
        "scene",
        "present",
        "mixture",
        "n",
        "x",
        "",
        "é",
        "left.",
        ".gamma",
        "left.right.gamma",
    ]
    values = [
        "",
        "NaN",
        "-inf",
        "1e308",
        "99999999999999999999",
        "ncfg",
        "null",
        "[]",
        "{}",
        '{"a":',
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "\u202e\u0000",
        "🙂",
        "true",
        "[" * 300,
    ]
    for _ in range(500):
        query = {
            rng.choice(atoms) + rng.choice(["", "x"]): rng.choice(values)
            for _ in range(rng.randrange(1, 6))
        }
        decoded = scenes.decode_query(query)
        assert isinstance(decoded.warnings, list)
        assert decoded.scenes is None or set(decoded.scenes) == set(SIDES)


def test_huge_queries_are_refused_before_parsing():
    decoded = scenes.decode_query({"mixture": "1" * (scenes.MAX_QUERY_CHARS + 1)})
    assert decoded.scenes is None and "too long" in decoded.warnings[0]


def test_pair_json_round_trip_and_single_scene_files():
    pair = scenes.curated("temperature_tau").scenes()
    assert scenes.pair_from_json(scenes.pair_to_json(pair)) == pair
    one = pair["left"].to_json()  # a CLI scene file
    assert scenes.pair_from_json(one) == {"left": pair["left"], "right": pair["left"]}
    assert scenes.pair_from_json(one, "right") == {"right": pair["left"]}
    with pytest.raises(ValueError, match="right: gamma"):
        scenes.pair_from_json(json.dumps({"left": {}, "right": {"gamma": "x"}}))
    with pytest.raises(ValueError, match="scene JSON"):
        scenes.pair_from_json("{")
