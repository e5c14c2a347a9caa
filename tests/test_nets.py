"""The ε-network: FLOP count, output preconditioning, per-sample t, input features."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toydiff import nets

CONFIGS = [
    nets.NetConfig(3),
    nets.NetConfig(2, hidden=32, depth=2),
    nets.NetConfig(10, x_freqs=8, data_std=2.8, min_std=0.25),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_flops_per_eval_counts_every_point_matmul(config):
    params = nets.init(jax.random.key(0), config)
    dense = [params["x"], *params["hidden"], params["out"]]
    assert nets.flops_per_eval(config) == sum(2 * layer["w"].size for layer in dense)
    n = 4096  # XLA's count: the point matmuls dominate; the rest is elementwise work
    x, c = jnp.zeros((n, 2)), jnp.zeros(n, jnp.int32)
    lowered = jax.jit(lambda p, x, c: nets.apply(p, config, x, 5, 0.9, c)).lower(params, x, c)
    xla = lowered.compile().cost_analysis()["flops"]
    assert 0.8 < n * nets.flops_per_eval(config) / xla <= 1.0


def test_output_scaling_is_the_closed_form():
    config = nets.NetConfig(2, min_std=0.3)
    params = nets.init(jax.random.key(1), config)
    x, c = jax.random.normal(jax.random.key(2), (16, 2)), jnp.arange(16) % 3
    for ab in (0.999, 0.9, 0.1):
        scaled = nets.apply(params, config, x, 50, ab, c)
        raw = nets.apply(params, dataclasses.replace(config, min_std=0.0), x, 50, ab, c)
        np.testing.assert_allclose(scaled / raw, np.sqrt((1 - ab) / (1 - ab + 0.09)), rtol=1e-5)


def test_per_sample_t_matches_scalar_t():
    config = CONFIGS[2]
    params = nets.init(jax.random.key(3), config)
    x = jax.random.normal(jax.random.key(4), (6, 2))
    t, ab, c = (
        jnp.array([0, 10, 50, 200, 500, 999]),
        jnp.linspace(0.999, 0.01, 6),
        jnp.arange(6) % 11,
    )
    batched = nets.apply(params, config, x, t, ab, c)
    rows = [
        nets.apply(params, config, x[i : i + 1], int(t[i]), float(ab[i]), c[i : i + 1])[0]
        for i in range(6)
    ]
    np.testing.assert_allclose(batched, np.stack(rows), rtol=1e-5, atol=1e-6)


def test_input_features_closed_form():
    config = nets.NetConfig(1, x_freqs=3, x_freq_max=4.0)
    x = np.array([[0.5, -1.0]], np.float32)
    f = np.array([1.0, 2.0, 4.0])
    angle = (x[:, :, None] * f).reshape(1, -1)  # x0·f1, x0·f2, x0·f3, x1·f1, ...
    want = np.concatenate([x, np.sin(angle), np.cos(angle)], -1)
    np.testing.assert_allclose(nets.input_features(jnp.asarray(x), config), want, rtol=1e-6)
