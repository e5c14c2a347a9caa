"""Stable Diffusion 1.5 / SDXL adapters: load, encode the three prompts, build `eps_fn`, decode.

The ∅ branch is the encoding of "" (as the CCFG code and SD 1.5 do) unless null="zeros", SDXL's own
default (`force_zeros_for_empty_prompt`). Everything else reuses the pipeline's own pieces.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import NamedTuple

import torch

from . import loop

NULLS = ("empty", "zeros")


class Prompts(NamedTuple):
    embeds: torch.Tensor  # (3, L, D) in loop.BRANCHES order: "", prompt, negative
    added: dict | None  # SDXL: {"text_embeds": (3, P), "time_ids": (3, 6)}; None for SD 1.5


def pick_device() -> torch.device:
    """CUDA when there is one, else the CPU with a warning (a real SD model is slow there)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    warnings.warn(
        "no CUDA device: running on the CPU (minutes per image at full size)", stacklevel=2
    )
    return torch.device("cpu")


def load(model: str, device: torch.device | None = None, *, local_files_only: bool | None = None):
    """The diffusers pipeline at a hub id or local folder; weights not available -> ValueError saying why."""
    from diffusers import DiffusionPipeline

    from .checks import WHERE, check_model

    check_model(model)
    if local_files_only is None:  # honour HF_HUB_OFFLINE=1, else let the hub download
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    dtype = torch.float16 if cuda else torch.float32
    try:
        pipe = DiffusionPipeline.from_pretrained(
            os.path.expanduser(model), dtype=dtype, local_files_only=local_files_only
        )
    except (OSError, ValueError) as e:  # hub errors are OSError; a malformed id is a ValueError
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise ValueError(
            f"--model: cannot load {model} ({first}); download it once with network "
            f"(hf download {model}) or put {WHERE} at a local path"
        ) from None
    if not hasattr(pipe, "encode_prompt") or not hasattr(pipe, "unet"):
        raise ValueError(
            f"--model: {model} is a {type(pipe).__name__}, not a Stable Diffusion (XL) pipeline"
        )
    return pipe.to(device or pick_device())  # the CPU warning only once the weights are there


def is_xl(pipe) -> bool:
    """Whether the pipeline is SDXL (two text encoders, micro-conditioning)."""
    return hasattr(pipe, "_get_add_time_ids")


def encode(
    pipe, prompt: str, negative: str, *, size: tuple[int, int], null: str = "empty"
) -> Prompts:
    """The ∅, positive and negative conditionings, encoded in one call of the pipeline's encode_prompt."""
    if null not in NULLS:
        raise ValueError(f"null: must be one of {', '.join(NULLS)}, got {null!r}")
    texts = ["", prompt, negative]
    device = pipe._execution_device
    if not is_xl(pipe):
        embeds, _ = pipe.encode_prompt(texts, device, 1, False)
        return Prompts(_null(embeds, null), None)
    embeds, _, pooled, _ = pipe.encode_prompt(
        texts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    proj = (
        pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 else int(pooled.shape[-1])
    )
    time_ids = pipe._get_add_time_ids(
        size,
        (0, 0),
        size,
        dtype=embeds.dtype,  # no crop, as the stock default
        text_encoder_projection_dim=proj,
    )
    added = {"text_embeds": _null(pooled, null), "time_ids": time_ids.to(device).repeat(3, 1)}
    return Prompts(_null(embeds, null), added)


def _null(x: torch.Tensor, null: str) -> torch.Tensor:
    """x with the ∅ row (index 0) zeroed when null == "zeros"."""
    return torch.cat([torch.zeros_like(x[:1]), x[1:]]) if null == "zeros" else x


def make_unet_fn(pipe, prompts: Prompts, batch: int):
    """fn(x, t, rows) -> ε of `batch` latents under the conditionings `rows` (indices into prompts,
    0 = ∅, 1 = prompt, 2 = negative), stacked row by row from ONE UNet forward of len(rows)·batch."""

    def fn(x, t, rows):
        pick = lambda v: v[list(rows)].repeat_interleave(batch, dim=0)  # (R·B, ...): row-major
        added = None if prompts.added is None else {k: pick(v) for k, v in prompts.added.items()}
        return pipe.unet(
            torch.cat([x] * len(rows)),
            t,
            encoder_hidden_states=pick(prompts.embeds),
            added_cond_kwargs=added,
            return_dict=False,
        )[0]

    return fn


def make_eps_fn(pipe, prompts: Prompts, batch: int) -> loop.EpsFn:
    """eps_fn(x, t) -> the three branches of `batch` latents from ONE UNet forward of 3·batch."""
    unet_fn = make_unet_fn(pipe, prompts, batch)
    return lambda x, t: dict(zip(loop.BRANCHES, unet_fn(x, t, (0, 1, 2)).chunk(3), strict=True))


def default_size(pipe) -> tuple[int, int]:
    """(height, width) the pipeline generates by default."""
    side = getattr(pipe, "default_sample_size", None) or pipe.unet.config.sample_size
    return side * pipe.vae_scale_factor, side * pipe.vae_scale_factor


@torch.no_grad()
def decode(pipe, latents: torch.Tensor):
    """(B, H, W, 3) float images in [0, 1]: the pipeline's own VAE decode, safety checker and postprocess."""
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and getattr(
        vae.config, "force_upcast", False
    )  # SDXL VAE overflows
    if upcast:
        vae.to(torch.float32)
    z = latents.to(vae.dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        view = lambda v: torch.tensor(v).view(1, -1, 1, 1).to(z.device, z.dtype)
        z = z * view(std) / vae.config.scaling_factor + view(mean)
    else:
        z = z / vae.config.scaling_factor
    image = vae.decode(z, return_dict=False)[0]
    if upcast:
        vae.to(torch.float16)
    nsfw = None
    if getattr(pipe, "safety_checker", None) is not None:
        image, nsfw = pipe.run_safety_checker(image, image.device, image.dtype)
    if getattr(pipe, "watermark", None) is not None:
        image = pipe.watermark.apply_watermark(image)
    denorm = None if nsfw is None else [not n for n in nsfw]
    return pipe.image_processor.postprocess(image, output_type="np", do_denormalize=denorm)


class Start(NamedTuple):
    scheduler: object  # a copy of the pipeline's scheduler, timesteps set
    timesteps: torch.Tensor  # (S,)
    latents: torch.Tensor  # (B, C, h, w) x_T, one per seed
    step_kwargs: dict  # the pipeline's extra scheduler.step arguments (eta, generator)


def start(pipe, seeds, steps: int, size: tuple[int, int], dtype, eta: float = 0.0) -> Start:
    """The pipeline's own scheduler copy, timesteps and x_T (one CPU generator per seed)."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps

    device = pipe._execution_device
    # a copy: the run never touches the pipeline's scheduler (from_config would lose the pipeline's
    # steps_offset fix for old configs); set_timesteps resets multistep state
    scheduler = copy.deepcopy(pipe.scheduler)
    timesteps, _ = retrieve_timesteps(scheduler, steps, device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    # one CPU generator per seed: a seed gives the same x_T whatever the batch and the device
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    latents = pipe.prepare_latents(
        len(gens), pipe.unet.config.in_channels, *size, dtype, device, gens
    )
    # prepare_latents scales by the *pipeline's* scheduler's σ_max, which for Euler-type schedulers
    # depends on its last set_timesteps (or none): use the σ_max of this run's timesteps instead
    latents = latents * (scheduler.init_noise_sigma / pipe.scheduler.init_noise_sigma)
    return Start(scheduler, timesteps, latents, pipe.prepare_extra_step_kwargs(gens, eta))


def finish(pipe, latents: torch.Tensor, output_type: str = "np"):
    """The latents themselves (output_type="latent") or their decoded images."""
    return latents if output_type == "latent" else decode(pipe, latents)


@torch.no_grad()
def generate(
    pipe,
    prompt: str,
    negative: str,
    rule: str,
    knobs: dict,
    seeds,
    *,
    steps: int = 50,
    size: tuple[int, int] | None = None,
    null: str = "empty",
    eta: float = 0.0,
    hook=None,
    output_type: str = "np",
):
    """(images (B, H, W, 3) in [0, 1], or latents with output_type="latent"; per-step info), one per seed."""
    size = tuple(size or default_size(pipe))
    prompts = encode(pipe, prompt, negative, size=size, null=null)
    run = start(pipe, seeds, steps, size, prompts.embeds.dtype, eta)
    eps_fn = make_eps_fn(pipe, prompts, len(seeds))
    result = loop.sample(
        eps_fn,
        run.scheduler,
        run.latents,
        run.timesteps,
        rule,
        knobs,
        step_kwargs=run.step_kwargs,
        hook=hook,
    )
    return finish(pipe, result.latents, output_type), result.info
