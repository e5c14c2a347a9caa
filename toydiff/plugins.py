"""Rules and solvers from outside the package (issue "Open seams"): every module named in the
environment variable TOYDIFF_PLUGINS, and every entry point of the group `toydiff.plugins`, is
imported before the CLI or the app reads the registries.

    TOYDIFF_PLUGINS=mypkg.rules,other.module:register python -m toydiff metrics --scene s.json

An entry is `module` (importing it registers, e.g. by calling `guidance.register` at its top
level) or `module:function` (the function, called with no arguments, registers). A package may
instead declare `[project.entry-points."toydiff.plugins"] name = "module:function"`.
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata

ENV = "TOYDIFF_PLUGINS"
GROUP = "toydiff.plugins"
_loaded: set[str] = set()


def _load_one(spec: str) -> None:
    module, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{ENV}: cannot load {spec!r} ({e})") from None
    if attr:
        obj()


def load(specs: str | None = None) -> list[str]:
    """Loads the plugins named in `specs` (comma-separated; default: $TOYDIFF_PLUGINS) and the
    `toydiff.plugins` entry points, each once per process; returns the specs loaded now.
    ValueError names a plugin that cannot be imported."""
    names = [s.strip() for s in (os.environ.get(ENV, "") if specs is None else specs).split(",")]
    names += [ep.value for ep in metadata.entry_points(group=GROUP)]
    new = [s for s in dict.fromkeys(names) if s and s not in _loaded]
    for spec in new:
        _load_one(spec)
        _loaded.add(spec)
    return new
