"""AppTest: the Streamlit app renders every control, rule and preset, and reacts to γ as it should."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import tempfile
import time

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import UnknownElement

from toydiff import PRESETS, RULES, fields, guidance, mixtures, sampler
from toydiff import metrics as metrics_mod
from toydiff import scene as scene_mod
from toydiff.viz import plots
from ui import chart, training

APP = str(pathlib.Path(__file__).resolve().parents[1] / "app.py")
SMALL = {"n": 100, "steps": 10}  # small shapes keep the sweeps fast


def _charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures by key (traj.left, field.right, ...), decoded from the protos: st.plotly_chart
    elements and the app's in-place chart component (ui.chart)."""
    out, stack = {}, [at._tree]
    while stack:
        node = stack.pop()
        children = getattr(node, "children", None)
        stack.extend(children.values() if isinstance(children, dict) else [])
        if isinstance(node, UnknownElement) and node.type == "plotly_chart":
            spec = json.loads(node.proto.spec)
        elif isinstance(node, UnknownElement) and node.type == "bidi_component":
            if not node.proto.bytes:  # ui.chart.preload: no figure
                continue
            spec = chart.figure_of(node.proto.bytes)
        else:
            continue
        out[node.proto.id.split("-", 2)[-1]] = spec  # the id ends with the chart's key
    return out


def _assert_bundled(at: AppTest):
    """Every trace (and animation frame trace) of the app's in-place charts has a type that the
    app's plotly.js bundle registers (ui/plotly_bundle/entry.js): an unregistered type draws
    nothing. st.plotly_chart elements use Streamlit's full plotly.js and are not checked."""
    entry = (pathlib.Path(APP).parent / "ui" / "plotly_bundle" / "entry.js").read_text()
    bundled = {"scatter", *re.findall(r"require\('plotly\.js/lib/(\w+)'\)", entry)} - {"core"}
    seen = set()
    for node in at.get("bidi_component"):
        if node.proto.bytes:
            fig = chart.figure_of(node.proto.bytes)
            traces = fig["data"] + [t for f in fig.get("frames", []) for t in f["data"]]
            seen |= {t.get("type", "scatter") for t in traces}
    assert seen and seen <= bundled, seen - bundled


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
    assert set(charts) >= {
        "traj.left",
        "traj.right",
        "field.left",
        "field.right",
        "weights.left",
        "outcome.right",
    }
    left, right = charts["traj.left"], charts["traj.right"]
    assert len(left["frames"]) == 51  # every state x_T … x_0 of the 50 steps
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
    widgets = [
        *at.selectbox,
        *at.slider,
        *at.select_slider,
        *at.number_input,
        *at.radio,
        *at.pills,
    ]
    assert len(widgets) >= 15
    assert all(w.help for w in widgets), [w.label for w in widgets if not w.help]
    changes = [
        (at.selectbox(key="positive.three_blobs"), "A"),
        (at.selectbox(key="negative.three_blobs"), "B"),
        (at.radio(key="score"), "weak"),
        (at.slider(key="delta"), 0.6),
        (at.slider(key="eta"), 1.0),
        (at.slider(key="steps"), 15),
        (at.select_slider(key="n"), 250),
        (at.number_input(key="seed"), 7),
        (at.select_slider(key="left.ncfg.gamma"), 5.0),
        (at.select_slider(key="right.ccfg.gamma"), 0.5),
        (at.select_slider(key="right.ccfg.tau"), 0.1),
        (at.slider(key="left.ncfg.interval"), (200, 800)),
        (at.slider(key="field_t"), 100),
        (at.selectbox(key="field_heat"), "lam_neg"),
        (at.pills(key="show"), ["uncond", "neg", "step", "guided"]),
        (at.toggle(key="trails"), True),
        (at.selectbox(key="preset"), "ring"),
    ]
    for widget, value in changes:
        widget.set_value(value).run()
        _ok(at)
        assert not at.error, (widget.key, [e.value for e in at.error])
    charts = _charts(at)
    arrows = {s["legendgroup"] for s in charts["field.left"]["layout"]["shapes"]}
    assert arrows == {plots.FIELD_LABELS[k] for k in ("uncond", "neg", "step", "guided")}
    traj = charts["traj.left"]
    assert len(traj["data"]) == 6  # region edge + trails + points + 3 legend
    _assert_bundled(at)
    assert len(traj["layout"]["images"]) == 1  # density and negative region, one raster


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
        key = f"left.{name}.{pname}"
        if param.choices:  # a choice knob: a selectbox of its names, the last one set
            widget = at.selectbox(key=key)
            assert widget.help and tuple(widget.options) == param.choices
            widget.set_value(param.choices[-1]).run()
            _ok(at)
            assert not at.error, (pname, [e.value for e in at.error])
            continue
        widget = at.select_slider(key=key) if param.log or pname == "gamma" else at.slider(key=key)
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
        if (
            score == "learned"
        ):  # weights present: no warning; missing: a warning and the exact oracle
            try:
                scene_mod.denoiser(
                    scene_mod.Scene(preset=preset, score="learned"), mixtures.preset(preset)
                )
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
    for key, value in [
        ("left.ncfg.gamma", 3.0),
        ("right.ccfg.tau", 0.5),
        ("right.ccfg.gamma", 4.0),
        ("eta", 0.5),
        ("seed", 3),
        ("field_t", 250),
    ]:
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


# ------------------------------------------------------------------------------------ lecture mode
def _query(query: dict, **values) -> AppTest:
    """A fresh app run opened with a URL query (and optional widget values)."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update(query)
    for key, value in values.items():
        at.session_state[key] = value
    return at.run()


def test_guide_selector_shows_its_default_entry_for_a_scene_without_a_guide():
    """A scene without `weak` selects the 'default' entry (a None state showed no selection)."""
    at = _query({"scene": "autoguidance_tree"})
    _ok(at)
    assert at.selectbox(key="weak").value == "default"
    assert "weak" not in at.query_params  # the scene keeps weak = None: no key in the link
    at.selectbox(key="weak").set_value("short").run()
    _ok(at)
    assert at.query_params["weak"] in ("short", ["short"])


def test_curated_scene_link_sets_every_widget_and_keeps_its_short_link():
    from toydiff import scenes

    at = _query({"scene": "temperature_tau"})
    _ok(at)
    assert at.title[0].value == "The temperature τ" and not at.warning
    assert at.selectbox(key="left.method").value == at.selectbox(key="right.method").value == "ccfg"
    assert (
        at.select_slider(key="left.ccfg.tau").value == 0.01
        and at.select_slider(key="right.ccfg.tau").value == 10
    )
    assert at.selectbox(key="field_heat").value == "lam_neg"
    assert (
        at.query_params["scene"] == ["temperature_tau"]
        or at.query_params["scene"] == "temperature_tau"
    )
    off = [_num(c) for c in _table(at)["off-support rate"]]
    assert off[0] > 0.9 and off[1] < 0.05, off  # τ → 0 is nCFG, large τ barely guides
    at.select_slider(key="right.ccfg.tau").set_value(
        5.0
    ).run()  # changed: the full query replaces ?scene=
    _ok(at)
    decoded = scenes.decode_query(dict(at.query_params))
    assert (
        decoded.scenes["right"].tau == 5.0
        and decoded.scenes["left"].tau == 0.01
        and not decoded.warnings
    )


@pytest.mark.parametrize(
    "query, key",
    [
        ({"gamma": "nan"}, "gamma"),
        ({"left.method": "bogus"}, "method"),
        ({"wat": "1"}, "wat"),
        ({"mixture": '{"means": [['}, "mixture"),
        ({"scene": "nope"}, "scene"),
        ({"n": "1e9"}, "n"),
    ],
)
def test_bad_links_warn_naming_the_key_and_show_the_default(query, key):
    at = _query(query)
    _ok(at)
    assert any(key in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.selectbox(key="left.method").value == "ncfg" and "traj.left" in _charts(at)


def test_link_with_any_values_reproduces_them():
    at = _query(
        {
            "preset": "ring",
            "negative": "odd",
            "positive": "null",
            "left.method": "ccfg",
            "left.gamma": "2.37",
            "left.tau": "0.123",
            "right.method": "ncfg",
            "gamma": "1.5",
            "seed": "11",
            "n": "300",
            "steps": "12",
            "t": "250",
            "eta": "0.3",
            "schedule": "cosine",
        }
    )
    _ok(at)
    assert not at.warning, [w.value for w in at.warning]
    assert (
        at.select_slider(key="left.ccfg.gamma").value == 2.37
        and at.select_slider(key="n").value == 300
    )
    assert at.slider(key="field_t").value == 250 and at.selectbox(key="schedule").value == "cosine"
    charts = _charts(at)
    assert (
        "γ = 2.37" in charts["traj.left"]["layout"]["title"]["text"]
        and "t = 250" in charts["field.left"]["layout"]["title"]["text"]
    )


def test_inline_mixture_from_a_link_and_the_editor():
    mix = {
        "means": [[-2, 0], [2, 0], [0, 2]],
        "covs": [[[0.2, 0], [0, 0.2]]] * 3,
        "weights": [1, 1, 1],
        "membership": [[1, 0, 0], [0, 1, 1]],
        "concepts": ["left", "rest"],
    }
    at = _query({"mixture": json.dumps(mix), "negative": "left", "n": "250", "steps": "10"})
    _ok(at)
    assert not at.warning and at.selectbox(key="preset").value == "custom mixture"
    assert "traj.left" in _charts(at) and not at.error
    frame = training.mixture_frame(mixtures.preset("three_blobs"), ["A", "B", "C", "D"])
    assert list(frame.columns)[6:] == ["A", "B", "C", "D"] and frame["D"].sum() == 0
    assert mixtures.Mixture(
        **training.frame_to_mixture(frame, ["A", "B", "C"])
    ).membership.shape == (3, 3)
    with pytest.raises(ValueError, match="membership"):  # concept D has no component yet
        mixtures.Mixture(**training.frame_to_mixture(frame, ["A", "B", "C", "D"]))
    frame.loc[1, "var_x"] = -1.0
    with pytest.raises(ValueError, match="covs"):
        mixtures.Mixture(**training.frame_to_mixture(frame, ["A", "B"]))


def test_sweep_runs_both_rules_in_time_and_a_click_opens_the_point():
    at = _query({"scene": "why_ncfg_fails"}, tab="γ sweep")  # only the open tab runs
    _ok(at)
    at.button(key="sweep.run").click().run()
    _ok(at)
    chart = _charts(at)["sweep.chart"]
    curves = [d for d in chart["data"] if d["mode"] == "lines+markers"]
    assert len(curves) == 2 and all(len(c["x"]) == 16 for c in curves)
    seconds = float(
        next(c.value for c in at.caption if "computed in" in c.value)
        .split("computed in ")[1]
        .split(" s")[0]
    )
    print(
        f"sweep in the app: 2 rules × 16 γ × 2000 points × 50 steps in {seconds:.2f} s (first, with compiles)"
    )
    assert seconds <= 10
    ncfg = next(c for c in curves if "ncfg" in c["name"])
    assert ncfg["x"][-1] > ncfg["x"][0]  # larger γ: more off-support for nCFG
    # a click: what plotly_chart(on_select="rerun") hands the script is emulated through _pending
    side, gamma, tau = ncfg["customdata"][3]
    at.session_state["_pending"] = {"widgets": {f"{side}.ncfg.gamma": gamma}}
    at.run()
    _ok(at)
    assert at.select_slider(key="left.ncfg.gamma").value == gamma
    assert any(d.get("name") == "left: now" for d in _charts(at)["sweep.chart"]["data"])
    _assert_bundled(at)


def test_only_the_open_tab_runs_and_every_tab_renders():
    at = _start(**SMALL)
    _ok(at)
    assert [t.label for t in at.tabs] == [
        "Guide",
        "Share",
        "γ sweep",
        "Export for slides",
        "Mixture editor",
        "Train a net",
        "Method atlas",
    ]
    assert not [b for b in at.button if b.key == "sweep.run"]  # Guide is open, the sweep not run
    assert not at.get("download_button")  # nor Share's
    for label, key in [("γ sweep", "sweep.run"), ("Train a net", "train.run")]:
        at.session_state["tab"] = label
        at.run()
        _ok(at)
        assert [b.key for b in at.button if b.key == key] == [key], label
    for label in ("Export for slides", "Mixture editor", "Method atlas", "Share", "Guide"):
        at.session_state["tab"] = label
        at.run()
        _ok(at)
        shared = [
            d.key for d in at.get("download_button") if d.key.startswith(("dl.pair", "dl.scene"))
        ]
        assert len(shared) == (3 if label == "Share" else 0), label
    assert not [b for b in at.button if b.key in ("sweep.run", "train.run")]


def test_sweep_timing_warm():
    from toydiff import scenes
    from ui import panels

    pair = scenes.curated("why_ncfg_fails").scenes()
    panels.run_pair_sweep(pair, None)  # compile
    rows, seconds = panels.run_pair_sweep(pair, None)
    print(
        f"sweep warm: {len(rows)} settings (2 rules × 16 γ × 2000 points × 50 steps) in {seconds:.2f} s"
    )
    assert len(rows) == 32 and seconds <= 10


def test_live_training_finishes_in_a_minute_with_progress_and_becomes_a_score_source():
    at = _query({"preset": "three_blobs", "n": "250", "steps": "10"}, tab="Train a net")
    _ok(at)
    start = time.perf_counter()
    at.button(key="train.run").click().run(timeout=120)
    seconds = time.perf_counter() - start
    _ok(at)
    print(f"live training (2000 steps, three_blobs) with the app run: {seconds:.1f} s")
    assert seconds <= 60
    bars = [e for e in at.main if getattr(e, "type", None) == "progress"] or at.get("progress")
    assert bars and "trained 2000 steps" in bars[0].proto.text
    table = at.table[0].value
    assert (
        list(table.columns) == [f"t={t}" for t in (10, 50, 200, 500, 900)]
        and float(table.loc["null", "t=900"]) < 0.2
    )
    at.run()  # the sidebar's score source lists the new net from the next run on
    nets = [o for o in at.radio(key="score").options if o.startswith("net")]
    assert len(nets) == 1
    at.radio(key="score").set_value(at.session_state["user_nets"][0]).run()
    _ok(at)
    assert not at.warning and "traj.left" in _charts(at)


def test_export_bytes_decode_to_the_right_frames():
    """The bytes the GIF/MP4/PNG/SVG/PDF buttons offer: decoded back, frame counts checked."""
    import io

    import imageio_ffmpeg
    import numpy as np
    from PIL import Image

    from toydiff import scenes
    from toydiff.scene import run
    from ui import panels

    scene = scenes.curated("why_ncfg_fails").scenes()["right"].replace(n=300, steps=20)
    result, m = run(scene)
    mix, thr = scene.build_mixture(), metrics_mod.preset_threshold(scene.preset)
    frames = np.asarray(result.traj)  # 21 states
    title = panels.scene_title(scene, m)
    gif = panels._animation_file(scene.to_json(), "s", frames, "gif", mix, thr, title)
    img = Image.open(io.BytesIO(gif))
    assert img.format == "GIF" and img.n_frames == 21
    mp4 = panels._animation_file(scene.to_json(), "s", frames, "mp4", mix, thr, title)
    assert mp4[4:8] == b"ftyp"
    reader = imageio_ffmpeg.read_frames(_tmp_file(mp4, ".mp4"))
    meta = next(reader)
    assert sum(1 for _ in reader) == 21 and meta["size"][0] > 100
    png = panels._outcome_file(scene.to_json(), "s", result.x0, "png", mix, thr, title)
    assert Image.open(io.BytesIO(png)).size[0] >= 800
    assert (
        panels._outcome_file(scene.to_json(), "s", result.x0, "svg", mix, thr, title)
        .lstrip()
        .startswith(b"<?xml")
    )
    assert panels._outcome_file(scene.to_json(), "s", result.x0, "pdf", mix, thr, title).startswith(
        b"%PDF"
    )
    csv = panels.metrics_csv({"left": scene, "right": scene}, {"left": m, "right": m}).splitlines()
    assert csv[0].startswith("side,method,") and len(csv) == 3


def _tmp_file(data: bytes, suffix: str) -> str:
    import tempfile

    f = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    f.write(data)
    f.close()
    return f.name


def test_presentation_flag_collapses_and_enlarges():
    at = _query({"scene": "why_ncfg_fails", "present": "1"})
    _ok(at)
    assert at.session_state["present"] is True
    assert at.button(key="nav.next") is not None
    assert "weights.left" not in _charts(at)  # one scene per screen: trajectories and metrics only
    size = _charts(at)["traj.left"]["layout"]["font"]["size"]
    assert size >= 18
    at.button(key="nav.next").click().run()
    _ok(at)
    assert at.title[0].value == "The attenuation map"


@pytest.mark.parametrize(
    "method, weak",
    [("sims", None), ("perturbed", None), ("autoguidance", "small"), ("autoguidance", "short")],
)
def test_app_denoiser_has_the_rules_weak_branch(method, weak):
    """The app's cached denoiser is the one toydiff.scene builds for the column's rule and guide
    (the SIMS net, the net minus a layer, the chosen guide), not a default weak net."""
    import jax
    import numpy as np

    from ui import compute

    s = scene_mod.Scene(preset="ring", negative="odd", method=method, score="learned", weak=weak)
    den, warning = compute.load_denoiser("ring", "learned", s.delta, None, method, weak)
    want = scene_mod.denoiser(s, s.build_mixture())
    default = scene_mod.denoiser(
        scene_mod.Scene(preset="ring", score="learned", method="cfg"), s.build_mixture()
    )
    assert warning is None and type(den.eps_weak) is type(want.eps_weak)
    leaves = lambda d: [np.asarray(x) for x in jax.tree_util.tree_leaves(d.weak)]
    for a, b in zip(leaves(den), leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    differs = [
        a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(leaves(den), leaves(default))
    ]
    assert len(leaves(den)) != len(leaves(default)) or any(differs)


def test_app_caches_key_the_turned_plane():
    """A scene with rotate: the app's mixture, denoiser and reference are toydiff's for the turned
    plane (the preset's nets asked in their frame, the preset's threshold as the CLI's)."""
    import jax

    from ui import compute

    s = scene_mod.Scene(preset="three_blobs", rotate=45.0, score="learned", method="ccfg")
    key = compute.mix_key(s)
    assert compute.mix_key(s.replace(rotate=0.0)) == "three_blobs"  # unturned keys unchanged
    assert compute.data_of(key) == {"preset": "three_blobs", "mixture": None, "rotate": 45.0}
    np.testing.assert_array_equal(compute.load_mixture(key).means, s.build_mixture().means)
    den, warning = compute.load_denoiser(key, "learned", s.delta, None, "ccfg", None)
    want = scene_mod.denoiser(s, s.build_mixture())
    assert warning is None and type(den.eps_main) is type(want.eps_main)
    for a, b in zip(jax.tree_util.tree_leaves(den), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ref = compute.reference_of(key, None, "C", 100)
    assert ref.threshold == metrics_mod.preset_threshold("three_blobs")


def test_figure_json_is_plotlys_encoding_and_trajectory_spec_is_the_figure():
    """ui.chart.to_json (orjson) decodes to what plotly's own encoder writes (NaN -> null, numpy
    scalars and arrays), and the app's trajectory dict is exactly plots.trajectory_figure."""
    import numpy as np
    import plotly

    rng = np.random.default_rng(0)
    frames = rng.normal(size=(6, 50, 2)).astype(np.float32)
    u = np.linspace(-3, 3, 20, dtype=np.float32)
    log_p = rng.normal(size=(20, 20)).astype(np.float32)
    log_p[3, 4] = np.nan
    args = (
        plots.background(u, log_p, None),
        frames,
        np.arange(6),
        rng.integers(0, 3, 50),
        np.float32(3.0),
        "t",
    )
    fig = plots.trajectory_figure(*args)
    ours = json.loads(chart.to_json(fig))
    theirs = json.loads(json.dumps(fig.to_plotly_json(), cls=plotly.utils.PlotlyJSONEncoder))
    assert ours == theirs and ours["data"][0]["x"]["bdata"]
    assert json.loads(chart.to_json(plots.trajectory_spec(*args))) == theirs
    assert json.loads(chart.to_json({"a": np.float32(np.nan), "b": np.arange(2)})) == {
        "a": None,
        "b": [0, 1],
    }
    # the component's payload: an id line, then the figure with its config; the same figure
    # gets the same id (the browser skips it), another figure another one
    data = chart.payload(fig, {"scrollZoom": False})
    assert chart.figure_of(data) == {**theirs, "config": {"responsive": True, "scrollZoom": False}}
    assert data == chart.payload(plots.trajectory_figure(*args), {"scrollZoom": False})
    other = chart.payload(plots.trajectory_figure(*args[:-1], "another title"))
    assert other.split(b"\n", 1)[0] != data.split(b"\n", 1)[0]


def test_field_legend_lists_only_the_arrow_fields():
    """The field view's legend names the drawn arrow fields, nothing else (no 'trace 1')."""
    import numpy as np

    u = np.linspace(-2, 2, 9, dtype=np.float32)
    grid = np.stack(np.meshgrid(u, u), -1).reshape(-1, 2)
    log_p = -0.5 * (grid**2).sum(1).reshape(9, 9)
    arrows = {name: (grid, np.ones_like(grid)) for name in ("guided", "term")}
    fig = plots.field_figure(
        u, log_p, "log_p", None, arrows, 0.5, 2.0, "t", log_p, 1 / (1 + np.exp(log_p))
    )
    listed = [t.name for t in fig.data if t.type != "heatmap" and t.showlegend is not False]
    assert listed == [plots.FIELD_LABELS["guided"], plots.FIELD_LABELS["term"]]


def test_the_default_view_imports_no_training_or_table_libraries():
    """optax (training) and pandas (the editor's tables) load only with the tabs that use them:
    each costs ~0.1 s of every app start. A fresh interpreter: this test session has both."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({APP!r}, default_timeout=120)\n"
        "at.run()\n"
        "assert not at.exception, at.exception\n"
        "print(sorted(m for m in ('optax', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _decode(a) -> np.ndarray:
    """A Plotly base64 typed array (plots._arr) or a plain list as numpy."""
    if isinstance(a, dict):
        out = np.frombuffer(base64.b64decode(a["bdata"]), dtype=a["dtype"])
        return out.reshape([int(n) for n in a["shape"].split(",")]) if a.get("shape") else out
    return np.asarray(a)


@pytest.mark.parametrize("net", ["standard", "everywhere"])
def test_error_map_shows_the_learned_nets_error_and_the_samples_at_t(net):
    """Issue 19's error map: learned scores add one figure per column beside the field; its heatmap
    is the worst branch of fields.net_error on the grid of the chosen kind of net (recomputed
    here), capped at 1, and its points the run's samples; exact scores show none. The everywhere
    net's map is lower than the standard one's."""
    from ui.compute import FIELD_RES

    at = _start(**SMALL, score="learned", net=net, field_t=200)
    _ok(at)
    assert not at.warning, [w.value for w in at.warning]
    charts = _charts(at)
    assert {"error.left", "error.right"} <= set(charts)
    fig = charts["error.left"]
    z = _decode(next(d for d in fig["data"] if d["type"] == "heatmap")["z"])
    scene = scene_mod.Scene.from_dict(
        {"preset": "three_blobs", "method": "ncfg", "gamma": 2.0, "score": "learned", **SMALL}
    )
    mix = scene.build_mixture()
    g = fields.grid(fields.extent(mix), FIELD_RES)

    def error_map(kind: str) -> np.ndarray:
        s = scene.replace(net=kind)
        err = fields.net_error(
            s.sampler_config(), scene_mod.denoiser(s, mix), s.cond(mix), g, 200.0
        )
        return np.clip(np.asarray(err).max(0), 0, 1)

    np.testing.assert_allclose(z.ravel(), error_map(net), atol=2e-3)
    assert 0.001 < np.median(z) < 1  # a real, imperfect net
    if net == "everywhere":
        assert np.median(z) < 0.5 * np.median(error_map("standard"))
    points = next(d for d in fig["data"] if d["type"] == "scattergl")
    assert len(_decode(points["x"])) == SMALL["n"]
    at = _start(**SMALL)
    _ok(at)
    assert "error.left" not in _charts(at)


def test_weight_schedule_controls_reach_the_run_and_the_link():
    """A column's weight schedule (issue 21, item 3): the window's controls appear, the link
    carries the schedule, and the metrics are those of toydiff.run on the same scene."""
    at = _start(**SMALL, **{"left.weight_schedule": "window", "left.g_late": -0.5})
    _ok(at)
    assert at.slider(key="left.t_switch").value == 500
    assert at.query_params["left.weight_schedule"] in ("window", ["window"])
    scene = scene_mod.Scene.from_dict(
        {"preset": "three_blobs", "negative": "C", "method": "ncfg", "gamma": 2.0, **SMALL}
        | {"weight_schedule": "window", "g_late": -0.5}
    )
    want = scene_mod.run(scene)[1]["leakage_hard"]
    got = _num(_table(at)["leakage (p(n∣x) > ½)"][0])
    assert got == pytest.approx(want, abs=0.006), (got, want)
    assert want > 0.5  # late negative nCFG pulls the samples into C


def test_every_page_renders_without_the_bridge_extra(tmp_path):
    """Issue 22, item 5: with only requirements.txt (diffusers made unimportable by a stub on the
    path), both pages render without an exception; the image-model page names the one command
    that installs what it needs, which README's first command runs."""
    import subprocess
    import sys

    stub = tmp_path / "diffusers"
    stub.mkdir()
    (stub / "__init__.py").write_text("raise ImportError(\"No module named 'diffusers'\")\n")
    code = (
        "import json, sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "out = {}\n"
        "for page in sys.argv[1:]:\n"
        "    at = AppTest.from_file(page, default_timeout=300).run()\n"
        "    out[page] = ([e.value for e in at.error], [x.message for x in at.exception])\n"
        "print(json.dumps(out))\n"
    )
    pages = [APP, str(pathlib.Path(APP).parent / "pages" / "1_Real_model.py")]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TOYDIFF_JAX_CACHE": ""}
    done = subprocess.run(
        [sys.executable, "-c", code, *pages], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out[APP] == [[], []]
    errors, exceptions = out[pages[1]]
    assert exceptions == [] and len(errors) == 1
    assert "pip install -r requirements-bridge.txt" in errors[0]
    readme = (pathlib.Path(APP).parent / "README.md").read_text()
    assert "pip install -r requirements.txt -r requirements-bridge.txt" in readme


def test_probe_readout_is_the_exact_field_at_the_point():
    """Issue 22, item 3: with the probe placed (session state 'probe', which the chart's release
    sets), each field figure brings the readout rows on the grid and their exact values at the
    point, checked against the exact mixture: p(c | x_t) for every concept, ε_∅ and ε_n, and the
    guided ε̂ of nCFG (left: ε_∅ − γΔ_n, λ⁻ = 1) and CCFG (right: λ⁻ = 2σ(−τ‖Δ_n‖²))."""
    from toydiff import exact, mixtures, schedule

    point = [0.5, -1.0]
    at = _start(probe=point)
    _ok(at)
    charts = _charts(at)
    mix, x = mixtures.preset("three_blobs"), np.array([point], np.float32)
    for side, tau in (("left", None), ("right", 1.0)):
        meta = charts[f"field.{side}"]["layout"]["meta"]["probe"]
        assert meta["point"] == point and charts[f"field.{side}"]["layout"]["dragmode"] is False
        rows = {r["key"]: r for r in meta["rows"]}
        ab = float(schedule.alpha_bars("linear")[meta["t"]])
        for c in mix.concepts:
            want = float(exact.posterior(mix, x, ab, c)[0])
            np.testing.assert_allclose(rows[f"p.{c}"]["at"], want, atol=1e-5)
        e_u, e_n = exact.eps(mix, x, ab)[0], exact.eps(mix, x, ab, "C")[0]
        np.testing.assert_allclose(rows["eps_uncond"]["at"], e_u, atol=1e-4)
        np.testing.assert_allclose(rows["eps_neg"]["at"], e_n, atol=1e-4)
        d = np.asarray(e_n - e_u, np.float64)
        lam = 1.0 if tau is None else 2 / (1 + np.exp(tau * d @ d))
        np.testing.assert_allclose(rows["lam_neg"]["at"], lam, atol=1e-4)
        np.testing.assert_allclose(rows["guided"]["at"], e_u - 2.0 * lam * d, atol=1e-3)
        u = _decode(meta["u"])  # the grid the browser interpolates in: p(A | x_t) at a corner
        corner = np.array([[u[0], u[0]]], np.float32)
        np.testing.assert_allclose(
            _decode(rows["p.A"]["grid"])[0], exact.posterior(mix, corner, ab, "A")[0], atol=1e-5
        )


def test_the_chart_components_javascript_parses():
    """ui/chart.py's component JS is valid ES module syntax (node --check): a syntax error only
    shows in a browser, as an error box in place of every figure."""
    import shutil
    import subprocess

    if shutil.which("node") is None:
        pytest.skip("node is not installed (apt-get install nodejs)")
    path = pathlib.Path(tempfile.mkdtemp()) / "chart.mjs"
    path.write_text(chart.JS)
    out = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
