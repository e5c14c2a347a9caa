"""Perturbed-branch guidance on images (PAG, SAG, SEG, SLG) run by diffusers' own code: on the tiny
SD 1.5 / SDXL pipelines and the shipped digits UNet, each differs from plain CFG, equals it at w = 0,
and PAG equals diffusers' own PAG pipelines."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("diffusers")
import torch  # noqa: E402
from test_bridge import PROMPT, WARN, _gens, sd15, sdxl  # noqa: E402, F401 (sd15, sdxl: fixtures)

from toydiff.bridge import digits, loop, perturb, sd  # noqa: E402

GAMMA, STEPS, SEEDS = 7.5, 3, [0, 1]
pytestmark = [
    pytest.mark.filterwarnings(WARN),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # Euler
]
torch.set_num_threads(1)  # tiny models: one thread is as fast and shares the machine


@pytest.fixture(scope="module")
def unet():
    return digits.load_unet()[0]


def _methods(family):
    """Every method, with SAG marked: diffusers has it for SD 1.5 only."""
    return [(family, m) for m in perturb.METHODS if not (family == "sdxl" and m == "sag")]


def _perturb(pipe, name, **kw):
    kw = dict(gamma=GAMMA, steps=STEPS, output_type="latent") | kw
    return perturb.generate(pipe, PROMPT, name, SEEDS, **kw)


def _cfg(pipe):
    """Plain CFG latents through bridge.loop and the toydiff rule: an independent code path."""
    knobs = loop.default_knobs("cfg", gamma=GAMMA)
    return sd.generate(pipe, PROMPT, "", "cfg", knobs, SEEDS, steps=STEPS, output_type="latent")[0]


def _unet_probe(unet_model, pipe):
    """ε of a fixed input: a fingerprint that changes if any hook or processor stays behind."""
    torch.manual_seed(1)
    x = torch.randn(1, 4, 16, 16)
    ctx = torch.randn(1, 77, pipe.unet.config.cross_attention_dim)
    added = (
        {"text_embeds": torch.zeros(1, 32), "time_ids": torch.zeros(1, 6)}
        if sd.is_xl(pipe)
        else None
    )
    with torch.no_grad():
        return unet_model(x, 500, encoder_hidden_states=ctx, added_cond_kwargs=added).sample


@pytest.mark.parametrize("family,name", _methods("sd15") + _methods("sdxl"))
def test_method_differs_from_cfg_and_is_cfg_at_zero_scale(request, family, name):
    """Latents finite and ≠ CFG (would fail for a no-op perturbation); w = 0 gives CFG's latents."""
    pipe = request.getfixturevalue(family)
    before = _unet_probe(pipe.unet, pipe)
    cfg = _cfg(pipe)
    out, info = _perturb(pipe, name)
    zero, _ = _perturb(pipe, name, w_pert=0.0)
    assert out.shape == cfg.shape == (2, 4, 16, 16) and torch.isfinite(out).all()
    gap = (out - cfg).abs().max().item()
    assert gap > 1e-3, gap  # 100× the w = 0 tolerance; measured ≥ 0.025 (SDXL SEG), |z| ≈ 14
    # SAG's pipeline stores attention with an explicit softmax (not SDPA): float32 noise, × γ
    atol = 1e-4 if name == "sag" else 1e-5
    torch.testing.assert_close(zero, cfg, atol=atol, rtol=0)
    assert set(info) == {"d_pos_sq", "d_pert_sq", "guidance_norm", "pert_norm", "t"}
    assert all(v.shape == (STEPS, 2) for k, v in info.items() if k != "t")
    torch.testing.assert_close(_unet_probe(pipe.unet, pipe), before, atol=0, rtol=0)  # no hook left


@pytest.mark.parametrize("family,name", _methods("sd15") + _methods("sdxl"))
def test_push_is_scale_times_perturbation_difference(request, family, name):
    """Diagnostics: ‖ε̂ − ε_cfg‖ = w·‖shift‖ at every step, and ‖ε̂ − ε_p‖ ≥ 0 finite."""
    pipe = request.getfixturevalue(family)
    w = 1.7
    _, info = _perturb(pipe, name, w_pert=w)
    np.testing.assert_allclose(info["pert_norm"], w * np.sqrt(info["d_pert_sq"]), rtol=1e-3)
    assert info["d_pert_sq"].min() > 0 and np.isfinite(info["guidance_norm"]).all()


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_pag_equals_diffusers_pag_pipeline(request, family):
    """Our PAG (guider hooks in bridge's loop) = AutoPipelineForText2Image(enable_pag=True), layer "mid"."""
    from diffusers import AutoPipelineForText2Image

    pipe = request.getfixturevalue(family)
    ours, _ = _perturb(pipe, "pag", w_pert=3.0)
    stock_pipe = AutoPipelineForText2Image.from_pipe(
        pipe, enable_pag=True, pag_applied_layers="mid"
    )
    stock_pipe.set_progress_bar_config(disable=True)
    stock = stock_pipe(
        PROMPT,
        negative_prompt="",  # the bridge's ∅: the encoding of ""
        guidance_scale=GAMMA,
        pag_scale=3.0,
        num_inference_steps=STEPS,
        num_images_per_prompt=2,
        generator=_gens(SEEDS),
        output_type="latent",
    ).images
    torch.testing.assert_close(ours, stock, atol=1e-4, rtol=0)  # measured ≤ 1.5e-5 on |z| ≈ 14
    assert (stock - _cfg(pipe)).abs().max() > 1e-2  # and the pipeline's PAG is not CFG either


def test_sag_is_sd15_only(request):
    with pytest.raises(ValueError, match="SD 1.5"):
        _perturb(request.getfixturevalue("sdxl"), "sag")


@pytest.mark.parametrize("name", ["pag", "seg", "slg"])
def test_digits_method_differs_from_cfg(unet, name):
    """On the digits UNet2DModel (mid-block Attention): ≠ CFG, and w = 0 equals digits' CFG sampler."""
    kw = dict(n=6, steps=STEPS, seed=0)
    out, info = perturb.sample_digits(unet, name, 3, gamma=3.0, **kw)
    zero, _ = perturb.sample_digits(unet, name, 3, gamma=3.0, w_pert=0.0, **kw)
    cfg, _ = digits.sample(unet, "cfg", {"gamma": 3.0}, pos=3, **kw)
    assert out.shape == (6, 1, 8, 8) and torch.isfinite(out).all()
    torch.testing.assert_close(zero, cfg, atol=1e-5, rtol=0)
    assert (out - cfg).abs().max() > 1e-2, (out - cfg).abs().max()
    w = perturb.METHODS[name].w_pert  # the default scale
    np.testing.assert_allclose(info["pert_norm"], w * np.sqrt(info["d_pert_sq"]), rtol=1e-3)


def test_digits_sag_refused_with_reason(unet):
    with pytest.raises(ValueError, match="SAG"):
        perturb.sample_digits(unet, "sag", 3, 2, steps=1)


def test_unknown_method_lists_valid():
    with pytest.raises(ValueError, match="pag, sag, seg, slg"):
        perturb.method("xyz")


def test_cli_runs_methods_beside_rules(request, tmp_path, capsys):
    """`bridge sd --rules cfg,pag,sag --knob w_pert=2`: one grid, diagnostics with the push per step."""
    from toydiff.__main__ import main

    request.getfixturevalue("sd15").save_pretrained(tmp_path / "tiny")
    argv = ["bridge", "sd", "--model", str(tmp_path / "tiny"), "--offline", "--prompt", PROMPT]
    argv += ["--negative", "x", "--rules", "cfg,pag,sag", "--knob", "w_pert=2", "--steps", "2"]
    rc = main([*argv, "--seeds", "0-1", "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    diag = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    assert list(diag["rules"]) == ["cfg", "pag", "sag"]
    for name in ("pag", "sag"):
        r = diag["rules"][name]
        assert r["knobs"] == {"gamma": 7.5, "w_pert": 2.0}
        push = 2.0 * np.sqrt(np.asarray(r["d_pert_sq"]))
        np.testing.assert_allclose(r["pert_norm"], push, rtol=1e-3)  # (steps, seeds)
    assert (tmp_path / "out" / "weights.png").stat().st_size > 0
