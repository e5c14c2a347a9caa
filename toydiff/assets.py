"""Where the shipped weights and thresholds are (issue "Open seams", item 6): one place for every
module. In order: the folder in $TOYDIFF_ASSETS; the package data of an installed toydiff
(toydiff/pretrained, which `pip install .` copies from the repository's pretrained/); the
repository's pretrained/ beside the package (a source checkout or an editable install)."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "TOYDIFF_ASSETS"
_HERE = Path(__file__).resolve().parent


def root() -> Path:
    """The folder of the shipped weights (<stem>.safetensors + <stem>.json) and thresholds.json."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    installed = _HERE / "pretrained"
    return installed if installed.is_dir() else _HERE.parent / "pretrained"


def path(name: str) -> Path:
    """A shipped file or checkpoint stem by name: path('thresholds.json'), path('three_blobs')."""
    return root() / name
