"""AppTest on pages/1_Real_model.py: the digits and Fashion-MNIST models live, γ moving the judged
histogram, saved SD runs; the Fashion-MNIST page in headless Chromium too."""

from __future__ import annotations

import base64
import json
import pathlib

import numpy as np
import pytest

pytest.importorskip("diffusers")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "1_Real_model.py")
pytestmark = pytest.mark.skipif(
    not (ROOT / "pretrained" / "digits_unet.safetensors").is_file(),
    reason="no shipped digits checkpoint",
)


def _page(n: int = 48, steps: int = 8, results: str | None = None) -> AppTest:
    """The page after its first run, with small n and steps (and an optional results folder)."""
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["rm.n"], at.session_state["rm.steps"] = (
        n,
        steps,
    )  # read by the widgets' first run
    if results is not None:
        at.session_state["rm.results"] = results
    return at.run()


def _plotly(at: AppTest, key_part: str) -> dict:
    """The Plotly figure whose title/trace mentions key_part, decoded from the element's spec."""
    figs = [json.loads(el.proto.spec) for el in at.main if getattr(el.proto, "spec", None)]
    return [f for f in figs if key_part in json.dumps(f["data"][:1])][0]


def _values(v) -> np.ndarray:
    """A Plotly array: a JSON list, or a base64 typed array {dtype, bdata}."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).astype(float)
    return np.asarray(v, float)


def _shares(at: AppTest) -> np.ndarray:
    """Per-class shares of the judged-class histogram, (10,)."""
    return _values(_plotly(at, '"bar"')["data"][0]["y"])


def test_defaults_run_and_show_samples_histogram_and_weights():
    """Default rule (nCFG, remove 3): a grid image, a histogram summing to 1 with 3 in red, λ⁻ = 1."""
    at = _page()
    assert not at.exception and not at.error
    assert at.selectbox(key="rm.method").value == "ncfg"
    assert "dng_oracle" not in at.selectbox(key="rm.method").options  # needs the exact posterior
    assert "Autoguidance" not in at.selectbox(key="rm.method").options  # needs a weak model
    bar = _plotly(at, '"bar"')["data"][0]
    shares = _shares(at)
    assert shares.shape == (10,) and shares.sum() == pytest.approx(1.0)
    assert _values(bar["customdata"]).sum() == 48  # counts of the n = 48 samples
    colors = bar["marker"]["color"]
    assert colors[3] != colors[0] and len(set(colors)) == 2  # only the removed class highlighted
    weights = [json.loads(el.proto.spec) for el in at.main if getattr(el.proto, "spec", None)]
    names = {t.get("name") for f in weights for t in f["data"]}
    assert {"λ⁻", "γλ⁻ (effective negative scale)"} <= names


def test_ncfg_removed_share_falls_as_gamma_grows():
    """nCFG removing 3 at a fixed seed: γ = 0 (unguided, ≈ 10 %) > γ = 1 > γ = 5 (≈ 0 %)."""
    at = _page(n=96, steps=10)
    shares = {}
    for gamma in (0.0, 1.0, 5.0):
        at.select_slider(key="rm.ncfg.gamma").set_value(gamma)
        at.run()
        assert not at.exception and at.select_slider(key="rm.ncfg.gamma").value == gamma
        shares[gamma] = _shares(at)[3]
    assert shares[0.0] > 0.05 and shares[1.0] < shares[0.0] - 0.03 and shares[5.0] <= shares[1.0], (
        shares
    )


def test_missing_checkpoint_is_an_error_and_the_page_stays_up(tmp_path):
    at = _page()
    at.text_input(key="rm.ckpt").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception
    assert any("Cannot run the digits model" in e.value for e in at.error)
    assert at.text_input(key="rm.results") is not None  # the saved-runs section still renders


def test_missing_results_folder_says_how_to_make_a_run(tmp_path):
    at = _page(results=str(tmp_path / "no_results"))
    assert not at.exception
    assert any(
        "No saved runs" in i.value and "python -m toydiff bridge sd" in i.value for i in at.info
    )


def test_saved_run_shows_grid_and_weights(tmp_path):
    """A results folder with one run written like `bridge sd`: its grid.png and weights.png are shown."""
    from PIL import Image

    run = tmp_path / "results" / "cats"
    run.mkdir(parents=True)
    for name in ("grid.png", "weights.png"):
        Image.new("RGB", (40, 30), "white").save(run / name)
    (run / "diagnostics.json").write_text(
        json.dumps(
            {
                "model": "m",
                "prompt": "a cat",
                "negative": "dog",
                "seeds": [0],
                "steps": 3,
                "rules": {},
            }
        )
    )
    at = _page(results=str(tmp_path / "results"))
    assert not at.exception and not at.info
    assert at.selectbox(key="rm.run").value == run
    assert len(at.get("image")) >= 3  # samples mosaic, grid.png, weights.png


FASHION = ROOT / "pretrained" / "fashion_unet.safetensors"
needs_fashion = pytest.mark.skipif(
    not FASHION.is_file(), reason="no shipped Fashion-MNIST checkpoint (fashion-train)"
)


@needs_fashion
def test_fashion_dataset_runs_with_the_same_controls():
    """Dataset → Fashion-MNIST: the same rule widgets, class names on the bars, 28×28 tiles."""
    at = _page(n=32, steps=5)
    labels = lambda: [w.label for w in at.sidebar if getattr(w, "label", None)]  # noqa: E731
    digits_widgets = labels()
    at.selectbox(key="rm.dataset").set_value("Fashion-MNIST").run()
    assert not at.exception and not at.error
    assert labels() == digits_widgets  # the same controls, in the same order
    neg = at.selectbox(key="rm.Fashion-MNIST.neg")
    assert neg.value == 3 and neg.options[3] == "Dress" and neg.options[6] == "Shirt"
    bar = _plotly(at, '"bar"')["data"][0]
    assert bar["x"][6] == "Shirt" and _values(bar["customdata"]).sum() == 32
    assert "Pullover" in bar["x"] and "removing Dress" in json.dumps(_plotly(at, '"bar"')["layout"])
    assert len(at.get("image")) >= 1  # the mosaic of samples


@needs_fashion
@pytest.mark.browser
def test_fashion_page_in_chromium(browser, app_url):
    """The page in headless Chromium at 1366×768: pick Fashion-MNIST, the run finishes, no exception."""
    from conftest import wait_idle

    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        page.goto(f"{app_url}/Real_model")
        wait_idle(page, 300_000)
        box = page.locator("[data-testid='stSelectbox']").filter(has_text="Dataset")
        box.locator("input").click()
        page.get_by_role("option", name="Fashion-MNIST").click()
        page.wait_for_function(
            "[...document.querySelectorAll('.js-plotly-plot .xtick')].some(t => "
            "t.textContent === 'Shirt')",
            timeout=300_000,
        )
        wait_idle(page, 300_000)
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.locator("[data-testid='stImage'] img").count() >= 1
        shots = pathlib.Path("/tmp/toydiff_screenshots")
        shots.mkdir(exist_ok=True)
        page.screenshot(path=str(shots / "real_model_fashion.png"), full_page=False)
    finally:
        context.close()
