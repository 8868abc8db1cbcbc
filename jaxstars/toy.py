"""Built-in 2-D densities for demos, the quickstart and benchmarks (samplers with explicit keys)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def two_moons(key: jax.Array, n: int, noise: float = 0.1) -> jax.Array:
    """The two interleaved half-circles of scikit-learn's ``make_moons``, with Gaussian noise."""
    k_t, k_side, k_noise = jax.random.split(key, 3)
    t = jax.random.uniform(k_t, (n,)) * jnp.pi
    upper = jax.random.bernoulli(k_side, 0.5, (n,))
    x = jnp.where(upper, jnp.cos(t), 1.0 - jnp.cos(t))
    y = jnp.where(upper, jnp.sin(t), 0.5 - jnp.sin(t))
    return jnp.stack([x, y], -1) + noise * jax.random.normal(k_noise, (n, 2))


def toy_cmd(key: jax.Array, n: int) -> jax.Array:
    """A cartoon Gaia colour–magnitude diagram: columns (BP−RP, M_G).

    70% main sequence (M_G rising steeply with colour), 20% red-giant branch, 10% red clump at
    (BP−RP, M_G) ≈ (1.2, 0.5).  Only for demonstrations: the physical simulator lives in ``jaxstars.astro``.
    """
    k_pick, k_ms, k_rgb, k_rc, k_noise = jax.random.split(key, 5)
    which = jax.random.choice(k_pick, 3, (n,), p=jnp.array([0.7, 0.2, 0.1]))
    c_ms = 0.3 + 2.4 * jax.random.beta(k_ms, 1.2, 2.0, (n,))
    m_ms = 0.8 + 3.9 * c_ms + 0.6 * jnp.sin(2.2 * c_ms)
    c_rgb = 0.95 + 0.6 * jax.random.uniform(k_rgb, (n,))
    m_rgb = 3.2 - 6.5 * (c_rgb - 0.95) ** 0.8
    c_rc, m_rc = 1.2 + 0.05 * jax.random.normal(k_rc, (n,)), 0.5 + 0.15 * jax.random.normal(k_rc, (n,))
    colour = jnp.select([which == 0, which == 1], [c_ms, c_rgb], c_rc)
    mag = jnp.select([which == 0, which == 1], [m_ms, m_rgb], m_rc)
    noise = jax.random.normal(k_noise, (n, 2)) * jnp.array([0.03, 0.15])
    return jnp.stack([colour, mag], -1) + noise
