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

from toydiff import guidance  # noqa: E402
from toydiff.bridge import loop, sd  # noqa: E402

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


@pytest.mark.filterwarnings(WARN)
@pytest.mark.parametrize("rule", ["cfg", "ncfg", "ccfg", "dng", "sd_negative", "perp_neg"])
def test_every_step_applies_the_registry_rule(sd15, rule, monkeypatch):
    """The ε given to scheduler.step = the registry rule on that step's UNet output, split ∅ | p | n."""
    unet_out, stepped = [], []
    handle = sd15.unet.register_forward_hook(lambda m, a, out: unet_out.append(out[0].clone()))
    step = DDIMScheduler.step
    monkeypatch.setattr(
        DDIMScheduler,
        "step",
        lambda s, eps, t, x, **kw: (
            stepped.append((eps.clone(), t, x.clone(), kw.get("eta", 0.0)))
            or step(s, eps, t, x, **kw)
        ),
    )
    knobs = loop.default_knobs(rule, gamma=GAMMA, tau=0.05, prior=0.3, temp=0.5, offset=0.0)
    try:
        _, info = sd.generate(
            sd15, PROMPT, NEGATIVE, rule, knobs, [0, 1], steps=STEPS, output_type="latent"
        )
    finally:
        handle.remove()
    assert len(unet_out) == len(stepped) == STEPS  # one UNet forward per step, all branches in it
    r, abs_ = guidance.rule(rule), sd15.scheduler.alphas_cumprod.double()
    for i, (out, (eps, t, x, eta)) in enumerate(zip(unet_out, stepped, strict=True)):
        uncond, pos, neg = out.chunk(3)
        p_neg = torch.from_numpy(info["p_neg"][i]) if r.state else None
        expected, _ = guidance.apply(
            r,
            {"uncond": uncond, "pos": pos, "neg": neg, "cond": pos},
            knobs,
            {"p_neg": p_neg} if r.state else None,
        )
        torch.testing.assert_close(eps, expected, atol=1e-6, rtol=0)
        assert eta == (1.0 if r.state else 0.0)  # tracked DNG steps the stochastic kernel
        if r.state and i + 1 < STEPS:  # DNG's carry: Bayes' rule for that kernel's step
            ab, ab_next = abs_[int(t)], abs_[int(stepped[i + 1][1])]
            x_next = stepped[i + 1][2].double()
            log_r = _ddpm_log_ratio(x.double(), x_next, neg.double(), uncond.double(), ab, ab_next)
            p_next = torch.clamp(
                p_neg.double() * torch.exp(torch.clamp(0.5 * log_r, max=80.0)),
                knobs["p_min"],
                knobs["p_max"],
            )  # Temp = 0.5, offset 0: half the log-ratio
            np.testing.assert_allclose(info["p_neg"][i + 1], p_next.numpy(), rtol=1e-3)
    if r.state:
        np.testing.assert_allclose(info["p_neg"][0], 0.3)  # starts at the prior p_T
        assert np.ptp(info["p_neg"]) > 1e-3  # and moves along the chain


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
