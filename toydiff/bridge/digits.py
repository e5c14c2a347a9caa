"""A real (tiny) image model for the bridge: scikit-learn's bundled 8×8 digits, a class-conditional diffusers
`UNet2DModel` (classes 0–9 + a null class 10 for CFG), a small CNN judge trained with noise augmentation, and
the sampling adapter that runs the shared guided loop (`bridge.loop.sample`) on it.

Images are 1×8×8 in [−1, 1] (pixel/8 − 1). The data split is fixed (stratified, 20 % held out, seed 0);
both nets train on the training split only, so the judge's held-out accuracy is honest.
Checkpoints: `<stem>.safetensors` (float32) + `<stem>.json` (kind, config, training record); anything
wrong on load raises ValueError saying what.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .. import assets
from . import loop

N_CLASSES = 10
NULL = 10  # the null class: the unconditional branch ε_∅
FORMAT_VERSION = 1
PRETRAINED = assets.root()
UNET_STEM, JUDGE_STEM = PRETRAINED / "digits_unet", PRETRAINED / "digits_judge"
UNET_CONFIG = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    num_class_embeds=N_CLASSES + 1,
    norm_num_groups=8,
)
# Cosine ᾱ suits 8×8 images better than the linear betas (which leave little signal to learn at low
# resolution). set_alpha_to_one: the last DDIM step goes to ᾱ = 1, as bridge.loop's DNG update assumes.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    clip_sample=False,
    set_alpha_to_one=True,
    prediction_type="epsilon",
)


# ------------------------------------------------------------------------------------------------ data
def load(split: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """(x (N,1,8,8) float32 in [−1,1], y (N,) int64) of the sklearn digits: split 'train' | 'test' | 'all'."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    d = load_digits()
    x = (d.images.astype(np.float32) / 8.0 - 1.0)[:, None]
    y = d.target.astype(np.int64)
    if split == "all":
        return x, y
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=y, random_state=0
    )
    idx = idx_train if split == "train" else idx_test
    return x[idx], y[idx]


def class_rates(y: np.ndarray) -> np.ndarray:
    """(10,) class frequencies of labels y."""
    return np.bincount(y, minlength=N_CLASSES)[:N_CLASSES] / max(len(y), 1)


class Dataset(NamedTuple):
    """What the shared training, sampling and table code needs to know about one 10-class image set."""

    name: str  # checkpoint kinds and stems: <name>_unet, <name>_judge
    load: Callable  # split 'train' | 'test' | 'all' -> (x (N,1,H,W) in [−1,1], y (N,))
    unet_config: dict
    classes: tuple  # display names of the 10 classes
    reference: str  # the split whose real images the table compares samples with (FD, P/R)
    judge: dict  # Judge(**judge) config
    augment: dict  # _augment's sigma_max, p_noise
    description: str  # the data line of the checkpoint metadata


DIGITS = Dataset(
    "digits",
    load,
    UNET_CONFIG,
    tuple(str(c) for c in range(N_CLASSES)),
    "all",
    {"width": 32, "feat": 64},
    {"sigma_max": 0.5, "p_noise": 0.75},
    "sklearn digits, 8×8, pixel/8 − 1 in [−1, 1]; training split (80 %)",
)


# ----------------------------------------------------------------------------------------------- judge
class Judge(nn.Module):
    """Small CNN classifier on 1×size×size images in [−1, 1]; `features` is the penultimate layer."""

    def __init__(self, width: int = 32, feat: int = 64, size: int = 8):
        super().__init__()
        self.config = {"width": width, "feat": feat, "size": size}
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * w * (size // 4) ** 2, feat),
            nn.GELU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(feat, N_CLASSES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, feat) penultimate features (inputs clamped to [−1, 1])."""
        return self.body(x.clamp(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 10) logits."""
        return self.head(self.features(x))


def _augment(
    x: torch.Tensor, g: torch.Generator, sigma_max: float = 0.5, p_noise: float = 0.75
) -> torch.Tensor:
    """Random ±1-pixel shifts and Gaussian noise of σ ~ U(0, sigma_max) on a p_noise share of the
    batch (fair to samples, which are never quite clean)."""
    b, s = x.shape[0], x.shape[-1]
    pad = nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2, b), generator=g)
    x = torch.stack([pad[i, :, dy[i] : dy[i] + s, dx[i] : dx[i] + s] for i in range(b)])
    noisy = torch.rand(b, 1, 1, 1, generator=g) < p_noise
    sigma = torch.rand(b, 1, 1, 1, generator=g) * sigma_max * noisy
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def _progress(total: int, desc: str, log):
    """A tqdm bar on stderr when log is print-like, else a silent one (tests pass their own log)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, mininterval=5, disable=log is None)


def train_judge(
    epochs: int = 40,
    batch: int = 64,
    seed: int = 0,
    log=print,
    data: Dataset | None = None,
    lr: float = 2e-3,
    device: str = "cpu",
) -> tuple[Judge, dict]:
    """(judge, record): the CNN trained on the training split with noise/shift augmentation."""
    data = data or DIGITS
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = map(torch.from_numpy, data.load("train"))
    xt, yt = map(torch.from_numpy, data.load("test"))
    net = Judge(**data.judge, size=x.shape[-1]).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    t0 = time.time()
    bar = _progress(steps, f"{data.name} judge", log)
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch):
            j = perm[i : i + batch]
            xb = _augment(x[j], g, **data.augment).to(device)
            loss = nn.functional.cross_entropy(net(xb), y[j].to(device), label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
        if (ep + 1) % max(1, min(10, epochs // 4)) == 0 and log:
            log(
                f"judge epoch {ep + 1}/{epochs} loss {loss.item():.3f} "
                f"held-out acc {accuracy(net, xt, yt):.4f}"
            )
    bar.close()
    wall = time.time() - t0
    net.cpu().eval()
    a = data.augment
    record = {
        "epochs": epochs,
        "batch": batch,
        "seed": seed,
        "wall_time_s": round(wall, 1),
        "test_accuracy": accuracy(net, xt, yt),
        "train_size": len(y),
        "test_size": len(yt),
        "augmentation": f"±1 px shifts; Gaussian noise σ~U(0,{a['sigma_max']:g}) on "
        f"{a['p_noise']:g} of each batch",
    }
    return net, record


@torch.no_grad()
def accuracy(judge: Judge, x, y) -> float:
    """Fraction of x the judge labels y."""
    labels, _, _ = judge_images(judge, torch.as_tensor(x))
    return float((labels == np.asarray(y)).mean())


@torch.no_grad()
def judge_images(
    judge: Judge, x: torch.Tensor, batch: int = 2000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (N,), max softmax (N,), features (N, feat)) the judge gives images x (N,1,8,8)."""
    judge.eval()
    dev = next(judge.parameters()).device
    outs = []
    for i in range(0, len(x), batch):
        f = judge.features(torch.as_tensor(x[i : i + batch]).float().to(dev)).cpu()
        outs.append((f, judge.head(f).softmax(1)))
    f = torch.cat([o[0] for o in outs])
    p = torch.cat([o[1] for o in outs])
    return p.argmax(1).numpy(), p.max(1).values.numpy(), f.numpy().astype(np.float64)


# ------------------------------------------------------------------------------------------------ unet
def make_unet(config: dict = UNET_CONFIG):
    """A fresh UNet2DModel of config (digits' UNET_CONFIG: ≈ 0.65 M parameters)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**config)


def make_scheduler(kind: str = "ddim"):
    """A diffusers DDIMScheduler ('ddim') or DDPMScheduler ('ddpm') with the training noise schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if kind == "ddim":
        return DDIMScheduler(**SCHEDULER_CONFIG)
    if kind == "ddpm":
        return DDPMScheduler(
            **{k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"}
        )
    raise ValueError(f"scheduler must be 'ddim' or 'ddpm', not {kind!r}")


def train_unet(
    steps: int = 4000,
    batch: int = 64,
    lr: float = 1.5e-3,
    p_uncond: float = 0.15,
    ema: float = 0.999,
    seed: int = 0,
    log=print,
    log_every: int = 500,
    data: Dataset | None = None,
    device: str = "cpu",
    init: nn.Module | None = None,
    min_snr: float = 0.0,
) -> tuple[nn.Module, dict]:
    """(EMA UNet, record): ε-prediction on the training split, labels dropped to NULL with p_uncond;
    init: a UNet to continue from (weights and EMA start there).

    min_snr > 0 weights each sample's loss by min(SNR_t, min_snr) / SNR_t, SNR_t = ᾱ_t / (1 − ᾱ_t)
    (Min-SNR-γ for ε-prediction, Hang et al. 2023, eq. 9): the nearly clean steps, which ε-prediction
    over-weights, count less, and training converges faster."""
    data = data or DIGITS
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = map(torch.from_numpy, data.load("train"))
    unet = make_unet(data.unet_config).to(device)
    if init is not None:
        unet.load_state_dict(init.state_dict())
    avg = make_unet(data.unet_config).to(device)
    avg.load_state_dict(unet.state_dict())
    avg.requires_grad_(False)
    sched = make_scheduler("ddpm")
    ab = sched.alphas_cumprod.float().to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr, weight_decay=1e-4)
    warm = 200
    lr_at = lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))
    lrs = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    t0, run = time.time(), 0.0
    bar = _progress(steps, f"{data.name} unet", log)
    for s in range(steps):
        j = torch.randint(0, len(y), (batch,), generator=g)
        x0 = x[j].to(device)
        labels = torch.where(torch.rand(batch, generator=g) < p_uncond, NULL, y[j]).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        a = ab[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        err = (unet(xt, t, class_labels=labels).sample - noise).square().mean((1, 2, 3))
        loss = (err * snr_weight(a.flatten(), min_snr)).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lrs.step()
        with torch.no_grad():
            d = min(ema, (1 + s) / (10 + s))
            for pa, pu in zip(avg.parameters(), unet.parameters()):
                pa.lerp_(pu, 1 - d)
        run = 0.98 * run + 0.02 * loss.item() if s else loss.item()
        bar.update()
        if (s + 1) % log_every == 0 and log:
            log(f"unet step {s + 1}/{steps} loss {run:.4f} {time.time() - t0:.0f}s")
    bar.close()
    wall = time.time() - t0
    for ba, bu in zip(avg.buffers(), unet.buffers()):
        ba.copy_(bu)
    avg.cpu().eval()
    record = {
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "p_uncond": p_uncond,
        "ema": ema,
        "seed": seed,
        "wall_time_s": round(wall, 1),
        "final_loss": round(run, 5),
        "train_size": len(y),
        "threads": torch.get_num_threads(),
        "device": str(device),
        **({"min_snr": min_snr} if min_snr > 0 else {}),
    }
    return avg, record


def snr_weight(ab: torch.Tensor, min_snr: float) -> torch.Tensor:
    """min(SNR, min_snr) / SNR of ᾱ (SNR = ᾱ / (1 − ᾱ)); ones when min_snr ≤ 0."""
    if min_snr <= 0:
        return torch.ones_like(ab)
    snr = ab / (1 - ab)
    return snr.clamp(max=min_snr) / snr


# ------------------------------------------------------------------------------------------ checkpoints
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def save(stem, net: nn.Module, kind: str, config: dict, **meta) -> Path:
    """Writes stem.safetensors (float32) and stem.json (kind, config, sha256 of the weights, meta)."""
    from safetensors.torch import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights = stem.with_suffix(".safetensors")
    save_file(
        {k: v.detach().float().contiguous() for k, v in net.state_dict().items()},
        str(weights),
        metadata={"kind": kind, "format_version": str(FORMAT_VERSION)},
    )
    record = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "weights_sha256": _sha(weights),
        **meta,
    }
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return stem


def _load(stem, kind: str, build) -> tuple[nn.Module, dict]:
    """(net, meta) from stem.{json,safetensors}, everything checked; problems -> ValueError."""
    from safetensors.torch import load_file

    stem = Path(stem)
    meta_path, weights = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    for p in (meta_path, weights):
        if not p.is_file():
            raise ValueError(
                f"{p}: checkpoint file missing (train it: python -m toydiff bridge "
                f"{kind.split('_')[0]}-train --out {stem.parent})"
            )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path}: unreadable metadata ({e})") from None
    if (
        not isinstance(meta, dict)
        or meta.get("kind") != kind
        or meta.get("format_version") != FORMAT_VERSION
    ):
        raise ValueError(f"{meta_path}: not a {kind} checkpoint of format {FORMAT_VERSION}")
    if meta.get("weights_sha256") != _sha(weights):
        raise ValueError(
            f"{weights}: weights do not match their metadata (corrupt or from another checkpoint)"
        )
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own types for truncated or garbage files
        raise ValueError(f"{weights}: corrupt weights file ({e})") from None
    net = build(meta.get("config") or {})
    expected = net.state_dict()
    bad = sorted(set(expected) ^ set(state)) + [
        k for k in expected if k in state and state[k].shape != expected[k].shape
    ]
    if bad:
        raise ValueError(
            f"{weights}: weights do not fit the {kind} architecture ({', '.join(bad[:3])} ...)"
        )
    net.load_state_dict(state)
    return net.eval(), meta


def load_unet(stem=UNET_STEM, kind: str = "digits_unet") -> tuple[nn.Module, dict]:
    """(UNet2DModel, meta) from the shipped (or given) checkpoint; missing/corrupt -> ValueError."""
    from diffusers import UNet2DModel

    def build(cfg):
        try:
            return UNet2DModel(**cfg)
        except Exception as e:
            raise ValueError(f"{stem}: bad UNet config ({e})") from None

    return _load(stem, kind, build)


def load_judge(stem=JUDGE_STEM, kind: str = "digits_judge") -> tuple[Judge, dict]:
    """(Judge, meta) from the shipped (or given) checkpoint; missing/corrupt -> ValueError."""
    return _load(stem, kind, lambda cfg: Judge(**cfg))


# ---------------------------------------------------------------------------------------------- sampling
def eps_fn(unet, pos, neg) -> loop.EpsFn:
    """The loop's `eps_fn` for a class-conditional UNet: labels [NULL]*B + [pos]*B + [neg]*B in one forward.

    pos/neg: a class (int) or a (B,) tensor of classes; NULL for no concept. Branches whose labels equal an
    earlier branch's are not recomputed (unguided removal passes pos = NULL, so ε_p is ε_∅ itself).
    """

    def fn(x, t):
        b = x.shape[0]
        labels = [torch.full((b,), NULL, dtype=torch.long)]
        for c in (pos, neg):
            labels.append(
                torch.as_tensor(c, dtype=torch.long).expand(b)
                if c is not None
                else torch.full((b,), NULL, dtype=torch.long)
            )
        distinct = []  # indices of branches that need their own forward
        same = []
        for i, lab in enumerate(labels):
            j = next((k for k in distinct if torch.equal(labels[k], lab)), None)
            same.append(i if j is None else j)
            if j is None:
                distinct.append(i)
        out = unet(
            torch.cat([x] * len(distinct)), t, class_labels=torch.cat([labels[i] for i in distinct])
        )
        chunks = dict(zip(distinct, out.sample.chunk(len(distinct))))
        return {name: chunks[same[i]] for i, name in enumerate(loop.BRANCHES)}

    return fn


@torch.no_grad()
def sample(
    unet,
    rule: str,
    knobs: dict | None = None,
    n: int = 500,
    *,
    pos=NULL,
    neg=None,
    steps: int = 50,
    seed: int = 0,
    batch: int = 1000,
    hook=None,
) -> tuple[torch.Tensor, dict]:
    """(images (n,1,S,S) clamped to [−1,1], per-step info) from bridge.loop.sample with DDIM(η=0)
    (η = 1 for tracked DNG, whose posterior filters a stochastic chain); S = the UNet's sample_size.

    neg: a class, or an (n,) array of classes (one per sample); pos: NULL (unguided) or a class.
    """
    knobs = loop.default_knobs(rule, **(knobs or {}))
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    noise = torch.randn((n, 1, size, size), generator=g)
    neg_all = None if neg is None else torch.as_tensor(neg, dtype=torch.long).expand(n)
    pos_all = torch.as_tensor(pos, dtype=torch.long).expand(n)
    images, infos = [], []
    for i in range(0, n, batch):
        sched = make_scheduler("ddim")
        sched.set_timesteps(steps)
        sl = slice(i, i + batch)
        fn = eps_fn(unet, pos_all[sl], None if neg_all is None else neg_all[sl])
        res = loop.sample(
            fn,
            sched,
            noise[sl],
            sched.timesteps,
            rule,
            knobs,
            step_kwargs={"generator": g},
            hook=hook,
        )  # the generator draws the noise of stochastic steps (tracked DNG runs η = 1)
        images.append(res.latents.clamp(-1, 1))
        infos.append(res.info)
    info = {
        k: infos[0][k] if k == "t" else np.concatenate([f[k] for f in infos], 1) for k in infos[0]
    }
    return torch.cat(images), with_push(info, rule)


def with_push(info: dict, rule: str) -> dict:
    """info plus push_neg (S, N) = |b_t|·|γλ⁻|·‖Δ_n‖, the step's displacement of x_t by the negative
    term (MATH §3.1), b_t the DDIM coefficient of ε̂ at the η the rule runs (tracked DNG: 1)."""
    from .. import guidance

    if "scale_neg" not in info or "d_neg_sq" not in info:
        return info
    state = guidance.rule(rule).state
    eta = state.eta if state is not None and state.eta is not None else 0.0
    ab = make_scheduler("ddim").alphas_cumprod.double().numpy()
    ab_t = ab[info["t"].astype(int)]  # (S,)
    ab_next = np.append(ab_t[1:], 1.0)  # set_alpha_to_one: the last step lands on ᾱ = 1
    sigma = eta * np.sqrt((1 - ab_next) / (1 - ab_t) * np.maximum(1 - ab_t / ab_next, 0.0))
    b = np.sqrt(np.maximum(1 - ab_next - sigma**2, 0.0)) - np.sqrt(ab_next * (1 - ab_t) / ab_t)
    push = np.abs(b)[:, None] * np.abs(info["scale_neg"]) * np.sqrt(info["d_neg_sq"])
    return {**info, "push_neg": push.astype(np.float32)}


# --------------------------------------------------------------------------------------------- metrics
def tv(hist: np.ndarray, ref: np.ndarray) -> float:
    """Total variation ½Σ|p − q| between two class histograms."""
    p, q = np.asarray(hist, float), np.asarray(ref, float)
    return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())


def frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, d)."""
    from scipy import linalg

    m1, m2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(c1 @ c2)
    if not np.isfinite(covmean).all():
        eps = 1e-6 * np.eye(len(c1))
        covmean = linalg.sqrtm((c1 + eps) @ (c2 + eps))
    covmean = covmean.real
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


# ------------------------------------------------------------------------------------------------ train
def train_all(
    out,
    unet_steps: int = 4000,
    batch: int = 64,
    lr: float = 1.5e-3,
    judge_epochs: int = 25,
    seed: int = 0,
    threads: int = 2,
    log=print,
    data: Dataset | None = None,
    device: str = "cpu",
    judge_batch: int = 64,
    check_n: int = 2000,
    check_steps: int = 50,
    p_uncond: float = 0.15,
    resume: bool = False,
    keep_judge: bool = False,
    min_snr: float = 0.0,
) -> dict:
    """Trains judge and UNet, checks unguided samples, writes <name>_{unet,judge}.* in out.

    resume: keep out's judge and continue training out's UNet (its record nests the earlier one, and
    total_wall_time_s adds up both runs); keep_judge: keep out's judge, train a fresh UNet."""
    data = data or DIGITS
    torch.set_num_threads(threads)
    t_start = time.time()
    out = Path(out)
    init, before = None, {}
    if resume or keep_judge:
        judge, jmeta = load_judge(out / f"{data.name}_judge", f"{data.name}_judge")
        jrec = jmeta["train"]
    else:
        judge, jrec = train_judge(
            judge_epochs, judge_batch, seed=seed, log=log, data=data, device=device
        )
        save(
            out / f"{data.name}_judge",
            judge,
            f"{data.name}_judge",
            judge.config,
            train=jrec,
            data=data.description + "; the judge's accuracy is on the held-out split",
        )
    if resume:
        init, umeta = load_unet(out / f"{data.name}_unet", f"{data.name}_unet")
        before = {"continues": umeta["train"]}
    log(f"judge: held-out accuracy {jrec['test_accuracy']:.4f} in {jrec['wall_time_s']} s")
    unet, urec = train_unet(
        unet_steps,
        batch,
        lr,
        p_uncond,
        seed=seed,
        log=log,
        data=data,
        device=device,
        init=init,
        min_snr=min_snr,
    )
    urec.update(before)
    x, _ = sample(unet, "none", n=check_n, steps=check_steps, seed=seed, batch=500)
    labels, conf, _ = judge_images(judge, x)
    _, y_all = data.load("all")
    check = {
        "n": check_n,
        "steps": check_steps,
        "rule": "none (null class)",
        "hist": np.round(class_rates(labels), 4).tolist(),
        "tv_vs_data": round(tv(class_rates(labels), class_rates(y_all)), 4),
        "off_manifold_share": round(float((conf < 0.5).mean()), 4),
    }
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in data.unet_config.items()}
    urec["total_wall_time_s"] = round(  # judge + UNet + the unguided check (+ the runs resumed)
        time.time() - t_start + before.get("continues", {}).get("total_wall_time_s", 0.0), 1
    )
    save(
        out / f"{data.name}_unet",
        unet,
        f"{data.name}_unet",
        cfg,
        scheduler=SCHEDULER_CONFIG,
        null_class=NULL,
        train=urec,
        unguided_check=check,
        judge_test_accuracy=jrec["test_accuracy"],
        data=data.description,
    )
    log(
        f"unet: {urec['wall_time_s']} s, loss {urec['final_loss']}; unguided TV vs data "
        f"{check['tv_vs_data']}; total {urec['total_wall_time_s']} s"
    )
    return {"judge": jrec, "unet": urec, "unguided": check}
