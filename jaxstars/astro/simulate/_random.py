"""Random numbers for the simulator as float64 numpy arrays, drawn at bucketed sizes.

``jax.random`` compiles one kernel per array shape; the simulator draws arrays of many different lengths, so every
draw is made at the next power of two (at least 1024) and cut to the requested length. The result is still a
deterministic function of the key and the length.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["normal", "randint", "uniform"]


def _bucket(n: int) -> int:
    return max(1024, 1 << max(int(n) - 1, 0).bit_length())


def uniform(key: jax.Array, n: int, tail: tuple[int, ...] = ()) -> np.ndarray:
    """``n`` uniform numbers in [0, 1) (times ``tail``), float64 (a writable copy)."""
    return np.array(jax.random.uniform(key, (_bucket(n), *tail)), dtype=np.float64)[:n]


def normal(key: jax.Array, n: int, tail: tuple[int, ...] = ()) -> np.ndarray:
    """``n`` standard normal numbers (times ``tail``), float64."""
    return np.array(jax.random.normal(key, (_bucket(n), *tail)), dtype=np.float64)[:n]


def randint(key: jax.Array, n: int, high: int) -> np.ndarray:
    """``n`` integers uniform in [0, high)."""
    return np.array(jax.random.randint(key, (_bucket(n),), 0, high))[:n]
