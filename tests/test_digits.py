"""The digits image model: shipped UNet + judge load and are good, sampling runs through bridge.loop with the
registry's rules, bad checkpoints fail clearly, and the table's metrics match hand computations."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("diffusers")
import torch  # noqa: E402

from toydiff import atlas, guidance  # noqa: E402
from toydiff.__main__ import main  # noqa: E402
from toydiff.bridge import digits, loop, table  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def unet():
    return digits.load_unet()[0]


@pytest.fixture(scope="module")
def judge():
    return digits.load_judge()[0]


def test_shipped_checkpoints_are_small_and_recorded():
    for stem in (digits.UNET_STEM, digits.JUDGE_STEM):
        assert stem.with_suffix(".safetensors").stat().st_size < 5e6
    meta = digits.load_unet()[1]
    assert meta["train"]["wall_time_s"] < 15 * 60 and meta["null_class"] == digits.NULL
    assert meta["config"]["num_class_embeds"] == 11


def test_judge_accuracy_on_held_out_real_digits(judge):
    x, y = digits.load("test")
    acc = digits.accuracy(judge, torch.from_numpy(x), torch.from_numpy(y))
    assert acc >= 0.9, acc
    assert len(y) == 360 and not set(map(bytes, x)) & set(
        map(bytes, digits.load("train")[0])
    )  # disjoint


def _unguided_tv(unet, judge, n, steps):
    x, _ = digits.sample(unet, "none", n=n, steps=steps, seed=1)
    labels = digits.judge_images(judge, x)[0]
    return digits.tv(digits.class_rates(labels), digits.class_rates(digits.load("all")[1]))


def test_unguided_histogram_quick(unet, judge):
    assert _unguided_tv(unet, judge, 300, 10) <= 0.2  # small N, few steps: loose bound


@pytest.mark.slow
def test_unguided_histogram_tv(unet, judge):
    assert _unguided_tv(unet, judge, 2000, 50) <= 0.1


def test_eps_fn_branches_are_the_unet_at_their_labels(unet):
    torch.manual_seed(0)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor(500)
    out = digits.eps_fn(unet, 3, torch.tensor([1, 2, 3, 4]))(x, t)
    assert list(out) == list(loop.BRANCHES)
    with torch.no_grad():
        for name, labels in (("uncond", [10] * 4), ("pos", [3] * 4), ("neg", [1, 2, 3, 4])):
            ref = unet(x, t, class_labels=torch.tensor(labels)).sample
            torch.testing.assert_close(out[name], ref, atol=1e-5, rtol=1e-4)
    same = digits.eps_fn(unet, digits.NULL, 7)(x, t)  # unguided removal: ε_p is ε_∅
    assert same["pos"] is same["uncond"]


@pytest.mark.parametrize(
    "rule,knobs",
    [
        ("ncfg", {"gamma": 2.0}),
        ("ccfg", {"gamma": 4.0, "tau": 0.5}),
        ("sd_negative", {"gamma": 3.0}),
        ("dng", {"gamma": 5.0, "prior": 0.1}),
    ],
)
def test_sampling_goes_through_bridge_loop_with_registry_rule(unet, monkeypatch, rule, knobs):
    calls, seen = [], []
    real = loop.sample
    monkeypatch.setattr(loop, "sample", lambda *a, **k: calls.append(a[4]) or real(*a, **k))

    def hook(i, t, branches, eps, info):
        seen.append(set(branches))
        full = loop.default_knobs(rule, **knobs)
        r = guidance.rule(rule)
        kw = {k: full[k] for k in r.fn_params}
        args = {"uncond": branches["uncond"], "neg": branches["neg"], "cond": branches["pos"]}
        if rule == "dng":
            kw["p_neg"] = info["p_neg"]
        if r.optional_pos:
            kw["eps_pos"] = branches["pos"]
        ref, _ = r.fn(*(args[b] for b in r.branches), **kw)
        torch.testing.assert_close(eps, ref)
        if rule == "ncfg":  # and by hand: ε_∅ − γ(ε_n − ε_∅), Δ_p = 0 with the null positive
            g = knobs["gamma"]
            torch.testing.assert_close(
                eps, branches["uncond"] - g * (branches["neg"] - branches["uncond"])
            )

    x, info = digits.sample(
        unet, rule, knobs, n=6, neg=np.array([0, 1, 2, 3, 4, 5]), steps=3, seed=0, hook=hook
    )
    assert calls == [rule] and len(seen) == 3 and all(s == set(loop.BRANCHES) for s in seen)
    assert x.shape == (6, 1, 8, 8) and float(x.abs().max()) <= 1.0
    assert info["lam_neg"].shape == (3, 6)
    if rule == "dng":
        assert np.allclose(info["p_neg"][0], 0.1) and not np.allclose(info["p_neg"][-1], 0.1)


def _copy(tmp_path, stem, name):
    for ext in (".safetensors", ".json"):
        shutil.copy(stem.with_suffix(ext), (tmp_path / name).with_suffix(ext))
    return tmp_path / name


def test_missing_or_corrupt_checkpoint_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        digits.load_unet(tmp_path / "nothing")
    stem = _copy(tmp_path, digits.UNET_STEM, "u")
    w = stem.with_suffix(".safetensors")
    w.write_bytes(w.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="corrupt"):
        digits.load_unet(stem)
    stem = _copy(tmp_path, digits.JUDGE_STEM, "j")
    stem.with_suffix(".json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable metadata"):
        digits.load_judge(stem)
    stem = _copy(tmp_path, digits.JUDGE_STEM, "j2")
    with pytest.raises(ValueError, match="not a digits_unet checkpoint"):
        digits.load_unet(stem)  # a judge is not a UNet
    # consistent hash, wrong shapes: a judge saved with another width
    digits.save(tmp_path / "j3", digits.Judge(width=8), "digits_judge", {"width": 32, "feat": 64})
    with pytest.raises(ValueError, match="do not fit"):
        digits.load_judge(tmp_path / "j3")
    assert (
        main(
            ["bridge", "digits-table", "--out", str(tmp_path), "--unet", str(tmp_path / "nothing")]
        )
        == 2
    )


def test_class_metrics_match_hand_computation():
    data_y = np.repeat(np.arange(10), 10)  # uniform data
    feats = np.random.default_rng(0).normal(size=(100, 3))
    labels = np.array(
        [3] * 5 + [0] * 50 + [1, 2, 4, 5, 6, 7, 8, 9] * 5 + [1] * 5
    )  # 5 % judged as 3, piled on 0
    assert len(labels) == 100
    conf = np.where(np.arange(100) < 10, 0.4, 0.9)
    m = table.class_metrics(labels, conf, feats[:100], 3, data_y, feats)
    hist = np.bincount(labels, minlength=10).astype(float)
    p = np.delete(hist, 3) / np.delete(hist, 3).sum()
    assert m["rate"] == pytest.approx(hist[3] / 100)
    assert m["removal"] == pytest.approx(1 - (hist[3] / 100) / 0.1)
    assert m["kl"] == pytest.approx(float(np.sum(p[p > 0] * np.log(p[p > 0] * 9))))
    assert m["pile"] == pytest.approx(p.max() * 9) and m["off"] == pytest.approx(0.1)


def test_frechet_and_tv_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 2))
    b = rng.normal(size=(20000, 2)) * 2 + np.array([1.0, 0.0])
    # N(0, I) vs N(m, 4I): |m|² + tr(I + 4I − 2·2I) = 1 + 2
    assert digits.frechet(a, b) == pytest.approx(3.0, abs=0.1)
    assert digits.tv([1, 1, 0], [0, 1, 1]) == pytest.approx(0.5)


def test_min_snr_weight_is_its_closed_form():
    """Min-SNR-γ for ε-prediction (Hang et al. 2023): min(SNR, γ)/SNR, SNR = ᾱ/(1 − ᾱ)."""
    ab = torch.tensor([0.01, 0.5, 5 / 6, 0.9, 0.999])  # SNR 1/99, 1, 5, 9, 999
    want = [1.0, 1.0, 1.0, 5 / 9, 5 / 999]
    np.testing.assert_allclose(digits.snr_weight(ab, 5.0).numpy(), want, rtol=1e-4)
    assert torch.equal(digits.snr_weight(ab, 0.0), torch.ones(5))


def test_train_keep_judge_trains_a_fresh_unet_beside_the_judge(tmp_path, unet):
    """`digits-train --keep-judge`: out's judge is kept byte for byte, a new UNet (not the shipped
    one's weights) is written, and its record names the loss weighting."""
    for f in ("digits_judge.json", "digits_judge.safetensors"):
        shutil.copy(digits.JUDGE_STEM.with_name(f), tmp_path / f)
    before = (tmp_path / "digits_judge.safetensors").read_bytes()
    argv = ["bridge", "digits-train", "--out", str(tmp_path), "--keep-judge", "--steps", "2"]
    assert main(argv + ["--check-n", "8", "--check-steps", "2", "--min-snr", "5"]) == 0
    assert (tmp_path / "digits_judge.safetensors").read_bytes() == before
    fresh, meta = digits.load_unet(tmp_path / "digits_unet")
    assert meta["train"]["steps"] == 2 and meta["train"]["min_snr"] == 5.0
    assert "continues" not in meta["train"]
    w = next(iter(unet.state_dict().values()))
    assert not torch.equal(next(iter(fresh.state_dict().values())), w)


def test_table_command_end_to_end_tiny(tmp_path, monkeypatch):
    small = {"ncfg": [{"gamma": 1.0}], "ccfg": [{"gamma": 2.0, "tau": 0.5}]}
    monkeypatch.setattr(table, "DEFAULT_GRID", small)
    rc = main(
        [
            "bridge",
            "digits-table",
            "--out",
            str(tmp_path),
            "--classes",
            "0,7",
            "--n",
            "8",
            "--steps",
            "2",
        ]
    )
    assert rc == 0
    md = (tmp_path / "digits_table.md").read_text()
    assert md.startswith("Command: `python -m toydiff bridge digits-table --out")
    rec = json.loads((tmp_path / "digits_table.json").read_text())
    assert [r["rule"] for r in rec["results"]] == ["none", "ncfg", "ccfg"]
    assert rec["classes"] == [0, 7] and (tmp_path / "digits_pareto.png").stat().st_size > 1000


IMAGE_RULES = [n for n, r in guidance.RULES.items() if atlas.runs_on_images(r)]


@pytest.mark.parametrize("rule", IMAGE_RULES)
def test_every_image_rule_runs_on_the_digits_unet_with_its_diagnostics(unet, rule):
    """Each rule the bridge takes (issue 21, item 6; atlas.runs_on_images) samples the digits UNet
    through bridge.loop with a positive and a negative class, its state (DNG's p, FBG's log r,
    SLD's momentum, APG's running Δ) carried by the torch loop, and reports the toy's per-step
    diagnostics: finite images and (steps, n) rows."""
    knobs = {"warmup": 1.0} if rule == "sld" else {}
    x, info = digits.sample(unet, rule, knobs, n=4, pos=7, neg=np.array([0, 1, 2, 3]), steps=4)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()
    assert info["guidance_norm"].shape == (4, 4) and np.isfinite(info["guidance_norm"]).all()
    for key in ("lam_neg", "lam_pos", "scale_neg", "scale_pos", "p_neg", "log_r"):
        if key in info:
            assert info[key].shape == (4, 4) and np.isfinite(info[key]).all(), key
    if rule == "fbg":  # the tracked log r moves along the chain from 0
        assert np.allclose(info["log_r"][0], 0.0) and not np.allclose(info["log_r"][-1], 0.0)
