"""Sweeps and slide exports: files decoded back, numbers checked against single runs."""

import csv
import json
import subprocess
import sys

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from toydiff import sweep
from toydiff.scene import Scene, run

SCENE = {"preset": "three_blobs", "method": "ncfg", "gamma": 2.0, "n": 300, "steps": 20}


def test_sweep_rows_equal_single_runs():
    scene = Scene.from_dict(SCENE)
    rows = sweep.run_sweep(scene, ["ncfg", "ccfg"], gammas=(0.5, 2.0), taus=(0.3, 1.0))
    assert [(r["method"], r["gamma"]) for r in rows][:3] == [
        ("ncfg", 0.5),
        ("ncfg", 2.0),
        ("ccfg", 0.5),
    ]
    assert len(rows) == 2 + 2 * 2
    for r in (rows[1], rows[-1]):  # the vmapped sweep equals one scene run at that setting
        tau = {} if r["tau"] != r["tau"] else {"tau": r["tau"]}
        _, m = run(scene.replace(method=r["method"], gamma=r["gamma"], **tau))
        for k in ("leakage_hard", "off_support", "nll"):
            assert r[k] == pytest.approx(m[k], rel=1e-4, abs=1e-6), k


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "toydiff", *args], capture_output=True, text=True, timeout=600
    )


def test_render_gif_mp4_png_svg_pdf_are_valid(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SCENE))
    out = cli(
        "render",
        "--scene",
        str(tmp_path / "s.json"),
        "--png",
        str(tmp_path / "a.png"),
        "--out",
        str(tmp_path / "a.pdf"),
        "--gif",
        str(tmp_path / "a.gif"),
        "--mp4",
        str(tmp_path / "a.mp4"),
    )
    assert out.returncode == 0, out.stderr
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == 21  # x_T and 20 steps
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "a.mp4"))
    meta = next(reader)
    frames = sum(1 for _ in reader)
    assert frames == 21 and meta["size"][0] >= 400
    assert Image.open(tmp_path / "a.png").size[0] >= 400
    assert (tmp_path / "a.pdf").read_bytes()[:5] == b"%PDF-"
    out = cli("render", "--scene", str(tmp_path / "s.json"), "--out", str(tmp_path / "a.svg"))
    assert out.returncode == 0 and "<svg" in (tmp_path / "a.svg").read_text()[:500]


def test_sweep_cli_writes_csv_and_png(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SCENE))
    out = cli("sweep", "--scene", str(tmp_path / "s.json"), "--out", str(tmp_path / "sw"))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(open(tmp_path / "sw" / "sweep.csv")))
    assert len(rows) == len(sweep.GAMMAS) and set(rows[0]) == set(sweep.COLUMNS)
    leak = np.array([float(r["leakage_hard"]) for r in rows])
    assert leak[0] > leak[-1]  # more negative guidance, less leakage
    assert Image.open(tmp_path / "sw" / "sweep.png").size[0] >= 400
