"""The load benchmark's protocol client builds the BackMsg a browser sends (offline, no server)."""

from __future__ import annotations

import pathlib
import sys

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Slider_pb2 import Slider

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import load  # noqa: E402


def test_rerun_msg_round_trips_widget_states():
    states = {
        "eta": load.widget_state("eta", "double_array_value", [0.05]),
        "gamma": load.widget_state("gamma", "string_array_value", ["2.5"]),
        "seed": load.widget_state("seed", "double_value", 1000.0),
    }
    msg = BackMsg()
    msg.ParseFromString(load.rerun_msg("preset=ring&gamma=2", states, "abc", {"h1"}))
    cs = msg.rerun_script
    assert (cs.query_string, cs.page_script_hash) == ("preset=ring&gamma=2", "abc")
    assert list(cs.cached_message_hashes) == ["h1"]
    got = {w.id: w for w in cs.widget_states.widgets}
    assert list(got["eta"].double_array_value.data) == [0.05]
    assert list(got["gamma"].string_array_value.data) == ["2.5"]
    assert got["seed"].double_value == 1000.0


def test_select_slider_step_sends_the_next_option_and_reverses_at_the_end():
    e = Slider(id="g", label="γ (gamma)", options=["1", "2", "3"], default=[1], step=1)
    session = load.ProtocolSession("http://127.0.0.1:1", "")
    session._track(e, load.WIDGET_VALUES["slider"], session.widgets)
    assert list(session.states["g"].string_array_value.data) == ["2"]  # the default index, as text
    direction, ws = session.step("γ", 0, 1)
    assert (direction, list(ws.string_array_value.data)) == (1, ["3"])
    session.states["g"] = ws
    direction, ws = session.step("γ", 0, 1)  # at the last option: back down
    assert (direction, list(ws.string_array_value.data)) == (-1, ["2"])


def test_markdown_rows_reads_cells_as_the_browser_shows_them():
    body = "| metric | left | right |\n|---|---:|---:|\n| off-support rate | **1.7%** ✓ | 2.0% |"
    rows = load.markdown_rows(body)
    assert rows == [["metric", "left", "right"], ["off-support rate", "1.7% ✓", "2.0%"]]
    assert load.cell_value(rows[1][1], "{:.1%}") == 0.017
