"""Small neural-network helpers shared by the flow layers (plain parameter pytrees)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _leaky_tanh(x):
    """Tail-preserving activation: tanh near zero, slope 0.01 far out (never saturates)."""
    return jnp.tanh(x) + 0.01 * x


ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "leaky_tanh": _leaky_tanh,
}


def dense_init(key: jax.Array, fan_in: int, fan_out: int, scale: float = 1.0) -> dict:
    """Glorot-uniform weights ``w`` (fan_in, fan_out) times ``scale`` and zero bias ``b``."""
    limit = scale * jnp.sqrt(6.0 / (fan_in + fan_out))
    w = jax.random.uniform(key, (fan_in, fan_out), minval=-limit, maxval=limit)
    return {"w": w, "b": jnp.zeros((fan_out,))}


def mlp_init(key: jax.Array, sizes: list[int], final_scale: float = 1.0) -> list[dict]:
    """Parameters for a dense MLP with layer sizes ``sizes`` (input first)."""
    keys = jax.random.split(key, len(sizes) - 1)
    n = len(sizes) - 1
    return [
        dense_init(k, a, b, scale=final_scale if i == n - 1 else 1.0)
        for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
    ]


def mlp_apply(params: list[dict], x: jax.Array, activation: str = "relu") -> jax.Array:
    """Apply a dense MLP: activation between layers, linear output."""
    act = ACTIVATIONS[activation]
    for layer in params[:-1]:
        x = act(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]
