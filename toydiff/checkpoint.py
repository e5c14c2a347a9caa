"""Checkpoints: safetensors weights + JSON metadata, validated on load; the shipped pretrained nets.

A checkpoint is `<stem>.safetensors` (float32 tensors named like `hidden.0.w`) beside `<stem>.json`
(format version, architecture, mixture hash, training record, error table). Anything wrong on load
raises one CheckpointError saying what.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import assets, denoisers, nets
from .mixtures import Mixture

FORMAT_VERSION = 1
PRETRAINED_DIR = assets.root()
REQUIRED = (
    "format_version",
    "architecture",
    "preset",
    "mixture_hash",
    "train",
    "seed",
    "steps",
    "wall_time_s",
    "final_loss",
    "errors",
)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, inconsistent or made for another mixture."""


def mixture_hash(mix: Mixture) -> str:
    """sha256 of the mixture's parameters (rounded to 1e-6, so float noise across machines is ignored)."""
    h = hashlib.sha256(json.dumps(list(mix.concepts)).encode())
    for name in ("means", "covs", "weights", "membership"):
        h.update(np.round(np.asarray(getattr(mix, name), np.float64), 6).tobytes())
    return h.hexdigest()[:16]


def _name(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _flatten(params) -> dict[str, np.ndarray]:
    """{'x.w': array, 'hidden.0.b': array, ...} of a parameter pytree."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return {_name(path): np.asarray(leaf, np.float32) for path, leaf in leaves}


def save(stem: str | Path, params, net_config: nets.NetConfig, mix: Mixture, **meta) -> Path:
    """Writes stem.safetensors and stem.json (meta: preset, train, seed, steps, ...); returns the stem."""
    from safetensors.numpy import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format_version": FORMAT_VERSION,
        "architecture": dataclasses.asdict(net_config),
        "mixture_hash": mixture_hash(mix),
        **meta,
    }
    save_file(
        _flatten(params),
        str(stem.with_suffix(".safetensors")),
        metadata={"format_version": str(FORMAT_VERSION), "mixture_hash": record["mixture_hash"]},
    )
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return stem


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable metadata ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: metadata must be a JSON object")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {', '.join(missing)}")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {meta['format_version']!r}, expected {FORMAT_VERSION}"
        )
    return meta


def _net_config(path: Path, arch) -> nets.NetConfig:
    fields = {f.name: f.type for f in dataclasses.fields(nets.NetConfig)}
    if not isinstance(arch, dict) or set(arch) - set(fields) or "n_concepts" not in arch:
        raise CheckpointError(
            f"{path}: architecture must be an object with keys from {', '.join(fields)}"
        )
    for key, value in arch.items():
        ok = isinstance(value, int) if fields[key] == "int" else isinstance(value, (int, float))
        if not ok or isinstance(value, bool) or value < 0:
            raise CheckpointError(
                f"{path}: architecture.{key} = {value!r} is not a valid {fields[key]}"
            )
    return nets.NetConfig(**arch)


def _read_weights(path: Path, config: nets.NetConfig, meta: dict):
    """The parameter pytree of `config`'s shape, from the safetensors file, all checked."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated or garbage files
        raise CheckpointError(f"{path}: corrupt or truncated weights file ({e})") from None
    if header.get("mixture_hash") != meta["mixture_hash"]:
        raise CheckpointError(f"{path}: weights and metadata come from different checkpoints")
    template = jax.eval_shape(lambda key: nets.init(key, config), jax.random.key(0))
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = {_name(p): leaf.shape for p, leaf in paths}
    if set(arrays) != set(expected):
        diff = sorted(set(arrays) ^ set(expected))
        raise CheckpointError(
            f"{path}: tensors do not match the architecture {config} (differ: {diff})"
        )
    for name, shape in expected.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != np.float32:
            raise CheckpointError(
                f"{path}: tensor {name} is {a.dtype}{list(a.shape)}, "
                f"the architecture needs float32{list(shape)}"
            )
        if not np.all(np.isfinite(a)):
            raise CheckpointError(f"{path}: tensor {name} has non-finite weights")
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(arrays[_name(p)]) for p, _ in paths])


@functools.lru_cache(maxsize=64)
def _load_cached(stem: str, mtimes: tuple[int, int]):
    stem = Path(stem)
    meta = _read_meta(stem.with_suffix(".json"))
    config = _net_config(stem.with_suffix(".json"), meta["architecture"])
    return _read_weights(stem.with_suffix(".safetensors"), config, meta), config, meta


def load(stem: str | Path, mix: Mixture | None = None) -> tuple[dict, nets.NetConfig, dict]:
    """(params, net config, metadata) of a checkpoint, validated (and checked against mix if given)."""
    stem = Path(stem)
    files = [stem.with_suffix(".json"), stem.with_suffix(".safetensors")]
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"missing checkpoint file {f}")
    params, config, meta = _load_cached(
        str(stem.resolve()), tuple(f.stat().st_mtime_ns for f in files)
    )
    if mix is not None and mixture_hash(mix) != meta["mixture_hash"]:
        raise CheckpointError(
            f"{stem}: trained on a different mixture (hash {meta['mixture_hash']}, "
            f"this mixture's is {mixture_hash(mix)})"
        )
    return params, config, meta


WEAK_STEMS = {"shipped": "_weak", "small": "_small", "short": "_short"}  # WEAK_NETS' files


class WeakRecipe(NamedTuple):
    """How one guide net for autoguidance is trained, relative to the main net's TrainConfig."""

    small: bool  # the 2×32 weak architecture instead of the main net's
    fraction: int  # the net trains 1/fraction of the main net's steps
    complete: bool  # True: a full schedule of that length; False: the main run stopped early
    help: str


# Autoguidance's guides (MATH §3): degraded in capacity, in training length, or both.
WEAK_NETS: dict[str, WeakRecipe] = {
    "shipped": WeakRecipe(True, 8, True, "2×32 net, a complete run of 1/8 of the steps"),
    "small": WeakRecipe(True, 1, True, "2×32 net, the main net's full recipe"),
    "short": WeakRecipe(False, 8, False, "the main net's run stopped at 1/8 of its steps"),
}


# A preset's own shipped guide, where the 2×32 one fails it (MATH §3). On the tree, the 2×32 net
# (no input Fourier features) errs differently from the main net, and autoguidance with it is no
# more precise than unguided; a degraded version of the main net itself is the paper's guide.
PRESET_GUIDE: dict[str, WeakRecipe] = {
    "tree": WeakRecipe(False, 4, False, "the main net's run stopped at 1/4 of its steps"),
}


def weak_nets(name: str | None = None) -> dict[str, WeakRecipe]:
    """The guide recipes of a preset: WEAK_NETS, with its PRESET_GUIDE as 'shipped'."""
    return WEAK_NETS | ({"shipped": PRESET_GUIDE[name]} if name in PRESET_GUIDE else {})


NETS = (
    "standard",
    "everywhere",
)  # kinds of net (scene key 'net'); everywhere nets: <root>/everywhere
MIXTURE_STEM = "mixture"  # the stem of nets trained for an inline mixture (train --scene)


def net_root(net: str = "standard", root=None) -> Path:
    """The folder of one kind of net under a checkpoint folder (default: the shipped one)."""
    if net not in NETS:
        raise ValueError(f"net: {net!r} is not one of {', '.join(NETS)}")
    base = Path(root or PRETRAINED_DIR)
    return base / net if net != "standard" else base


def pretrained_stem(preset: str | None, weak: bool | str | None = False, root=None) -> Path:
    """Path stem of a checkpoint: <root>/<preset> (an inline mixture: <root>/mixture), or of its
    guide net (weak: True or 'shipped' -> _weak; 'small' -> _small; 'short' -> _short)."""
    kind = "shipped" if weak is True else weak
    if kind and kind not in WEAK_STEMS:
        raise ValueError(f"weak: {kind!r} is not one of {', '.join(WEAK_STEMS)}")
    name = preset or MIXTURE_STEM
    return Path(root or PRETRAINED_DIR) / f"{name}{WEAK_STEMS[kind] if kind else ''}"


def pretrained_model(
    preset: str | None, mix: Mixture, weak=None, root=None, net: str = "standard"
) -> tuple:
    """(params, eps fn) of a net of kind `net` in the folder `root` (default: the shipped ones):
    the main one, or the guide net `weak` (see pretrained_stem); CheckpointError if missing or
    trained on another mixture."""
    if preset is None and root is None:
        raise CheckpointError(
            "learned scores need a preset, or nets trained for this mixture: python -m toydiff "
            'train --scene FILE --out DIR, then the scene key "checkpoint": DIR'
        )
    params, config, _ = load(pretrained_stem(preset, weak, net_root(net, root)), mix)
    return params, denoisers.NetEps(config)


def pretrained_denoiser(
    preset: str | None,
    mix: Mixture,
    weak_only: bool = False,
    root: str | Path | None = None,
    weak: str = "shipped",
) -> denoisers.Denoiser:
    """The shipped main net with a guide net (default the shipped weak one), or the guide alone."""
    guide = pretrained_model(preset, mix, weak, root)
    main = guide if weak_only else pretrained_model(preset, mix, None, root)
    return denoisers.combine(mix, main, guide)
