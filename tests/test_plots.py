"""Figure pieces drawn from precomputed arrays: the background raster and contour lines, checked
against the colour scale's formula and the level sets they stand for."""

from __future__ import annotations

import base64
import io
import pathlib
import re

import numpy as np
import plotly
import pytest
from PIL import Image

from toydiff.viz import plots
from ui import chart


def _png(image: dict) -> np.ndarray:
    """The layout image's pixels (rows from the top, like the PNG)."""
    data = base64.b64decode(image["source"].removeprefix("data:image/png;base64,"))
    return np.asarray(Image.open(io.BytesIO(data)), np.float64)


def _decode(typed: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(typed["bdata"]), typed["dtype"])


def test_raster_colours_like_the_colorscale_and_stacks_layers_over_each_other():
    u = np.linspace(-1.0, 1.0, 5, dtype=np.float32)
    z = np.linspace(0, 1, 25).reshape(5, 5)
    region = np.full((5, 5), np.nan)
    region[1, 3] = 1.0
    grey = [[0, "rgba(255,255,255,0)"], [1, "rgba(90,90,90,0.55)"]]
    red = [[0, "rgba(227,74,51,0.13)"], [1, "rgba(227,74,51,0.13)"]]
    image = plots._raster(u, [(z, grey), (region, red)])
    px = _png(image)[::-1]  # row i at y = u[i]
    assert px.shape == (5, 5, 4)

    # one layer: RGBA interpolated linearly between the two stops, as Plotly's colour scale does
    rgb = 255 + (90 - 255) * z
    alpha = 0.55 * z
    bottom = np.ones((5, 5), bool)
    bottom[1, 3] = False
    np.testing.assert_allclose(px[..., 3][bottom], 255 * alpha[bottom], atol=0.51)
    lit = bottom & (alpha > 0.05)  # colour is only defined (to within rounding) where visible
    np.testing.assert_allclose(px[..., 0][lit], rgb[lit], atol=0.51 / alpha[lit].min() + 0.51)

    # the red pixel over the grey one: Porter–Duff "over"
    a_top, a_bot = 0.13, alpha[1, 3]
    a = a_top + a_bot * (1 - a_top)
    want = (np.array([227, 74, 51]) * a_top + rgb[1, 3] * a_bot * (1 - a_top)) / a
    np.testing.assert_allclose(px[1, 3, :3], want, atol=1.0)
    assert abs(px[1, 3, 3] - 255 * a) <= 0.51

    # pixel centres on the grid points, like heatmap bricks; drawn under the traces
    du = float(u[1] - u[0])
    assert image["x"] == u[0] - du / 2 and image["y"] == u[-1] + du / 2
    assert image["sizex"] == image["sizey"] == float(u[-1] - u[0]) + du
    assert (image["xref"], image["yref"], image["layer"]) == ("x", "y", "below")


def test_isolines_lie_on_the_level_set_and_close_around_it():
    u = np.linspace(-2, 2, 81)
    x, y = np.meshgrid(u, u)
    z = x**2 + y**2
    z[0, 0] = np.nan  # a masked corner changes nothing away from it
    line = plots._isolines(u, z, [1.0], name="r = 1")
    xs, ys = _decode(line["x"]), _decode(line["y"])
    assert np.isnan(xs[-1]) and np.isnan(ys[-1])  # each line ends with a NaN separator
    ok = ~np.isnan(xs)
    r = np.hypot(xs[ok], ys[ok])
    assert np.abs(r - 1).max() < 2e-3  # linear interpolation on a 0.05 grid
    angles = np.sort(np.arctan2(ys[ok], xs[ok]))
    assert np.diff(np.r_[angles, angles[0] + 2 * np.pi]).max() < 0.1  # the whole circle
    assert line["type"] == "scatter" and line["name"] == "r = 1"

    none = plots._isolines(u, z, [100.0])  # no such level: an empty trace, not an error
    assert _decode(none["x"]).size == 0


def test_trajectory_background_is_one_raster_and_the_edge_of_the_negative_region():
    u = np.linspace(-3, 3, 31, dtype=np.float32)
    x, y = np.meshgrid(u, u)
    log_p = -0.5 * (x**2 + y**2)
    p_neg = 1 / (1 + np.exp(-4 * x))  # p(n | x) = ½ on the line x = 0
    bg = plots.background(u, log_p, p_neg)
    assert len(bg["images"]) == 1 and len(bg["traces"]) == 1
    edge = _decode(bg["traces"][0]["x"])
    np.testing.assert_allclose(edge[~np.isnan(edge)], 0.0, atol=1e-6)
    px = _png(bg["images"][0])[::-1]
    a_bot = px[15, 5, 3] / 255  # x = −2: density only; x = +2: the same density under the red
    assert abs(px[15, 25, 3] - 255 * (0.13 + a_bot * (1 - 0.13))) <= 1.0
    assert plots.background(u, log_p, None)["traces"] == []


def test_densities_scale_to_peak_one_and_a_bad_cell_blanks_only_itself():
    u = np.linspace(-2, 2, 5, dtype=np.float32)
    x, y = np.meshgrid(u, u)
    log_p = -0.5 * (x**2 + y**2) - 40.0  # far below 0: scaled to a peak of 1, not underflowed
    log_p[0, 0] = np.nan
    log_p[0, 1] = -np.inf
    dens = plots._peak_one(log_p)
    want = np.exp(-0.5 * (x**2 + y**2))
    np.testing.assert_allclose(dens[2:, 2:], want[2:, 2:], rtol=1e-5)
    assert dens[0, 0] == 0.0 and dens[0, 1] == 0.0 and dens.max() == 1.0
    alpha = _png(plots.background(u, log_p, None)["images"][0])[::-1, :, 3]
    np.testing.assert_allclose(alpha[1:], 255 * 0.55 * want[1:], atol=0.51)
    assert alpha[0, 0] == 0


def _arrows(path: str) -> np.ndarray:
    """The arrows of a field path, (n, 5, 2): base, tip, head stroke end, tip, other stroke end."""
    assert path[0] == "M"
    nums = np.array(path.replace("M", " ").replace("L", " ").split(), float)
    return nums.reshape(-1, 5, 2)


def test_field_arrows_are_one_path_per_field_scaled_capped_with_heads():
    """Each arrow field is one SVG path shape with a legend entry of its legend group: arrows
    from each grid point along its vector at the figure's common scale (the 90th-percentile
    arrow spans 0.9 cells), long arrows capped at 1.6 cells in their own direction, heads of two
    strokes 0.3 × the arrow long at ±0.45 rad, and a NaN component drawn as 0."""
    u = np.linspace(-2, 2, 5, dtype=np.float32)
    grid = np.stack(np.meshgrid(u, u), -1).reshape(-1, 2)
    v = np.tile([[0.0, 1.0]], (len(grid), 1))  # every 90th percentile: 1
    v[0] = [30.0, 40.0]  # capped: 1.6 cells along (0.6, 0.8)
    v[1] = [np.nan, 0.5]
    heat = np.zeros((5, 5))
    fig = plots.field_spec(u, heat, "lam_neg", 1.0, {"guided": (grid, v)}, 1.0, 2.0, "t")
    [shape] = fig["layout"]["shapes"]
    assert (shape["type"], shape["xref"], shape["yref"]) == ("path", "x", "y")
    label = plots.FIELD_LABELS["guided"]
    assert shape["legendgroup"] == label
    assert [t["name"] for t in fig["data"] if t.get("legendgroup") == label] == [label]
    arrows = _arrows(shape["path"])
    base, tip = arrows[:, 0], arrows[:, 1]
    np.testing.assert_allclose(base, grid, atol=1e-3)
    want = 0.9 * v.copy()
    want[0] = 1.6 * np.array([0.6, 0.8])
    want[1] = [0.0, 0.45]  # NaN component as 0
    np.testing.assert_allclose(tip - base, want, atol=1e-3)
    np.testing.assert_allclose(arrows[:, 3], tip, atol=1e-3)
    for k, sign in ((2, 1), (4, -1)):
        stroke = tip - arrows[:, k]  # 0.3 × the arrow, turned by ±0.45 rad
        c, s = np.cos(sign * 0.45), np.sin(sign * 0.45)
        turned = 0.3 * np.stack(
            [c * want[:, 0] - s * want[:, 1], s * want[:, 0] + c * want[:, 1]], 1
        )
        np.testing.assert_allclose(stroke, turned, atol=2e-3)
    assert not any(t["type"] == "scattergl" for t in fig["data"])  # no WebGL canvas to redraw


def test_the_apps_plotly_bundle_is_the_plotly_packages_version():
    """static/'s custom plotly.js (ui/plotly_bundle) is built from the plotly.js release that the
    plotly package (requirements.txt) bundles: figures and exports then mean the same thing."""
    version = re.compile(rb"plotly\.js v(\d+\.\d+\.\d+)")
    theirs = (pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    ours = chart.BUNDLE.read_bytes()
    assert version.search(theirs[:200]).group(1).decode() == chart.PLOTLY_JS
    assert version.search(ours[:200]).group(1).decode() == chart.PLOTLY_JS
    assert len(ours) < len(theirs) / 2  # only the trace types toydiff draws


def test_weights_view_puts_push_below_scales_and_the_exact_posterior_beside_the_used_one():
    """The three panels: λ and posteriors (y), γλ (y2), the push |b_t|·γλ⁻‖Δ_n‖ (y3); the stats of a
    real DNG run give the posterior it used and the exact one at the same x_t (issue 'Truth first')."""
    import toydiff
    from toydiff.scene import exact_p_neg

    scene = toydiff.Scene.from_dict(
        {"preset": "three_blobs", "method": "dng", "steps": 20, "n": 300}
    )
    res, m = toydiff.run(scene)
    used, truth = np.asarray(res.info["p_neg"]), exact_p_neg(scene, scene.build_mixture(), res)
    assert used.shape == truth.shape == (20, 300)
    np.testing.assert_allclose(m["p_neg_error"], np.abs(used - truth).mean(), rtol=1e-5)
    series = {
        k: (v.mean(1), v.min(1), v.max(1))
        for k, v in {
            "lam_neg": np.asarray(res.info["lam_neg"]),
            "p_neg": used,
            "p_exact": truth,
            "scale_neg": np.asarray(res.info["scale_neg"]),
            "push_neg": np.asarray(res.info["push_neg"]),
        }.items()
    }
    spec = plots.weights_spec(np.arange(20.0), series, "t")
    axis = {d["name"]: d["yaxis"] for d in spec["data"] if "name" in d}
    assert axis[plots.WEIGHT_LABELS["p_exact"]] == axis[plots.WEIGHT_LABELS["p_neg"]] == "y"
    assert (
        axis[plots.WEIGHT_LABELS["scale_neg"]] == "y2"
        and axis[plots.WEIGHT_LABELS["push_neg"]] == "y3"
    )
    domains = [spec["layout"][k]["domain"] for k in ("yaxis", "yaxis2", "yaxis3")]
    assert all(
        a[0] > b[1] for a, b in zip(domains, domains[1:])
    )  # stacked top to bottom, no overlap


def test_metrics_line_is_one_short_line_with_the_concepts_names():
    values = {
        "off_support": 0.997,
        "leakage_hard": 0.003,
        "leakage": float("nan"),
        "alignment": 0.9,
    }
    line = plots.metrics_line(
        values, ["off_support", "leakage_hard", "leakage", "alignment"], "C", "A"
    )
    assert line == "off data 99.7% · in C 0.3% · p(A∣x) 0.900"
    assert plots.metrics_line(values, ["leakage_hard"]) == "in n 0.3%"


@pytest.mark.parametrize("method", ["fbg", "fbg_oracle"])
def test_fbg_weights_view_draws_the_exact_ratios_lambda_beside_the_one_it_used(method):
    """FBG's panel (issue 21, item 1) draws the λ⁺ it used and, dotted on the same axis, the λ of
    the exact r = p_t(x | c)/p_t(x) at the same x_t, here by Bayes from the exact posterior:
    log r = log p(c | x_t) − log p(c), λ = r/(r − (1 − π)) with log r ≥ log((1−π)λ_max/(λ_max−1))."""
    import toydiff
    from toydiff import exact
    from ui import compute

    scene = toydiff.Scene.from_dict(
        {"preset": "three_blobs", "positive": "A", "method": method, "steps": 20, "n": 200}
    )
    run = compute.simulate(scene.to_json())
    result, _ = toydiff.run(scene)  # the same seed: the same trajectories
    mix, knobs = scene.build_mixture(), scene.knobs()
    prior = float(np.sum(mix.weights / mix.weights.sum() * mix.membership[0]))  # p(A) = 1/3
    levels = scene.sampler_config().levels()[:-1]
    post = [np.asarray(exact.posterior(mix, x, a, "A")) for x, a in zip(result.traj[:-1], levels)]
    floor = np.log((1 - knobs["pi"]) * knobs["lam_max"] / (knobs["lam_max"] - 1))
    r = np.exp(np.maximum(np.log(np.asarray(post, np.float64)) - np.log(prior), floor))
    lam = r / (r - (1 - knobs["pi"]))  # (steps, N)
    spec = plots.weights_spec(run["step_ts"], run["stats"], "t")
    drawn = {d["name"]: d for d in spec["data"] if "name" in d}
    exact_line, used_line = (drawn[plots.WEIGHT_LABELS[k]] for k in ("lam_exact", "lam_pos"))
    assert exact_line["line"]["dash"] == "dot" and exact_line["yaxis"] == used_line["yaxis"] == "y"
    np.testing.assert_allclose(_decode(exact_line["y"]), lam.mean(1), rtol=2e-4)
    used = np.asarray(result.info["lam_pos"], np.float64)
    np.testing.assert_allclose(_decode(used_line["y"]), used.mean(1), rtol=2e-4)
    gap = np.abs(used - lam).mean()
    if method == "fbg_oracle":  # the oracle's λ is the exact one
        assert gap < 1e-3, gap
    else:  # the tracked λ starts at r = 1 (log r = 0) and follows the evidence, not the truth
        np.testing.assert_allclose(used[0], 1 / knobs["pi"], rtol=1e-5)
        assert gap > 1e-2, gap
