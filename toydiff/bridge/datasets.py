"""The image data sets of the bridge's class-removal tables, by name (bridge.digits.Dataset
objects; their modules import torch lazily)."""

from __future__ import annotations

import importlib

DATASETS = {
    "digits": ("digits", "DIGITS"),
    "fashion": ("fashion", "FASHION"),
}  # name -> module, object


def dataset(name: str):
    """The bridge.digits.Dataset called name ('digits' | 'fashion'); another name -> ValueError."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}")
    module, attr = DATASETS[name]
    return getattr(importlib.import_module(f"{__package__}.{module}"), attr)
