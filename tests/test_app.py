"""AppTest: the Streamlit app renders every control, rule and preset, and reacts to γ as it should."""

from __future__ import annotations

import json
import pathlib

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import UnknownElement

from toydiff import PRESETS, RULES, fields, guidance, mixtures, sampler
from toydiff import scene as scene_mod

APP = str(pathlib.Path(__file__).resolve().parents[1] / "app.py")
SMALL = {"n": 100, "steps": 10}  # small shapes keep the sweeps fast


def _charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures by widget key suffix (traj.left, field.right, ...), decoded from the protos."""
    out, stack = {}, [at._tree]
    while stack:
        node = stack.pop()
        children = getattr(node, "children", None)
        stack.extend(children.values() if isinstance(children, dict) else [])
        if isinstance(node, UnknownElement) and node.type == "plotly_chart":
            spec = json.loads(node.proto.spec)
            out[node.proto.id.split("-", 2)[-1]] = spec  # the id ends with the chart's key
    return out


def _table(at: AppTest) -> dict[str, list[str]]:
    """The metrics markdown table as {metric label: [cell per column]}."""
    text = next(m.value for m in at.markdown if m.value.startswith("| metric"))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]]
    return {r[0]: r[1:] for r in rows}


def _num(cell: str) -> float:
    text = cell.replace("**", "").replace("✓", "").strip()
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def _start(**values) -> AppTest:
    """A fresh app run with sidebar widgets set by key (values applied before the first run)."""
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in values.items():
        at.session_state[key] = value
    return at.run()


def _ok(at: AppTest):
    assert not at.exception, [e.message for e in at.exception]


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


def test_default_view_shows_ncfg_against_ccfg():
    at = _start()
    _ok(at)
    assert at.selectbox(key="left.method").value == "ncfg"
    assert at.selectbox(key="right.method").value == "ccfg"
    assert at.select_slider(key="left.ncfg.gamma").value == 2.0
    assert at.select_slider(key="right.ccfg.tau").value == 1.0
    charts = _charts(at)
    assert set(charts) >= {"traj.left", "traj.right", "field.left", "field.right", "weights.left",
                           "outcome.right"}
    left, right = charts["traj.left"], charts["traj.right"]
    assert 1 < len(left["frames"]) <= 50
    frame_x = left["frames"][0]["data"][0]["x"]
    assert frame_x["dtype"] == "f4"  # float32 typed arrays, not JSON number lists
    assert left["layout"]["xaxis"]["range"] == right["layout"]["xaxis"]["range"]
    assert left["layout"]["xaxis"]["autorange"] is False
    table = _table(at)
    off = [_num(c) for c in table["off-support rate"]]
    assert off[0] > 0.8 and off[1] < 0.1, off  # nCFG leaves the data, CCFG stays on it
    assert "✓" in table["off-support rate"][1]
    assert all(_num(c) < 0.1 for c in table["leakage (p(n∣x) > ½)"])


def test_every_control_has_help_and_reruns_without_error():
    at = _start(**SMALL)
    _ok(at)
    widgets = [*at.sidebar.selectbox, *at.sidebar.slider, *at.sidebar.select_slider,
               *at.sidebar.number_input, *at.sidebar.radio]
    assert len(widgets) >= 14
    assert all(w.help for w in widgets), [w.label for w in widgets if not w.help]
    changes = [
        (at.selectbox(key="positive.three_blobs"), "A"), (at.selectbox(key="negative.three_blobs"), "B"),
        (at.radio(key="score"), "weak"), (at.slider(key="delta"), 0.6), (at.slider(key="eta"), 1.0),
        (at.slider(key="steps"), 15), (at.select_slider(key="n"), 250), (at.number_input(key="seed"), 7),
        (at.select_slider(key="left.ncfg.gamma"), 5.0), (at.select_slider(key="right.ccfg.gamma"), 0.5),
        (at.select_slider(key="right.ccfg.tau"), 0.1), (at.slider(key="left.ncfg.interval"), (200, 800)),
        (at.slider(key="field_t"), 100), (at.selectbox(key="field_heat"), "lam_neg"),
        (at.checkbox(key="show.uncond"), True), (at.checkbox(key="show.neg"), True),
        (at.checkbox(key="show.step"), True), (at.toggle(key="trails"), True),
        (at.selectbox(key="preset"), "ring"),
    ]
    for widget, value in changes:
        widget.set_value(value).run()
        _ok(at)
        assert not at.error, (widget.key, [e.value for e in at.error])
    assert len(_charts(at)["traj.left"]["data"]) == 7  # 2 background + trails + points + 3 legend


@pytest.mark.parametrize("name", RULES)
def test_every_rule_renders_or_explains(name):
    at = _start(**SMALL, **{"left.method": name})
    _ok(at)
    if guidance.needs_positive(RULES[name]):  # three_blobs has no default positive concept
        assert any("needs a positive concept" in i.value for i in at.info)
        at.selectbox(key="positive.three_blobs").set_value("A").run()
        _ok(at)
    assert not at.error and "traj.left" in _charts(at)
    for pname, param in RULES[name].all_params.items():  # every generated parameter widget works
        widget = at.select_slider(key=f"left.{name}.{pname}") if param.log or pname == "gamma" else \
            at.slider(key=f"left.{name}.{pname}")
        assert widget.help
        widget.set_value(float(param.hi)).run()
        _ok(at)
        assert not at.error, (pname, [e.value for e in at.error])


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_renders(preset):
    at = _start(**SMALL, preset=preset)
    _ok(at)
    assert not at.error and {"traj.left", "traj.right"} <= set(_charts(at))
    lim = fields.extent(mixtures.preset(preset))
    lo, hi = _charts(at)["traj.left"]["layout"]["xaxis"]["range"]
    assert lo == -hi and lim <= hi <= 4 * lim  # the data's extent, widened for far-flung samples
    assert _charts(at)["traj.right"]["layout"]["xaxis"]["range"] == [lo, hi]


@pytest.mark.slow  # ~1–2 min per preset (a compile per rule × shape); run with -m slow
@pytest.mark.parametrize("preset", PRESETS)
def test_rule_preset_score_sweep(preset):
    """Every rule on every preset with exact and learned scores: renders, or says why not."""
    info = mixtures.preset_info(preset)
    concepts = mixtures.preset(preset).concepts
    positive = info.positive or next(c for c in concepts if c != info.negative)
    at = _start(**SMALL, preset=preset, **{f"positive.{preset}": positive})
    names = list(RULES)
    for score in ("exact", "learned"):
        at.radio(key="score").set_value(score).run()
        for left, right in zip(names[::2], names[1::2]):
            at.selectbox(key="left.method").set_value(left)
            at.selectbox(key="right.method").set_value(right).run()
            _ok(at)
            assert not at.error, (preset, score, left, right, [e.value for e in at.error])
            assert {"traj.left", "traj.right"} <= set(_charts(at))
        if score == "learned":  # weights present: no warning; missing: a warning and the exact oracle
            try:
                scene_mod.denoiser(scene_mod.Scene(preset=preset, score="learned"), mixtures.preset(preset))
                assert not at.warning
            except (ImportError, ValueError, OSError):
                assert any("exact oracle" in w.value for w in at.warning)


def test_ncfg_gamma_lowers_leakage_and_raises_off_support():
    at = _start(**{"left.ncfg.gamma": 0.5, "right.method": "ncfg", "right.ncfg.gamma": 3.0})
    _ok(at)
    table = _table(at)
    leak = [_num(c) for c in table["leakage (p(n∣x) > ½)"]]
    off = [_num(c) for c in table["off-support rate"]]
    assert leak[1] < leak[0] and off[1] > off[0], (leak, off)


def test_ccfg_tau_attenuates_the_negative_weight():
    """Larger τ: λ⁻ = 2σ(−τ‖Δ_n‖²) is smaller, so the mean weight curve drops."""
    at = _start(**SMALL, **{"left.method": "ccfg", "left.ccfg.tau": 0.1, "right.ccfg.tau": 5.0})
    _ok(at)
    charts = _charts(at)
    mean = lambda side: _decode(charts[f"weights.{side}"]["data"][1]["y"]).mean()
    assert mean("right") < mean("left")


def _decode(arr):
    import base64

    import numpy as np

    return np.frombuffer(base64.b64decode(arr["bdata"]), np.dtype(arr["dtype"]))


def test_no_recompile_when_knobs_change():
    at = _start()
    _ok(at)
    sizes = sampler.sample._cache_size(), fields.field._cache_size()
    for key, value in [("left.ncfg.gamma", 3.0), ("right.ccfg.tau", 0.5), ("right.ccfg.gamma", 4.0),
                       ("eta", 0.5), ("seed", 3), ("field_t", 250)]:
        widget = next(w for w in [*at.select_slider, *at.slider, *at.number_input] if w.key == key)
        widget.set_value(value).run()
        _ok(at)
    assert (sampler.sample._cache_size(), fields.field._cache_size()) == sizes


def test_user_errors_show_messages_not_exceptions():
    at = _start(**SMALL)
    at.selectbox(key="positive.three_blobs").set_value("C").run()  # positive == negative
    _ok(at)
    assert len(at.error) == 2 and "different" in at.error[0].value
    at.selectbox(key="positive.three_blobs").select_index(0)  # index 0 = "— none —"
    at.selectbox(key="negative.three_blobs").select_index(0).run()  # nCFG without a negative
    _ok(at)
    assert any("needs a negative concept" in i.value for i in at.info)
    at.selectbox(key="negative.three_blobs").set_value("C")
    at.number_input(key="seed").set_value(-5).run()  # out of range: a message, not a crash
    _ok(at)
    seed = at.number_input(key="seed").value  # Streamlit may clamp it; else the scene names the key
    assert (at.error and "seed" in at.error[0].value) or (seed >= 0 and "traj.left" in _charts(at))


def test_corrupt_checkpoint_warns_and_falls_back(monkeypatch):
    exact = scene_mod.denoiser

    def broken(scene, mix):
        if scene.score != "exact":
            raise ValueError("checkpoint three_blobs.safetensors: corrupt header")
        return exact(scene, mix)

    monkeypatch.setattr(scene_mod, "denoiser", broken)
    at = _start(**SMALL, score="learned")
    _ok(at)
    assert len(at.warning) == 2 and "corrupt header" in at.warning[0].value
    assert "exact oracle" in at.warning[0].value and not at.error
    assert {"traj.left", "traj.right"} <= set(_charts(at))
