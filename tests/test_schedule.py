"""Schedules and timesteps (MATH §1)."""

import numpy as np
import pytest

from toydiff import schedule


def test_linear_alpha_bar_is_the_product_of_one_minus_beta():
    ab = schedule.alpha_bars("linear")
    betas = 1e-4 + (2e-2 - 1e-4) * np.arange(1000) / 999
    np.testing.assert_allclose(
        ab[[0, 10, 500, 999]], np.cumprod(1 - betas)[[0, 10, 500, 999]], rtol=1e-6
    )
    np.testing.assert_allclose(ab[0], 1 - 1e-4, rtol=1e-7)


def test_cosine_alpha_bar_follows_nichol_dhariwal():
    ab = schedule.alpha_bars("cosine")
    f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(ab[499], f(500) / f(0), rtol=1e-4)
    assert np.all(np.diff(ab) < 0)


@pytest.mark.parametrize("steps", [1, 3, 50, 1000])
def test_timesteps_descend_evenly_from_t_minus_1_to_0(steps):
    ts = schedule.timesteps(steps)
    assert ts[0] == 999 and len(ts) == steps and (steps == 1 or ts[-1] == 0)
    assert steps == 1 or (np.all(np.diff(ts) < 0) and np.ptp(np.diff(ts)) <= 1)


def test_last_step_lands_on_x0_and_sigma_follows_ddim():
    _, ab_t, ab_next = schedule.step_alpha_bars("linear", 10)
    assert ab_next[-1] == 1.0 and np.all(ab_next[:-1] == ab_t[1:])
    a, b = 0.3, 0.6
    np.testing.assert_allclose(
        schedule.ddim_sigma(a, b, 1.0) ** 2, (1 - b) / (1 - a) * (1 - a / b), rtol=1e-6
    )
    assert (
        float(schedule.ddim_sigma(a, b, 0.0)) == 0.0
        and float(schedule.ddim_sigma(a, 1.0, 1.0)) == 0.0
    )


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown schedule 'sqrt'"):
        schedule.alpha_bars("sqrt")
    with pytest.raises(ValueError, match=r"steps: must be in \[1, 1000\], got 0"):
        schedule.timesteps(0)
