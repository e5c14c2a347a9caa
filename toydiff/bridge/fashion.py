"""Fashion-MNIST for the bridge: Debian's `dataset-fashion-mnist` idx files (no download at run time), a
28×28 class-conditional `UNet2DModel` and a CNN judge, trained and sampled by the digits code
(`digits.train_all`, `digits.sample`) with `FASHION` as its data set.

Images are 1×28×28 in [−1, 1] (pixel/127.5 − 1). Both nets train on the 60 000 training images; the
judge's accuracy and the table's reference features come from the 10 000 test images.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from . import digits

ROOT = Path(os.environ.get("TOYDIFF_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
INSTALL = (
    "apt-get install dataset-fashion-mnist (or set TOYDIFF_FASHION_MNIST to a folder of idx.gz)"
)
FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
LOOK_ALIKE = (0, 2, 4, 6)  # T-shirt/top, pullover, coat, shirt: the classes a classifier confuses
OTHERS = tuple(c for c in range(10) if c not in LOOK_ALIKE)
UNET_STEM = digits.PRETRAINED / "fashion_unet"
JUDGE_STEM = digits.PRETRAINED / "fashion_judge"
# Three levels (28, 14, 7) with few channels at 28×28, where a CPU spends most of its time.
UNET_CONFIG = dict(
    sample_size=28,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(16, 32, 64),
    down_block_types=("DownBlock2D",) * 3,
    up_block_types=("UpBlock2D",) * 3,
    num_class_embeds=digits.N_CLASSES + 1,
    norm_num_groups=8,
)
_IDX_TYPES = {0x08: np.uint8}


def read_idx(path) -> np.ndarray:
    """The array in an idx(.gz) file (magic 0 0 type ndim, big-endian int32 dims, then the data)."""
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    data = np.frombuffer(raw, _IDX_TYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} values for shape {shape}")
    return data.reshape(shape)


def available(root=None) -> bool:
    """Whether the four idx.gz files are there."""
    root = Path(root or ROOT)
    return all((root / f).is_file() for pair in FILES.values() for f in pair)


def load(split: str = "all", root=None) -> tuple[np.ndarray, np.ndarray]:
    """(x (N,1,28,28) float32 in [−1,1], y (N,) int64): split 'train' (60 000) | 'test' (10 000) | 'all'."""
    if split == "all":
        parts = [load(s, root) for s in FILES]
        return tuple(np.concatenate(p) for p in zip(*parts))
    if split not in FILES:
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    root = Path(root or ROOT)
    if not available(root):
        raise ValueError(f"Fashion-MNIST not found in {root}: {INSTALL}")
    images, labels = (read_idx(root / f) for f in FILES[split])
    x = (images.astype(np.float32) / 127.5 - 1.0)[:, None]
    return x, labels.astype(np.int64)


FASHION = digits.Dataset(
    "fashion",
    load,
    UNET_CONFIG,
    CLASSES,
    "test",
    {"width": 24, "feat": 64},
    {"sigma_max": 0.3, "p_noise": 0.5},
    "Fashion-MNIST (Debian dataset-fashion-mnist), 28×28, pixel/127.5 − 1 in [−1, 1]; "
    "60 000 training images (held out: the 10 000 test images)",
)


def load_unet(stem=UNET_STEM):
    """(UNet2DModel, meta) of the shipped (or given) Fashion-MNIST checkpoint; problems -> ValueError."""
    return digits.load_unet(stem, "fashion_unet")


def load_judge(stem=JUDGE_STEM):
    """(Judge, meta) of the shipped (or given) Fashion-MNIST judge; problems -> ValueError."""
    return digits.load_judge(stem, "fashion_judge")
