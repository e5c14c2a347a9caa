"""The guided denoising loop: any diffusers scheduler, an `eps_fn` that gives the ∅, positive and negative
branches in one forward, and a toydiff guidance rule applied to the torch tensors as they are (MATH §3).

`eps_fn(model_input, t) -> {"uncond": ε_∅, "pos": ε_p, "neg": ε_n}`, each (B, C, H, W). Text models build
it in `sd.py`; a class-conditional `UNet2DModel` needs only `labels = [null]*B + [pos]*B + [neg]*B` and
`lambda x, t: dict(zip(BRANCHES, unet(torch.cat([x] * 3), t, class_labels=labels).sample.chunk(3)))`.

A diffusers scheduler takes one ε per step, for both the data estimate and the re-noising direction.
A rule that re-noises along another prediction (CFG++: x̂0 from ε_∅ + λΔ_p, direction ε_∅) is given
as the one ε whose first-order step lands where the rule's step does (`renoised`): exact for DDIM
(any η), DDPM and Euler (ancestral too); a multistep scheduler (PNDM, DPM-Solver, UniPC) mixes that
ε with earlier steps' as it would any ε, so there CFG++ holds to first order only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from .. import guidance, schedule

BRANCHES = ("uncond", "pos", "neg")  # order of the three branches in the batched forward
EpsFn = Callable[[torch.Tensor, torch.Tensor], dict]
Hook = Callable[[int, torch.Tensor, dict, torch.Tensor, dict], None]  # (i, t, branches, eps, info)
# schedulers whose step is the stochastic (η = 1) kernel without an η argument
KERNEL_SCHEDULERS = ("DDPMScheduler", "EulerAncestralDiscreteScheduler")


class LoopResult(NamedTuple):
    latents: torch.Tensor  # (B, C, H, W) final latents
    info: dict  # name -> (S, B) float32 numpy per-step diagnostics; "t" -> (S,)


def bridge_rule(name: str) -> guidance.Rule:
    """The registered rule, checked to need only branches an image model gives (∅, positive, negative)."""
    r = guidance.rule(name)
    missing = set(r.branches) - {*BRANCHES, "cond"}
    if missing or (r.state is not None and r.state.exact):
        why = f"branch {', '.join(sorted(missing))}" if missing else "an exact posterior"
        raise ValueError(f"rule {name!r} needs {why}, which an image model does not give")
    return r


def default_knobs(name: str, **overrides) -> dict[str, float]:
    """The rule's knobs (its own and its state's) at their registry defaults, then overrides it
    has, and a weight schedule on γ (guidance.SCHEDULE_KNOBS, guidance.schedule_knobs) if given."""
    params = guidance.rule(name).all_params
    keep = set(params) | (set(guidance.SCHEDULE_KNOBS) if "gamma" in params else set())
    knobs = {k: p.default for k, p in params.items()}
    knobs.update({k: v for k, v in overrides.items() if k in keep and v is not None})
    return {k: float(v) for k, v in knobs.items()}


def guide(
    r: guidance.Rule, branches: dict, knobs: dict, extra=None, kappa=1.0, at=None
) -> tuple[torch.Tensor, dict]:
    """(ε̂, info): rule r on the branches ("cond" = the positive prompt) plus ‖Δ_n‖², ‖Δ_p‖², ‖ε̂ − ε_p‖;
    info["renoise"] where the rule re-noises along another prediction (CFG++).

    extra: the rule state's keyword arguments (guidance.State.read); at = (x_t, ᾱ_t) for rules that
    act in x̂0 or v space."""
    eps, info = guidance.apply(r, {**branches, "cond": branches["pos"]}, knobs, extra, kappa, at)
    sq = guidance._sq_norm  # float32 even for float16 branches
    info["d_neg_sq"] = sq(branches["neg"] - branches["uncond"])  # (B,)
    info["d_pos_sq"] = sq(branches["pos"] - branches["uncond"])  # (B,)
    info["guidance_norm"] = torch.sqrt(sq(eps - branches["pos"]))  # (B,) distance from plain ε_p
    return eps, info


def _alpha_bars(scheduler, timesteps, i):
    """(ᾱ_t, ᾱ_t') in float64 for step i; ᾱ = 1 after the last step, as in the toy sampler."""
    abs_ = scheduler.alphas_cumprod.double()
    ab = abs_[int(timesteps[i])]
    ab_next = (
        abs_[int(timesteps[i + 1])] if i + 1 < len(timesteps) else torch.ones((), dtype=abs_.dtype)
    )
    return ab, ab_next


def _step_kwargs(r: guidance.Rule, scheduler, step_kwargs: dict | None) -> dict:
    """The scheduler's step arguments, with the η the rule's state needs (tracked DNG: the DDPM
    kernel, η = 1) where the scheduler takes one (DDIM); DDPM schedulers are that kernel already."""
    kwargs = dict(step_kwargs or {})
    params = inspect.signature(scheduler.step).parameters
    takes = "eta" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
    if r.state is not None and r.state.eta is not None and takes:
        kwargs["eta"] = r.state.eta
    return kwargs


def renoised(eps, renoise, ab, ab_next, eta=0.0):
    """The one ε whose DDIM(η) step from ᾱ to ᾱ' takes x̂0 from `eps` and re-noises along `renoise`
    (CFG++, MATH §3.3): DDIM moves x by (d − ac)ε, CFG++ by d·ε_re − ac·ε̂ (a = √(ᾱ'/ᾱ),
    c = √(1−ᾱ), d = √(1−ᾱ'−σ²)), so ε = (d·ε_re − ac·ε̂)/(d − ac), weights summing to 1."""
    sigma2 = float(schedule.ddim_sigma(float(ab), float(ab_next), eta)) ** 2
    d = max(1 - float(ab_next) - sigma2, 0.0) ** 0.5
    ac = (float(ab_next) / float(ab) * (1 - float(ab))) ** 0.5
    if abs(d - ac) < 1e-12:  # ᾱ' = ᾱ: no step to take
        return eps
    return (d * renoise.float() - ac * eps.float()).div(d - ac).to(eps.dtype)


def _scheduler_levels(scheduler, timesteps, i):
    """(ᾱ_t, ᾱ_t') of the step the scheduler takes at step i: from its σ grid (Euler-type), from
    t − T/N with final_alpha_cumprod past the end (DDIM-type), else the next timestep's."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) == len(timesteps) + 1:
        return tuple(1 / (1 + float(sigmas[j]) ** 2) for j in (i, i + 1))
    final = getattr(scheduler, "final_alpha_cumprod", None)
    if final is not None and getattr(scheduler, "num_inference_steps", None):
        t = int(timesteps[i])
        prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        abs_ = scheduler.alphas_cumprod
        return float(abs_[t]), float(abs_[prev] if prev >= 0 else final)
    return tuple(float(a) for a in _alpha_bars(scheduler, timesteps, i))


def _kernel_eta(scheduler, step_kwargs: dict) -> float:
    """The η of the scheduler's step: its `eta` argument, 1 for the stochastic kernels, else 0."""
    if type(scheduler).__name__ in KERNEL_SCHEDULERS:
        return 1.0
    return float(step_kwargs.get("eta", 0.0))


@torch.no_grad()
def sample(
    eps_fn: EpsFn,
    scheduler,
    latents,
    timesteps,
    rule: str,
    knobs: dict,
    *,
    step_kwargs=None,
    hook: Hook | None = None,
) -> LoopResult:
    """Denoises latents with the guided rule; its state (DNG's p_t) rides along like the toy
    sampler's carry, through the same guidance.State functions (DNG: Bayes' rule for the steps of
    the stochastic kernel, η = 1, where the scheduler takes η). Knobs with a weight schedule
    (guidance.SCHEDULE_KNOBS) give step t the γ·g(t) of the toy sampler (MATH §3.3)."""
    r = bridge_rule(rule)
    state = r.state.init(latents.float(), knobs) if r.state else None
    step_kwargs = _step_kwargs(r, scheduler, step_kwargs)
    ref = None
    rows = []
    levels = torch.stack(  # the run's ᾱ grid, noise to data (a rule state may read it: FBG)
        [_alpha_bars(scheduler, timesteps, i)[0] for i in range(len(timesteps))]
        + [torch.ones((), dtype=torch.float64)]
    ).to(latents.device, torch.float32)
    for i, t in enumerate(timesteps):
        ab, ab_next = _alpha_bars(scheduler, timesteps, i)
        if ref is None:  # κ_ref: the middle step's kernel temperature (MATH §3.1)
            mid = (max(len(timesteps), 2) - 1) // 2
            ref = schedule.kernel_kappa(*(float(a) for a in _alpha_bars(scheduler, timesteps, mid)))
        kappa = min(
            float(schedule.kernel_kappa(float(ab), float(ab_next))) / ref, schedule.KAPPA_MAX
        )
        x_in = scheduler.scale_model_input(latents, t)  # the VP x_t for Euler-type schedulers too
        ab32, ab_next32 = (a.to(latents.device, torch.float32) for a in (ab, ab_next))
        at = guidance.Step(x_in.float(), ab32, ab_next32, levels=levels)
        extra = r.state.read(state, at, knobs) if r.state else None
        branches = eps_fn(x_in, t)
        step_knobs = {k: float(v) for k, v in guidance.scheduled(knobs, np.float64(t)).items()}
        eps, info = guide(r, branches, step_knobs, extra, kappa, (x_in, ab32))
        if hook is not None:
            hook(i, t, branches, eps, info)
        renoise = info.pop("renoise", None)
        if renoise is not None:  # CFG++: the ε the scheduler's one-prediction step needs
            levels_i = _scheduler_levels(scheduler, timesteps, i)
            eps = renoised(eps, renoise, *levels_i, _kernel_eta(scheduler, step_kwargs))
        latents = scheduler.step(eps, t, latents, **step_kwargs, return_dict=False)[0]
        if r.state:  # the toy sampler's update, on the VP x_t and x_t'
            x_next = (
                scheduler.scale_model_input(latents, timesteps[i + 1])
                if i + 1 < len(timesteps)
                else latents
            )
            float_branches = {k: v.float() for k, v in branches.items()}
            state = r.state.update(
                state, at._replace(x_next=x_next.float(), branches=float_branches), knobs
            )
        rows.append(info)
    return LoopResult(latents, stack_info(rows, timesteps))


def stack_info(rows: list[dict], timesteps) -> dict:
    """name -> (S, B) float32 numpy from per-step rows of (B,) tensors, plus "t" -> (S,)."""
    info = {k: np.stack([r[k].float().cpu().numpy() for r in rows]) for k in (rows or [{}])[0]}
    info["t"] = np.asarray([float(t) for t in timesteps], np.float32)
    return info
