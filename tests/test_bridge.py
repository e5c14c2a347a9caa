"""Bridge tests on tiny random-weight SD 1.5 / SDXL pipelines built offline from diffusers' test configs."""

from __future__ import annotations

import json
import string
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("diffusers")
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

from toydiff import atlas, guidance  # noqa: E402
from toydiff.bridge import cli, loop, sd  # noqa: E402

PROMPT, NEGATIVE, GAMMA, STEPS = "a red cat", "a blue dog", 7.5, 4
WARN = "ignore:no CUDA device"
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)  # in Euler


def _tokenizer():
    """A character-level CLIP tokenizer built from a local vocabulary (no hub, no files)."""
    chars = list(string.ascii_lowercase + string.digits)
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def _text_config(**kw):
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=100,
        **kw,
    )


def _vae():
    return AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=2,
    )


def tiny_sd15():
    """A tiny SD 1.5 pipeline with DDIM, random weights from a fixed torch seed."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config()),
        tokenizer=_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl():
    """A tiny SDXL pipeline with Euler (two text encoders, micro-conditioning), random weights."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
        norm_num_groups=2,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(projection_dim=32)),
        tokenizer=_tokenizer(),
        tokenizer_2=_tokenizer(),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd15():
    return tiny_sd15()


@pytest.fixture(scope="module")
def sdxl():
    return tiny_sdxl()


@pytest.fixture(params=["sd15", "sdxl"])
def pipe(request):
    return request.getfixturevalue(request.param)


def _gens(seeds):
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def _bridge(pipe, rule, seeds=(0, 1), **kw):
    knobs = loop.default_knobs(rule, gamma=GAMMA, **kw.pop("knobs", {}))
    return sd.generate(pipe, PROMPT, NEGATIVE, rule, knobs, list(seeds), steps=STEPS, **kw)


@pytest.mark.filterwarnings(WARN)
@pytest.mark.parametrize("output_type", ["latent", "np"])
def test_sd_negative_equals_stock_pipeline(pipe, output_type):
    """sd_negative through the bridge = the stock pipeline with negative_prompt, same seeds and scheduler."""
    stock = pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        guidance_scale=GAMMA,
        num_inference_steps=STEPS,
        num_images_per_prompt=2,
        generator=_gens([0, 1]),
        output_type=output_type,
    ).images
    ours, _ = _bridge(pipe, "sd_negative", output_type=output_type)
    stock = stock.cpu().numpy() if output_type == "latent" else stock
    ours = ours.cpu().numpy() if output_type == "latent" else ours
    assert np.abs(stock).max() > 0.05  # a real image, not a trivially equal blank
    np.testing.assert_allclose(ours, stock, atol=1e-4, rtol=0)


def _ddpm_log_ratio(x, x_next, e_n, e_u, ab, ab_next):
    """log N(x'; μ(ε_n), σ̃²)/N(x'; μ(ε_∅), σ̃²) of the DDPM kernel μ(ε) = √(ᾱ'/ᾱ) x + b ε (float64)."""
    var = (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
    a = (ab_next / ab).sqrt()
    b = (1 - ab_next - var).sqrt() - a * (1 - ab).sqrt()
    sq = lambda e: ((x_next - a * x - b * e) ** 2).flatten(1).sum(1)
    return -(sq(e_n) - sq(e_u)) / (2 * var)


IMAGE_RULES = [n for n, r in guidance.RULES.items() if atlas.runs_on_images(r)]
# knobs that make every state matter in 4 steps: APG clipped and with momentum, SLD and CFG-Zero*
# active after one step
STATE_KNOBS = dict(
    tau=0.05, prior=0.3, temp=0.5, offset=0.0, r=0.5, beta=-0.5, warmup=1.0, zero_steps=1.0
)


def sd_cli_args(*extra: str):
    """`python -m toydiff.bridge sd ...`'s parsed options, with the required ones filled in."""
    import argparse

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(["sd", "--model", "m", "--negative", NEGATIVE, "--out", "o", *extra])


def _record(pipe, monkeypatch):
    """Lists filled by a run: the UNet's outputs, and (ε, t, x, η) of each scheduler.step call."""
    unet_out, stepped = [], []
    handle = pipe.unet.register_forward_hook(lambda m, a, out: unet_out.append(out[0].clone()))
    cls = type(pipe.scheduler)
    step = cls.step
    monkeypatch.setattr(
        cls,
        "step",
        lambda s, eps, t, x, **kw: (
            stepped.append((eps.clone(), t, x.clone(), kw.get("eta", 0.0)))
            or step(s, eps, t, x, **kw)
        ),
    )
    return unet_out, stepped, handle


def _x0(x, eps, ab):
    return (x - (1 - ab) ** 0.5 * eps) / ab**0.5


class _Replay:
    """The state each stateful rule carries, rebuilt here step by step from the UNet's branches
    and the recorded x_t (tracked DNG and FBG: their rows in info, whose update is checked apart)."""

    def __init__(self, rule, knobs, info):
        self.rule, self.knobs, self.info = rule, knobs, info
        self.running = self.momentum = 0.0

    def extra(self, i, b, x, ab):
        """The rule state's keyword arguments at step i; then advances the state."""
        k, n = self.knobs, torch.full((2,), float(i))
        if self.rule == "dng":
            return {"p_neg": torch.from_numpy(self.info["p_neg"][i])}
        if self.rule == "fbg":
            return {"log_r": torch.from_numpy(self.info["log_r"][i])}
        if self.rule == "cfg_zero_star":
            return {"step_index": n}
        if self.rule == "apg":  # Δ̄ ← D_c − D_∅ + βΔ̄ (x̂0 space), after the step reads it
            out, delta = {"running": self.running}, _x0(x, b["pos"], ab) - _x0(x, b["uncond"], ab)
            self.running = delta + k["beta"] * self.running
            return out
        if self.rule == "sld":  # ν ← β_m ν + (1 − β_m) g, g = μ ⊙ (ε_S − ε_∅) + s_m ν
            out, diff = {"momentum": self.momentum, "step_index": n}, b["pos"] - b["neg"]
            mu = torch.where(diff < k["thresh"], (k["s_s"] * diff.abs()).clamp(max=1), 0)
            g = mu * (b["neg"] - b["uncond"]) + k["s_m"] * self.momentum
            self.momentum = k["beta_m"] * self.momentum + (1 - k["beta_m"]) * g
            return out
        return None


def _fbg_next(log_r, log_ratio, levels, knobs):
    """FBG's tracked log r after one DDPM-kernel step of log-likelihood ratio `log_ratio` (c vs ∅),
    MATH §3.2 written out in float64: δ and τ_f from π, t0, t1 and the run's ᾱ grid `levels`."""
    n = len(levels) - 1
    delta = np.log(1.5 * (1 - knobs["pi"])) / ((1 - knobs["t0"]) * n)
    i1 = int(np.clip(round((1 - knobs["t1"]) * n), 0, n - 1))
    a1, b1 = levels[i1], levels[i1 + 1]
    tau = abs(2 * (1 - b1) / (1 - a1) * (1 - a1 / b1) * delta / 10)
    evidence = tau * log_ratio
    floor = np.log((1 - knobs["pi"]) * knobs["lam_max"] / (knobs["lam_max"] - 1))
    return np.clip(log_r + evidence + delta, floor, 3.0)


@pytest.mark.filterwarnings(WARN)
def test_a_weight_schedule_scales_gamma_per_step_as_in_the_toy(sd15, monkeypatch):
    """`bridge sd --weight-schedule window --knob g_late=-0.5 --knob t_switch=500`: CFG's ε at step
    t is ε_∅ + γg(t)(ε_p − ε_∅) with g = 1 for t ≥ 500 and −0.5 below (MATH §3.3), written out."""
    args = sd_cli_args(
        "--weight-schedule", "window", "--knob", "g_late=-0.5", "--knob", "t_switch=500"
    )
    _, _, _, extra = cli.job_of(args)
    knobs = loop.default_knobs("cfg", gamma=GAMMA, **extra)
    assert (knobs["g_schedule"], knobs["g_late"], knobs["t_switch"]) == (4.0, -0.5, 500.0)
    unet_out, stepped, handle = _record(sd15, monkeypatch)
    try:
        sd.generate(sd15, PROMPT, NEGATIVE, "cfg", knobs, [0], steps=STEPS, output_type="latent")
    finally:
        handle.remove()
    ts = [int(t) for _, t, _, _ in stepped]
    assert min(ts) < 500 <= max(ts)  # both sides of the switch
    for out, (eps, t, _, _) in zip(unet_out, stepped, strict=True):
        uncond, pos, _ = out.chunk(3)
        g = 1.0 if int(t) >= 500 else -0.5
        torch.testing.assert_close(eps, uncond + GAMMA * g * (pos - uncond), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="only --weight-schedule window reads it"):
        cli.job_of(sd_cli_args("--knob", "g_late=-0.5"))


@pytest.mark.filterwarnings(WARN)
@pytest.mark.parametrize("rule", IMAGE_RULES)
def test_every_step_applies_the_registry_rule(sd15, rule, monkeypatch):
    """The ε given to scheduler.step = the registry rule on that step's UNet output, split ∅ | p | n,
    with the state rebuilt here (APG's Δ̄, SLD's ν, CFG-Zero*'s count) or the tracked one, whose
    update is Bayes' rule written out (DNG's p, FBG's log r); CFG++ lands on its own closed form."""
    unet_out, stepped, handle = _record(sd15, monkeypatch)
    knobs = loop.default_knobs(rule, gamma=GAMMA, **STATE_KNOBS)
    try:
        latents, info = sd.generate(
            sd15, PROMPT, NEGATIVE, rule, knobs, [0, 1], steps=STEPS, output_type="latent"
        )
    finally:
        handle.remove()
    assert len(unet_out) == len(stepped) == STEPS  # one UNet forward per step, all branches in it
    r, abs_ = guidance.rule(rule), sd15.scheduler.alphas_cumprod
    tracked = r.state is not None and r.state.eta is not None
    replay = _Replay(rule, knobs, info)
    levels = np.append(abs_[[int(s[1]) for s in stepped]].double().numpy(), 1.0)
    for i, (out, (eps, t, x, eta)) in enumerate(zip(unet_out, stepped, strict=True)):
        uncond, pos, neg = out.chunk(3)
        b = {"uncond": uncond, "pos": pos, "neg": neg, "cond": pos}
        ab = abs_[int(t)]
        extra = replay.extra(i, b, x, ab)
        expected, _ = guidance.apply(r, b, knobs, extra, at=(x, ab))
        x_next = stepped[i + 1][2] if i + 1 < STEPS else latents
        if rule == "cfg_pp":  # x' = √ᾱ' x̂0(ε_∅ + λΔ_p) + √(1 − ᾱ') ε_∅, DDIM's own ᾱ'
            prev = int(t) - 1000 // STEPS
            ab_prev = abs_[prev] if prev >= 0 else sd15.scheduler.final_alpha_cumprod
            guided = uncond + knobs["lam"] * (pos - uncond)
            cfg_pp = ab_prev**0.5 * _x0(x, guided, ab) + (1 - ab_prev) ** 0.5 * uncond
            torch.testing.assert_close(x_next, cfg_pp, atol=1e-4, rtol=0)
        else:
            torch.testing.assert_close(eps, expected, atol=1e-6, rtol=0)
        if rule == "cfg_zero_star" and i < knobs["zero_steps"]:  # v̂ = 0: ε = x/(√ᾱ + √(1−ᾱ))
            torch.testing.assert_close(eps, x / (ab**0.5 + (1 - ab) ** 0.5), atol=1e-6, rtol=0)
        assert eta == (1.0 if tracked else 0.0)  # tracked DNG and FBG step the stochastic kernel
        if tracked and i + 1 < STEPS:  # their carry: Bayes' rule for that kernel's step
            kernel = (x.double(), x_next.double())
            steps = (abs_.double()[int(t)], torch.tensor(levels[i + 1]))
            if rule == "dng":
                log_r = _ddpm_log_ratio(*kernel, neg.double(), uncond.double(), *steps)
                p_next = torch.clamp(
                    torch.from_numpy(info["p_neg"][i]).double()
                    * torch.exp(torch.clamp(0.5 * log_r, max=80.0)),
                    knobs["p_min"],
                    knobs["p_max"],
                )  # Temp = 0.5, offset 0: half the log-ratio
                np.testing.assert_allclose(info["p_neg"][i + 1], p_next.numpy(), rtol=1e-3)
            else:
                evidence = _ddpm_log_ratio(*kernel, pos.double(), uncond.double(), *steps)
                log_r = _fbg_next(info["log_r"][i], evidence.numpy(), levels, knobs)
                np.testing.assert_allclose(info["log_r"][i + 1], log_r, rtol=1e-4, atol=1e-5)
    for key, rows in info.items():  # the per-step diagnostics: (steps, seeds), finite
        assert rows.shape == ((STEPS,) if key == "t" else (STEPS, 2)) and np.isfinite(rows).all()
    if rule == "dng":
        np.testing.assert_allclose(info["p_neg"][0], 0.3)  # starts at the prior p_T
        assert np.ptp(info["p_neg"]) > 1e-3  # and moves along the chain
    if rule == "fbg":  # log r starts at 0 (r = 1) and moves; λ = r/(r − (1 − π)) of it
        assert np.allclose(info["log_r"][0], 0.0) and np.ptp(info["log_r"]) > 1e-3
        r_ = np.exp(info["log_r"].astype(np.float64))
        np.testing.assert_allclose(info["lam_pos"], r_ / (r_ - (1 - knobs["pi"])), rtol=1e-5)
    if rule == "apg":  # the clip acted and momentum made a difference
        assert info["lam_pos"].min() < 1


@pytest.mark.filterwarnings(WARN)
def test_cfg_pp_on_euler_renoises_with_the_unconditional_prediction(sdxl, monkeypatch):
    """SDXL's Euler scheduler (VE frame): CFG++'s x' = x̂0 + σ'ε_∅, x̂0 = x − σ(ε_∅ + λΔ_p), every
    step, although scheduler.step takes one ε; λ = 1 would be CFG at γ = 1 re-noised with ε_∅."""
    unet_out, stepped, handle = _record(sdxl, monkeypatch)
    knobs = loop.default_knobs("cfg_pp", lam=0.6)
    try:
        latents, _ = sd.generate(
            sdxl, PROMPT, NEGATIVE, "cfg_pp", knobs, [0, 1], steps=STEPS, output_type="latent"
        )
    finally:
        handle.remove()
    abs_ = sdxl.scheduler.alphas_cumprod.double()
    sigmas = [float(((1 - abs_[int(s[1])]) / abs_[int(s[1])]).sqrt()) for s in stepped] + [0.0]
    for i, (out, (_, _, x, _)) in enumerate(zip(unet_out, stepped, strict=True)):
        uncond, pos, _ = out.chunk(3)
        guided = uncond + 0.6 * (pos - uncond)
        x_next = stepped[i + 1][2] if i + 1 < STEPS else latents
        torch.testing.assert_close(
            x_next, x - sigmas[i] * guided + sigmas[i + 1] * uncond, atol=1e-4, rtol=0
        )
        if i == 0:  # re-noised with ε̂ (CFG at γ = λ) it would land ≫ 1e-4 away
            assert (sigmas[1] * (guided - uncond)).abs().max() > 1e-2


@pytest.mark.filterwarnings(WARN)
def test_ccfg_at_small_tau_equals_ncfg(sd15):
    """CCFG with τ → 0 gives nCFG's latents (λ⁻ = λ⁺ = 1)."""
    ccfg, info = _bridge(sd15, "ccfg", knobs={"tau": 1e-9}, output_type="latent")
    ncfg, _ = _bridge(sd15, "ncfg", output_type="latent")
    np.testing.assert_allclose(info["lam_neg"], 1.0, atol=1e-5)
    np.testing.assert_allclose(info["lam_pos"], 1.0, atol=1e-5)
    torch.testing.assert_close(ccfg, ncfg, atol=1e-4, rtol=0)
    strong, info = _bridge(sd15, "ccfg", knobs={"tau": 1.0}, output_type="latent")
    assert info["lam_neg"].min() < 0.9 and (strong - ncfg).abs().max() > 1e-2  # a τ that matters


@pytest.mark.filterwarnings(WARN)
def test_same_seed_same_image_other_seed_other_image(sdxl):
    """Seeds fix x_T whatever the batch: [0, 1, 0] repeats image 0, and [1] alone gives image 1."""
    images, _ = _bridge(sdxl, "ccfg", seeds=(0, 1, 0), knobs={"tau": 0.2})
    alone, _ = _bridge(sdxl, "ccfg", seeds=(1,), knobs={"tau": 0.2})
    np.testing.assert_allclose(images[0], images[2], atol=1e-6)
    np.testing.assert_allclose(images[1], alone[0], atol=1e-4)
    assert np.abs(images[0] - images[1]).mean() > 1e-2


def test_norms_and_weights_in_float32_under_float16():
    """float16 branches: ‖Δ‖² and λ come out float32, equal to a float64 reference; ε̂ stays float16."""
    g = torch.Generator().manual_seed(0)
    b = {k: torch.randn(2, 4, 32, 32, generator=g).half() * 3 for k in loop.BRANCHES}
    eps, info = loop.guide(guidance.rule("ccfg"), b, {"gamma": GAMMA, "tau": 0.002})
    d = (
        (b["neg"].double() - b["uncond"].double()).pow(2).sum((1, 2, 3))
    )  # ≈ 1.8e5: past float16's 65504
    assert eps.dtype == torch.float16 and info["d_neg_sq"].dtype == torch.float32
    torch.testing.assert_close(info["d_neg_sq"].double(), d, rtol=1e-4, atol=0)  # float32 summation
    lam_neg = 2 / (1 + torch.exp(0.002 * d))
    torch.testing.assert_close(info["lam_neg"].double(), lam_neg, rtol=1e-4, atol=1e-30)


def test_cli_without_weights_fails_fast_with_one_line(tmp_path):
    """A missing model folder: exit code 2 and one `error: ...` line naming what to put where."""
    cmd = [
        sys.executable,
        "-m",
        "toydiff",
        "bridge",
        "sd",
        "--model",
        str(tmp_path / "none"),
        "--negative",
        "dog",
        "--out",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("error: --model:")
        and "model_index.json" in lines[0]
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings(WARN)
def test_cli_writes_grid_diagnostics_and_plot(sd15, tmp_path, capsys):
    """`bridge sd` on a saved tiny pipeline: a rules × seeds grid, per-step JSON, a weights plot."""
    from PIL import Image

    from toydiff.__main__ import main

    sd15.save_pretrained(tmp_path / "tiny")  # a local folder, loaded back with --offline
    rc = main(
        [
            "bridge",
            "sd",
            "--model",
            str(tmp_path / "tiny"),
            "--offline",
            "--prompt",
            PROMPT,
            "--negative",
            NEGATIVE,
            "--rules",
            "ccfg,dng",
            "--steps",
            "3",
            "--seeds",
            "0-2",
            "--batch",
            "2",
            "--knob",
            "prior=0.2",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    diag = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    assert diag["seeds"] == [0, 1, 2] and list(diag["rules"]) == ["ccfg", "dng"]
    ccfg = diag["rules"]["ccfg"]
    assert ccfg["knobs"]["tau"] == 0.2 and np.asarray(ccfg["lam_neg"]).shape == (
        3,
        3,
    )  # (steps, seeds)
    assert diag["rules"]["dng"]["p_neg"][0] == pytest.approx([0.2] * 3)
    for name in ("grid.png", "weights.png"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200
