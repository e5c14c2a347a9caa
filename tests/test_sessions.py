"""Concurrent sessions are isolated: each sees its own scene's metrics and only its own trained nets,
although the server shares one cache (st.cache_*) and one net store between them."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest
from test_app import _ok, _start  # one recipe for a fresh AppTest session

from toydiff import scene as scene_mod
from toydiff import scenes
from toydiff.viz.plots import METRICS
from ui import training

ROOT = pathlib.Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
SMALL = {"n": 100, "steps": 10}  # small shapes keep it fast
NET = "net:5e551014"  # a net "trained" by session A (the store entry holds what the selector reads)


def _table(at: AppTest) -> dict[str, list[str]]:
    """The metrics markdown table as {metric label: [cell per column]}."""
    text = next(m.value for m in at.markdown if m.value.startswith("| metric"))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]]
    return {r[0]: r[1:] for r in rows}


def _num(cell: str, fmt: str) -> float:
    text = cell.replace("**", "").replace("✓", "").strip()
    return float(text[:-1]) / 100 if fmt.endswith("%}") else float(text)


def _tol(fmt: str) -> float:
    """Half a unit of the last displayed digit."""
    if fmt == "{:d}":
        return 1e-9
    digits = int(fmt.split(".")[1][0]) + (2 if fmt.endswith("%}") else 0)
    return 0.5 * 10.0**-digits + 1e-9


def _pair(at: AppTest) -> dict:
    """The two Scenes the session shows, read back from the link it wrote."""
    decoded = scenes.decode_query({k: at.query_params[k] for k in at.query_params})
    assert decoded.scenes is not None, decoded.warnings
    return decoded.scenes


def _assert_shows_own_metrics(at: AppTest, expected: dict):
    """Every displayed metric equals toydiff.scene.run of the session's own scenes (display precision)."""
    table, checked = _table(at), 0
    for i, sc in enumerate(_pair(at).values()):
        key = sc.to_json()
        if key not in expected:
            expected[key] = scene_mod.run(sc)[1]
        for mkey, label, fmt, _ in METRICS:
            want = expected[key].get(mkey)
            row = next((cells for lab, cells in table.items() if lab.startswith(label)), None)
            if want is None or want != want or row is None:
                continue
            assert abs(_num(row[i], fmt) - float(want)) <= _tol(fmt), (sc.seed, mkey, row[i], want)
            checked += 1
    assert checked >= 8, checked


def _score_options(at: AppTest) -> list[str]:
    return list(at.sidebar.radio(key="score").options)


def test_two_sessions_never_see_each_others_results_or_nets():
    store = (
        training._store()
    )  # process-wide (st.cache_resource): the server's store for all sessions
    store[NET] = {"label": "net 1 (A's own)", "key": "three_blobs"}
    expected: dict = {}
    try:
        a = _start(**SMALL, seed=11, user_nets=[NET])
        b = _start(**SMALL, seed=22)
        _ok(a), _ok(b)
        assert {s.seed for s in _pair(a).values()} == {11} and {
            s.seed for s in _pair(b).values()
        } == {22}
        _assert_shows_own_metrics(a, expected)
        _assert_shows_own_metrics(b, expected)
        table_a = _table(a)
        assert table_a != _table(b)  # different seeds: different samples, different metrics

        # A's net is a score source in A only (net ids never appear in links)
        assert "net 1 (A's own)" in _score_options(a)
        assert "net 1 (A's own)" not in _score_options(b)
        b.number_input(key="seed").set_value(33).run()
        _ok(b)
        assert b.sidebar.radio(key="score").value == "exact"
        assert {s.seed for s in _pair(b).values()} == {33}
        _assert_shows_own_metrics(b, expected)

        # B's changes (another seed, the net attempt) leave A's page exactly as it was
        a.run()
        _ok(a)
        assert {s.seed for s in _pair(a).values()} == {11}
        assert _table(a) == table_a
        assert "net 1 (A's own)" in _score_options(a)
    finally:
        store.pop(NET, None)


@pytest.mark.slow  # a real server and Chromium with 4 pages: ≈ 2–4 min on 2 shared cores
def test_load_benchmark_small(tmp_path):
    """benchmarks/load.py end to end on a small hall: exit 0 means every acceptance check passed."""
    out = tmp_path / "load.md"
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/load.py",
            "--pages",
            "4",
            "--movers",
            "2",
            "--duration",
            "10",
            "--single",
            "3",
            "--memory-scenes",
            "60",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "**FAIL**" not in out.read_text()
