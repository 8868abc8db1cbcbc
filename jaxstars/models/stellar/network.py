"""The stellar model network (Green et al., paper 001, §2.1, Fig. 3): ``θ → (B M(θ), R(θ))``.

Two sectors act on the normalised spectroscopic features ``θ = (θ_phys − median) / std``:

* the **stellar sector**: dense hidden layers (released network: 2 × 32 sigmoid units) and a linear output layer
  giving ``B M(θ)`` — the absolute magnitude in the reference band and the colours relative to it (Eq. 5);
* the **extinction sector**: one dense layer with exponential activation, ``R(θ) = exp(W_R θ + b_R)`` (positive
  by construction; Eq. 2's reddening vector in magnitude units per unit ``E``).

The forward model (Eq. 2) is ``m = M(θ) + μ + E R(θ)``; in colour space (Fig. 3) the network outputs
``B (M + E R)``.  Parameters are a plain pytree ``{"hidden": [{"w", "b"}, ...], "out": {"w", "b"},
"R": {"w", "b"}}`` (weights ``w`` shaped ``(fan_in, fan_out)`` as in Keras), so every function here is pure and
``jit``/``vmap``/``grad``-compatible.  Any band set works: the output width is ``len(bands)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from jaxstars.astro.bands import colour_matrix, get_band
from jaxstars.flows.nn import dense_init

__all__ = [
    "ACTIVATIONS",
    "StellarNetwork",
]

ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
}


def _floats(values, n: int, name: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in np.asarray(values, float).ravel())
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} needs {n} finite values, got {values!r}")
    return out


@dataclass(frozen=True)
class StellarNetwork:
    """Architecture and θ normalisation of a stellar model (the parameters live in a separate pytree).

    Attributes
    ----------
    bands : tuple of str
        Band names (registry names, :mod:`jaxstars.astro.bands`) in the order of the magnitude vector; the first
        is the reference band of ``B`` (Eq. 5; Gaia G in the paper).
    theta_median, theta_std : tuple of float
        Normalisation of ``(Teff [K], logg, [Fe/H])`` (§2.1: median 0, standard deviation 1 over the input data).
    hidden : tuple of int
        Widths of the hidden layers of the stellar sector (released network: ``(32, 32)``).
    activation : str
        Hidden-layer activation (a key of :data:`ACTIVATIONS`; released network: ``"sigmoid"``).
    """

    bands: tuple[str, ...]
    theta_median: tuple[float, float, float] = (5372.0, 4.067, -0.246)
    theta_std: tuple[float, float, float] = (902.8, 0.889, 0.374)
    hidden: tuple[int, ...] = (32, 32)
    activation: str = "sigmoid"
    _B: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        bands = tuple(str(b) for b in self.bands)
        for b in bands:
            get_band(b)  # KeyError listing the known bands
        object.__setattr__(self, "bands", bands)
        object.__setattr__(self, "theta_median", _floats(self.theta_median, 3, "theta_median"))
        object.__setattr__(self, "theta_std", _floats(self.theta_std, 3, "theta_std"))
        if min(self.theta_std) <= 0:
            raise ValueError("theta_std must be positive")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden needs at least one layer of width >= 1, got {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose from {sorted(ACTIVATIONS)}")
        object.__setattr__(self, "_B", colour_matrix(bands))

    def __hash__(self):
        return hash((self.bands, self.theta_median, self.theta_std, self.hidden, self.activation))

    # -- basic properties -------------------------------------------------------------------------------------
    @property
    def n_bands(self) -> int:
        """Number of bands."""
        return len(self.bands)

    @property
    def B(self) -> np.ndarray:
        """The colour matrix of Eq. 5 (row 0: reference magnitude; row i: ``m_i − m_0``)."""
        return self._B

    def config(self) -> dict:
        """JSON-serialisable description (the inverse of ``StellarNetwork(**config)``)."""
        return {
            "bands": list(self.bands),
            "theta_median": list(self.theta_median),
            "theta_std": list(self.theta_std),
            "hidden": list(self.hidden),
            "activation": self.activation,
        }

    # -- parameters -------------------------------------------------------------------------------------------
    def init(self, key) -> dict:
        """Glorot-uniform weights, zero biases (the Keras defaults of the released network).

        The R-sector bias starts at ``log 1 = 0`` (``R = 1`` in every band); training moves it.
        """
        sizes = (3, *self.hidden, self.n_bands)
        keys = jax.random.split(key, len(sizes))
        layers = [dense_init(k, a, b) for k, a, b in zip(keys[:-1], sizes[:-2], sizes[1:-1])]
        return {
            "hidden": layers,
            "out": dense_init(keys[-2], sizes[-2], sizes[-1]),
            "R": dense_init(keys[-1], 3, self.n_bands),
        }

    def check_params(self, params) -> None:
        """Raise ``ValueError`` if ``params`` does not match this architecture (shapes) or is not finite."""
        expected = jax.eval_shape(self.init, jax.random.PRNGKey(0))
        got_def = jax.tree_util.tree_structure(params)
        if got_def != jax.tree_util.tree_structure(expected):
            raise ValueError(f"parameter tree {got_def} does not match the network {self.config()}")
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(expected)
        ):
            if tuple(np.shape(a)) != tuple(b.shape):
                raise ValueError(
                    f"parameter {jax.tree_util.keystr(path)} has shape {np.shape(a)}, expected {b.shape}"
                )
            if not np.all(np.isfinite(np.asarray(a))):
                raise ValueError(f"parameter {jax.tree_util.keystr(path)} has non-finite values")

    # -- normalisation ----------------------------------------------------------------------------------------
    def normalise(self, theta) -> jnp.ndarray:
        """Physical ``(…, 3)`` → normalised θ."""
        return (jnp.asarray(theta) - jnp.asarray(self.theta_median)) / jnp.asarray(self.theta_std)

    def denormalise(self, theta_n) -> jnp.ndarray:
        """Normalised θ ``(…, 3)`` → physical ``(Teff, logg, [Fe/H])``."""
        return jnp.asarray(theta_n) * jnp.asarray(self.theta_std) + jnp.asarray(self.theta_median)

    def normalise_cov(self, cov) -> jnp.ndarray:
        """Physical θ covariance ``(…, 3, 3)`` → covariance of the normalised θ."""
        s = jnp.asarray(self.theta_std)
        return jnp.asarray(cov) / (s[:, None] * s[None, :])

    # -- the two sectors (Fig. 3) -----------------------------------------------------------------------------
    def colours(self, params, theta_n) -> jnp.ndarray:
        """Stellar sector: ``B M(θ)`` ``(…, n_bands)`` — reference absolute magnitude then colours ``M_i − M_0``."""
        act = ACTIVATIONS[self.activation]
        x = jnp.asarray(theta_n)
        for layer in params["hidden"]:
            x = act(x @ layer["w"] + layer["b"])
        return x @ params["out"]["w"] + params["out"]["b"]

    def absolute_magnitudes(self, params, theta_n) -> jnp.ndarray:
        """``M(θ)`` ``(…, n_bands)``: the inverse of ``B`` applied to :meth:`colours` (``M_i = c_i + M_0``)."""
        bm = self.colours(params, theta_n)
        m0 = bm[..., :1]
        return jnp.concatenate([m0, bm[..., 1:] + m0], axis=-1)

    def extinction_vector(self, params, theta_n) -> jnp.ndarray:
        """Extinction sector: ``R(θ) = exp(W_R θ + b_R)`` ``(…, n_bands)`` in magnitudes per unit ``E``."""
        return jnp.exp(jnp.asarray(theta_n) @ params["R"]["w"] + params["R"]["b"])

    def magnitudes(self, params, theta_n, mu=0.0, E=0.0) -> jnp.ndarray:
        """Forward model Eq. 2: ``m = M(θ) + μ + E R(θ)`` (broadcast over leading axes of θ, μ, E)."""
        mu = jnp.asarray(mu)[..., None]
        E = jnp.asarray(E)[..., None]
        return self.absolute_magnitudes(params, theta_n) + mu + E * self.extinction_vector(params, theta_n)

    def colour_output(self, params, theta_n, E=0.0) -> jnp.ndarray:
        """What the network of Fig. 3 outputs before the whitening: ``B (M + E R)``."""
        E = jnp.asarray(E)[..., None]
        return self.colours(params, theta_n) + (E * self.extinction_vector(params, theta_n)) @ jnp.asarray(
            self.B
        ).T.astype(jnp.result_type(float))

    # -- regularisation (Eq. 15) ------------------------------------------------------------------------------
    @staticmethod
    def penalty(params, l2_stellar: float = 1e-4, l1_extinction: float = 1e-2) -> jnp.ndarray:
        """``λ_s Σ w² + λ_r Σ |w|`` over the stellar-sector hidden kernels and the R-sector kernel (Eq. 15).

        As in the released network, the L2 term covers the hidden layers' kernels (not biases or the linear
        output layer) and the L1 term the R kernel (not its bias, which sets the mean reddening vector).
        """
        l2 = sum(jnp.sum(layer["w"] ** 2) for layer in params["hidden"])
        l1 = jnp.sum(jnp.abs(params["R"]["w"]))
        return l2_stellar * l2 + l1_extinction * l1


def release_network(bands: Sequence[str], theta_median, theta_std) -> StellarNetwork:
    """The released architecture (2 × 32 sigmoid) for the given bands and normalisation."""
    return StellarNetwork(tuple(bands), tuple(theta_median), tuple(theta_std), (32, 32), "sigmoid")
