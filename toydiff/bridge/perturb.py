"""Perturbed-branch guidance on images, run by diffusers' own code (MATH §3.1): PAG, SEG and skip-layer
guidance as diffusers' guider hooks on the UNet's mid-block self-attention (SD 1.5, SDXL, the digits
UNet2DModel), SAG as diffusers' StableDiffusionSAGPipeline (SD 1.5 only). Per-step diagnostics come in
`bridge.loop`'s format, (S, B) float32 arrays plus "t". torch and diffusers are imported lazily.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import NamedTuple

from .. import guidance

UnetFn = Callable  # (x, t, rows) -> ε of rows stacked: 0 = ∅, 1 = the condition (prompt or class)


class Method(NamedTuple):
    name: str
    label: str
    w_pert: float  # default perturbation scale: diffusers' (or the paper's) default
    guider: str | None  # a diffusers.guiders class; None: the method is a whole pipeline (SAG)
    prefix: str = ""  # the guider's keyword prefix: <prefix>_scale, <prefix>_start, <prefix>_stop
    config: Callable | None = None  # unet -> {keyword: diffusers hook config on its mid block}


# ------------------------------------------------------------------------------------ diffusers guiders
def mid_layers(unet) -> tuple[str, list[int], bool]:
    """(fqn, indices, transformer): the mid block's self-attention blocks, as PAG's default "mid".

    UNet2DConditionModel: every BasicTransformerBlock of mid_block.attentions.0; UNet2DModel (digits):
    the plain Attention layer mid_block.attentions.0 (`transformer` False). None there -> ValueError."""
    mid = getattr(unet, "mid_block", None)
    attentions = getattr(mid, "attentions", None)
    if not attentions:
        raise ValueError(f"{type(unet).__name__} has no mid-block attention to perturb")
    blocks = getattr(attentions[0], "transformer_blocks", None)
    if blocks is None:
        return "mid_block.attentions", [0], False
    return "mid_block.attentions.0.transformer_blocks", list(range(len(blocks))), True


def _pag_config(unet) -> dict:
    """PAG: self-attention scores → identity (softmax(QKᵀ/√d)V → V), diffusers' LayerSkipConfig."""
    from diffusers.hooks import LayerSkipConfig

    fqn, idx, _ = mid_layers(unet)
    skip = LayerSkipConfig(
        idx, fqn, skip_attention=False, skip_attention_scores=True, skip_ff=False
    )
    return {"perturbed_guidance_config": skip}


def _slg_config(unet) -> dict:
    """SLG: the whole block skipped (on UNet2DModel its bare Attention layer, which has no FF)."""
    from diffusers.hooks import LayerSkipConfig

    fqn, idx, transformer = mid_layers(unet)
    return {
        "skip_layer_config": LayerSkipConfig(idx, fqn, skip_attention=True, skip_ff=transformer)
    }


def _seg_config(unet) -> dict:
    """SEG: self-attention queries blurred (diffusers' default σ: 'infinite')."""
    from diffusers.hooks.smoothed_energy_guidance_utils import SmoothedEnergyGuidanceConfig

    fqn, idx, _ = mid_layers(unet)
    return {"seg_guidance_config": SmoothedEnergyGuidanceConfig(idx, fqn)}


def make_guider(m: Method, unet, gamma: float, w_pert: float):
    """diffusers' guider of method m on unet's mid block, perturbing at every step (window 0 → 1,
    as the PAG/SAG pipelines do; the guiders' own default window is 1 %–20 % of the steps)."""
    import diffusers.guiders

    _quiet_guiders()
    window = {f"{m.prefix}_scale": w_pert, f"{m.prefix}_start": 0.0, f"{m.prefix}_stop": 1.0}
    return getattr(diffusers.guiders, m.guider)(guidance_scale=gamma, **window, **m.config(unet))


def _hook_configs(guider) -> list[tuple[str, object]]:
    """(hook name, config) pairs of the guider's perturbation hooks."""
    if hasattr(guider, "seg_guidance_config"):
        return list(zip(guider._seg_layer_hook_names, guider.seg_guidance_config, strict=True))
    return list(zip(guider._skip_layer_hook_names, guider.skip_layer_config, strict=True))


@contextlib.contextmanager
def perturbed(unet, guider):
    """The guider's own diffusers hooks registered on unet for the block, removed after.

    Not guider.prepare_models: in diffusers 0.42.1 SEG's prepare_models never counts its batches, so
    through that protocol its hooks are never registered (measured: no change in ε)."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.layer_skip import _apply_layer_skip_hook
    from diffusers.hooks.smoothed_energy_guidance_utils import _apply_smoothed_energy_guidance_hook

    pairs = _hook_configs(guider)
    for name, config in pairs:
        if hasattr(guider, "seg_blur_sigma"):
            _apply_smoothed_energy_guidance_hook(unet, config, guider.seg_blur_sigma, name=name)
        else:
            _apply_layer_skip_hook(unet, config, name=name)
    try:
        yield
    finally:
        registry = HookRegistry.check_if_exists_or_initialize(unet)
        for name, _ in pairs:
            registry.remove_hook(name, recurse=True)


# --------------------------------------------------------------------------------------- the loop
def diagnostics(uncond, cond, eps, shift, gamma: float) -> dict:
    """(B,) float32 per sample: ‖Δ_p‖², ‖shift‖² and ‖ε̂ − ε_p‖ as `bridge.loop`, plus ‖ε̂ − ε_cfg‖.

    shift: the perturbation difference the method scales (ε_p − ε_pert; SAG: ε_∅ − ε_degraded)."""
    sq = guidance._sq_norm  # float32 even for float16 branches
    eps_cfg, _ = guidance.cfg(uncond, cond, gamma=gamma)
    return {
        "d_pos_sq": sq(cond - uncond),
        "d_pert_sq": sq(shift),
        "guidance_norm": sq(eps - cond) ** 0.5,  # distance from plain ε_p, as bridge.loop
        "pert_norm": sq(eps - eps_cfg) ** 0.5,  # what the perturbation adds to CFG: w·‖shift‖
    }


def guided_step(unet_fn: UnetFn, unet, guider, x, t, gamma: float):
    """(ε̂, info) at one step: ε_∅, ε_p in one forward, ε_pert under diffusers' hooks, guider.forward."""
    uncond, cond = unet_fn(x, t, (0, 1)).chunk(2)
    with perturbed(unet, guider):
        pert = unet_fn(x, t, (1,))
    guider.set_state(0, None, t)  # no step count: the guider's window never switches it off
    eps = guider.forward(cond, uncond, pert).pred  # ε_∅ + γΔ_p + w(ε_p − ε_pert)
    return eps, diagnostics(uncond, cond, eps, cond - pert, gamma)


def sample(unet_fn: UnetFn, unet, guider, run, gamma: float):
    """loop.LoopResult of the guided denoising from `run` (sd.Start: scheduler, timesteps, x_T, kwargs)."""
    from . import loop

    latents, rows = run.latents, []
    for t in run.timesteps:
        x_in = run.scheduler.scale_model_input(latents, t)
        eps, info = guided_step(unet_fn, unet, guider, x_in, t, gamma)
        latents = run.scheduler.step(eps, t, latents, **run.step_kwargs, return_dict=False)[0]
        rows.append(info)
    return loop.LoopResult(latents, loop.stack_info(rows, run.timesteps))


# ---------------------------------------------------------------------------------- Stable Diffusion
def _quiet_guiders():
    """diffusers' guiders warn 'experimental' on every construction; one notice in the docs suffices."""
    from diffusers.utils import logging

    logging.get_logger("diffusers.guiders.guider_utils").setLevel(logging.ERROR)


def _run_guider(
    m: Method, pipe, prompt, seeds, gamma, w_pert, *, steps, size, null, eta, output_type
):
    """(images or latents, info) of a guider method on an SD 1.5 / SDXL pipeline."""
    import torch

    from . import sd

    prompts = sd.encode(pipe, prompt, "", size=size, null=null)  # row 2 (negative) unused
    run = sd.start(pipe, seeds, steps, size, prompts.embeds.dtype, eta)
    guider = make_guider(m, pipe.unet, gamma, w_pert)
    with torch.no_grad():
        res = sample(sd.make_unet_fn(pipe, prompts, len(seeds)), pipe.unet, guider, run, gamma)
        return sd.finish(pipe, res.latents, output_type), res.info


def _run_sag(m: Method, pipe, prompt, seeds, gamma, w_pert, *, steps, size, null, eta, output_type):
    """(images or latents, info) of diffusers' StableDiffusionSAGPipeline, observed from outside."""
    import torch
    from diffusers import StableDiffusionSAGPipeline

    from . import sd

    if sd.is_xl(pipe):
        raise ValueError("sag: diffusers has SAG only for SD 1.5 (StableDiffusionSAGPipeline)")
    prompts = sd.encode(pipe, prompt, "", size=size, null=null)  # the same ∅ as every bridge rule
    sag = StableDiffusionSAGPipeline.from_pipe(pipe, scheduler=copy.deepcopy(pipe.scheduler))
    sag.set_progress_bar_config(disable=True)
    rows = []
    with _observe_sag(sag, rows, gamma):
        out = sag(
            prompt_embeds=prompts.embeds[1:2],
            negative_prompt_embeds=prompts.embeds[:1],
            height=size[0],
            width=size[1],
            num_inference_steps=steps,
            guidance_scale=gamma,
            sag_scale=w_pert,
            eta=eta,
            num_images_per_prompt=len(seeds),
            generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
            output_type=output_type,
        ).images
    from . import loop

    return out, loop.stack_info(rows, sag.scheduler.timesteps)


@contextlib.contextmanager
def _observe_sag(sag, rows: list, gamma: float):
    """Fills rows with each step's diagnostics from the UNet outputs and the ε̂ given to the scheduler."""
    import torch

    outs = []
    handle = sag.unet.register_forward_hook(lambda mod, a, out: outs.append(out[0]))
    step = sag.scheduler.step

    def observed_step(eps, t, x, *args, **kwargs):
        uncond, cond = outs[0].chunk(2)  # then, with w > 0, ε of the degraded latents
        shift = uncond - outs[1] if len(outs) > 1 else torch.zeros_like(uncond)
        rows.append(diagnostics(uncond, cond, eps, shift, gamma))
        outs.clear()
        return step(eps, t, x, *args, **kwargs)

    sag.scheduler.step = observed_step
    try:
        yield
    finally:
        handle.remove()
        del sag.scheduler.step


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "pag",
            "Perturbed-attention guidance (Ahn et al. 2024)",
            3.0,
            "PerturbedAttentionGuidance",
            "perturbed_guidance",
            _pag_config,
        ),
        Method("sag", "Self-attention guidance (Hong et al. 2023)", 0.75, None),
        Method(
            "seg",
            "Smoothed energy guidance (Hong 2024)",
            3.0,
            "SmoothedEnergyGuidance",
            "seg_guidance",
            _seg_config,
        ),
        Method(
            "slg",
            "Skip-layer guidance (Stability AI, SD 3.5)",
            2.8,
            "SkipLayerGuidance",
            "skip_layer_guidance",
            _slg_config,
        ),
    )
}


def method(name: str) -> Method:
    """The registered method; unknown name -> ValueError listing the valid names."""
    if name not in METHODS:
        raise ValueError(f"unknown perturbation method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def generate(
    pipe,
    prompt: str,
    name: str,
    seeds,
    *,
    gamma: float = 7.5,
    w_pert: float | None = None,
    steps: int = 50,
    size: tuple[int, int] | None = None,
    null: str = "empty",
    eta: float = 0.0,
    output_type: str = "np",
):
    """(images (B, H, W, 3) in [0, 1] or latents; per-step info) under the method, one per seed."""
    from . import sd

    m = method(name)
    run = _run_sag if m.guider is None else _run_guider
    w = m.w_pert if w_pert is None else float(w_pert)
    kw = dict(steps=steps, size=tuple(size or sd.default_size(pipe)), null=null, eta=eta)
    return run(m, pipe, prompt, seeds, float(gamma), w, **kw, output_type=output_type)


# ------------------------------------------------------------------------------------------- digits
def digits_unet_fn(unet, pos: int, batch: int) -> UnetFn:
    """fn(x, t, rows) for the class-conditional digits UNet: row 0 = the null class, row 1 = pos."""
    import torch

    from .digits import NULL

    labels = torch.tensor([NULL, pos], dtype=torch.long)
    return lambda x, t, rows: (
        unet(
            torch.cat([x] * len(rows)), t, class_labels=labels[list(rows)].repeat_interleave(batch)
        ).sample
    )


def sample_digits(
    unet, name: str, pos: int, n: int, *, gamma: float = 3.0, w_pert=None, steps=50, seed=0
):
    """(images (n,1,8,8) clamped to [−1,1], per-step info) of the digits UNet under a guider method."""
    import torch

    from . import digits, sd

    m = method(name)
    if m.guider is None:
        raise ValueError(
            f"{name}: diffusers' SAG needs a text UNet's transformer attention (SD 1.5)"
        )
    scheduler = digits.make_scheduler("ddim")
    scheduler.set_timesteps(steps)
    noise = torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))
    run = sd.Start(scheduler, scheduler.timesteps, noise, {})
    w = m.w_pert if w_pert is None else float(w_pert)
    with torch.no_grad():
        res = sample(digits_unet_fn(unet, pos, n), unet, make_guider(m, unet, gamma, w), run, gamma)
    return res.latents.clamp(-1, 1), res.info
