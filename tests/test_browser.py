"""The app in headless Chromium: it renders without exceptions, sliders rerun it, animations play."""

from __future__ import annotations

import pathlib

import pytest

from conftest import IDLE, wait_idle

pytestmark = pytest.mark.browser

SHOTS = pathlib.Path("/tmp/toydiff_screenshots")

FRAME_HOOK = """() => {
  const gd = document.querySelectorAll('.js-plotly-plot')[0];
  window.__frames = 0;
  gd.on('plotly_animatingframe', () => { window.__frames += 1; });
  return gd.data.length;
}"""


def _title(page, index: int) -> str:
    return page.locator(".js-plotly-plot").nth(index).locator(".gtitle").first.text_content()


def test_page_renders_without_exception(page, tmp_path):
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator(".js-plotly-plot").count() >= 8
    assert "Negated CFG" in _title(page, 0) and "Contrastive CFG" in _title(page, 1)
    SHOTS.mkdir(exist_ok=True)
    for path in (tmp_path / "app.png", SHOTS / "app.png"):
        page.screenshot(path=str(path), full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 50_000


def test_keyboard_moves_gamma_and_the_figure_follows(page):
    before = _title(page, 0)
    slider = page.locator("[data-testid='stSidebar'] [data-testid='stSlider']").filter(
        has_text="γ (gamma)").first.get_by_role("slider")
    slider.focus()
    slider.press("ArrowRight")
    page.wait_for_function(
        "t => document.querySelectorAll('.js-plotly-plot')[0].querySelector('.gtitle')"
        ".textContent !== t", arg=before, timeout=60_000)
    wait_idle(page)
    assert "γ = 2.5" in _title(page, 0)
    assert page.locator("[data-testid='stException']").count() == 0


def test_animation_plays_and_frames_advance(page):
    page.evaluate(FRAME_HOOK)
    chart = page.locator(".js-plotly-plot").first
    chart.locator(".updatemenu-button").filter(has_text="play").click()
    page.wait_for_function("window.__frames >= 10", timeout=30_000)
    chart.locator(".updatemenu-button").filter(has_text="pause").click()
    page.wait_for_timeout(300)
    paused = page.evaluate("window.__frames")
    page.wait_for_timeout(500)
    assert page.evaluate("window.__frames") == paused  # pause stops the animation
    SHOTS.mkdir(exist_ok=True)
    chart.screenshot(path=str(SHOTS / "trajectories_midway.png"))


def test_field_slider_reruns_only_the_fragment(page):
    before = page.locator(".js-plotly-plot").nth(2).locator(".gtitle").first.text_content()
    slider = page.locator("[data-testid='stSlider']").filter(has_text="timestep t").first.get_by_role("slider")
    slider.focus()
    slider.press("ArrowLeft")
    page.wait_for_function(
        "t => document.querySelectorAll('.js-plotly-plot')[2].querySelector('.gtitle')"
        ".textContent !== t", arg=before, timeout=60_000)
    page.wait_for_selector(IDLE)
    assert "t = 490" in page.locator(".js-plotly-plot").nth(2).locator(".gtitle").first.text_content()
    assert page.locator("[data-testid='stException']").count() == 0
