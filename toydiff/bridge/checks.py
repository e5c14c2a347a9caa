"""Checks the bridge runs before anything heavy loads (torch-free): the extra is installed, the
model folder is there."""

from __future__ import annotations

from pathlib import Path

INSTALL = "bridge needs: pip install -r requirements-bridge.txt"
WHERE = "a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)"


def check_model(model: str) -> None:
    """Raises ValueError when model names a local folder that is not there (hub ids are owner/name)."""
    path = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or model.count("/") != 1
    if looks_local and not (path / "model_index.json").is_file():
        what = "has no model_index.json" if path.is_dir() else "not found"
        raise ValueError(f"--model: {model} {what}; put {WHERE} there, or pass a hub id")


def require() -> None:
    """Raises ValueError(INSTALL) when torch, diffusers or transformers is missing."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise ValueError(INSTALL) from None
