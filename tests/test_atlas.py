"""The method atlas: a row per registered rule, links that decode to scenes running that rule."""

from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest

from toydiff import atlas, guidance, scenes
from toydiff.scene import run

ROWS = {row.name: row for row in atlas.rows()}


def _decode(link: str):
    decoded = scenes.decode_query(dict(parse_qsl(urlsplit(link).query)))
    assert not decoded.warnings, decoded.warnings
    return decoded.scenes


def test_every_rule_and_image_method_has_one_row():
    names = [row.name for row in atlas.rows()]
    assert len(names) == len(set(names))
    assert set(guidance.RULES) <= set(names)
    assert {m.name for m in atlas.IMAGE_METHODS} <= set(names)


@pytest.mark.parametrize("name", guidance.RULES)
def test_rule_link_decodes_to_a_scene_of_that_rule_that_runs(name):
    pair = _decode(atlas.link(ROWS[name]))
    assert pair["right"].method == name and pair["left"].method == "none"
    result, m = run(pair["right"].replace(n=64, steps=10))
    assert np.isfinite(np.asarray(result.x0)).all() and np.isfinite(m["off_support"])


@pytest.mark.parametrize("name", guidance.RULES)
def test_row_is_read_off_the_registry(name):
    r, row = guidance.RULES[name], ROWS[name]
    assert row.label == r.label and row.formula in " ".join(r.fn.__doc__.split()).replace("`", "")
    assert (row.condition == "yes") == (
        guidance.needs_positive(r) or guidance.needs_negative(r) or "rand" in r.branches
    )
    assert ("digits" in row.where) == atlas.runs_on_images(r)


def test_runs_on_images_agrees_with_the_bridge():
    loop = pytest.importorskip("toydiff.bridge.loop")  # torch is an optional extra
    for name, r in guidance.RULES.items():
        try:
            loop.bridge_rule(name)
            ok = True
        except ValueError:
            ok = False
        assert atlas.runs_on_images(r) == ok, name


def test_interval_and_image_rows_link_to_their_2d_scenes():
    pair = _decode(atlas.link(ROWS["interval"]))
    assert (
        pair["right"].t_lo == 200.0
        and pair["left"].replace(t_lo=200.0, t_hi=800.0) == pair["right"]
    )
    for m in atlas.IMAGE_METHODS:
        assert _decode(atlas.link(ROWS[m.name]))["right"].method == "perturbed"


def test_table_has_a_row_per_method_and_seven_cells_each():
    lines = atlas.table("http://host/app").splitlines()
    assert len(lines) == 2 + len(ROWS)
    for line in lines:  # an unescaped | (e.g. in p(n | x_t)) would add a cell
        assert line.replace("\\|", "").count("|") == 10, line
    assert all("](http://host/app?" in line for line in lines[2:])


def test_evaluations_per_step_are_the_conventions_of_math():
    """MATH §3.3 'Conventions': the SD negative prompt takes 2 evaluations per step, nCFG, CCFG and
    DNG 3 with a positive concept, Perp-Neg 3, SLD 3; CFG 2 and autoguidance 2 (main and weak)."""
    with_pos = {"sd_negative": 2, "ncfg": 3, "ccfg": 3, "dng": 3, "perp_neg": 3, "sld": 3}
    for name, n in {**with_pos, "cfg": 2, "autoguidance": 2, "none": 1}.items():
        text = ROWS[name].evals
        got = int(text[0]) + (1 if name in with_pos and "+1 with a positive" in text else 0)
        assert got == n, (name, text)
    assert "γ = w + 1" in ROWS["cfg"].scale and "γ − 1" in ROWS["sd_negative"].scale
    table = atlas.table()
    assert "| Evaluations / step | Scale vs CFG's γ |" in table
    assert table.count("\n") == len(atlas.rows()) + 2
