"""The bijector contract shared by every flow layer, and the generic composites.

Conventions (the same as distrax / TFP, so chains read the same way):

* ``forward``  maps the base (latent) space ``z`` to the data space ``x`` (the *sampling* direction) and its
  log-det is ``log|det dx/dz|``.
* ``inverse`` maps data ``x`` to latent ``z`` (the *normalising* / density direction) and its log-det is
  ``log|det dz/dx|``.  A flow density is ``log p(x) = log N(z; 0, I) + log|det dz/dx|``.

A bijector is a *spec*: a frozen, hashable dataclass holding only static configuration (dimensions, sizes,
options).  Its parameters live in a separate pytree made by ``spec.init(key)``.  Every method is a pure function
of ``(params, inputs, context)``, so ``jit``, ``vmap`` and ``grad`` work over parameters and data alike and a spec
can be passed to ``jit`` as a static argument.

Layer methods receive two-dimensional arrays: ``x`` of shape ``(n, dim)`` and ``context`` of shape
``(n, context_dim)`` or ``None``.  :class:`jaxstars.flows.Flow` flattens arbitrary leading batch shapes to this
form, so only flows need to handle broadcasting.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = Any

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a bijector spec known to the save/load machinery by its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


def registered(name: str) -> type:
    """Look up a registered bijector class; raise a clear error for unknown names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown bijector type {name!r}; known types: {known}") from None


@dataclass(frozen=True)
class Bijector(abc.ABC):
    """Base class of all flow layers (see module docstring for the conventions).

    Subclasses implement :meth:`init`, :meth:`forward_and_log_det` and :meth:`inverse_and_log_det`.  Layers whose
    Jacobian is lower triangular in the data ordering set ``triangular = True`` and implement
    :meth:`inverse_and_log_diag`, which enables exact marginals over trailing dimensions.
    """

    dim: int
    context_dim: int = 0

    triangular: ClassVar[bool] = False

    # -- to implement -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def init(self, key: Array) -> Params:
        """Fresh parameters for this spec."""

    @abc.abstractmethod
    def forward_and_log_det(self, params: Params, z: Array, context: Array | None = None):
        """Latent → data: returns ``(x, log|det dx/dz|)``."""

    @abc.abstractmethod
    def inverse_and_log_det(self, params: Params, x: Array, context: Array | None = None):
        """Data → latent: returns ``(z, log|det dz/dx|)``."""

    # -- optional -----------------------------------------------------------------------------------------------
    def inverse_and_log_diag(self, params: Params, x: Array, context: Array | None = None):
        """Inverse map and the log of the diagonal of the (lower-triangular) Jacobian ``dz/dx``, shape (n, dim)."""
        raise TypeError(
            f"{type(self).__name__} is not triangular in the data ordering, so marginals over trailing "
            "dimensions are not exact for it"
        )

    def inverse_and_log_det_train(
        self, params: Params, x: Array, context: Array | None = None, weight: Array | None = None
    ):
        """Training-mode inverse: returns ``(z, log_det, new_params)``.

        Only layers with running state (BatchNorm) differ from evaluation mode; they use (``weight``-weighted)
        batch statistics and return parameters with updated running statistics.
        """
        z, log_det = self.inverse_and_log_det(params, x, context)
        return z, log_det, params

    # -- conveniences -------------------------------------------------------------------------------------------
    def forward(self, params: Params, z: Array, context: Array | None = None) -> Array:
        return self.forward_and_log_det(params, z, context)[0]

    def inverse(self, params: Params, x: Array, context: Array | None = None) -> Array:
        return self.inverse_and_log_det(params, x, context)[0]

    def config(self) -> dict:
        """JSON-serialisable description of this spec (used by save/load)."""
        out = {"type": type(self).__name__}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Bijector):
                value = value.config()
            elif isinstance(value, tuple) and value and isinstance(value[0], Bijector):
                value = [v.config() for v in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out


def from_config(config: dict) -> Bijector:
    """Rebuild a bijector spec from :meth:`Bijector.config` output."""
    config = dict(config)
    cls = registered(config.pop("type"))
    kwargs = {}
    for name, value in config.items():
        if isinstance(value, dict) and "type" in value:
            value = from_config(value)
        elif isinstance(value, list) and value and isinstance(value[0], dict) and "type" in value[0]:
            value = tuple(from_config(v) for v in value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def check_context(bijector: Bijector, context: Array | None) -> None:
    """Raise a clear error when a conditional layer gets no context, or an unconditional one gets one."""
    if bijector.context_dim and context is None:
        raise ValueError(f"{type(bijector).__name__} needs a context of dimension {bijector.context_dim}")
    if context is not None and context.shape[-1] != bijector.context_dim:
        raise ValueError(
            f"{type(bijector).__name__}: context has {context.shape[-1]} dimensions, "
            f"expected {bijector.context_dim}"
        )


@register
@dataclass(frozen=True)
class Chain(Bijector):
    """Layers applied in order in the inverse (data → latent) direction: ``z = L_n(...L_1(x))``.

    ``layers[0]`` is the one nearest the data.  Params are a tuple with one entry per layer.
    """

    layers: tuple = ()

    @property
    def triangular(self) -> bool:  # type: ignore[override]
        return all(layer.triangular for layer in self.layers)

    def init(self, key):
        keys = jax.random.split(key, max(len(self.layers), 1))
        return tuple(layer.init(k) for layer, k in zip(self.layers, keys))

    def inverse_and_log_det(self, params, x, context=None):
        total = jnp.zeros(x.shape[:-1], x.dtype)
        for layer, p in zip(self.layers, params):
            x, log_det = layer.inverse_and_log_det(p, x, context)
            total = total + log_det
        return x, total

    def inverse_and_log_det_train(self, params, x, context=None, weight=None):
        total = jnp.zeros(x.shape[:-1], x.dtype)
        new_params = []
        for layer, p in zip(self.layers, params):
            x, log_det, p = layer.inverse_and_log_det_train(p, x, context, weight)
            total = total + log_det
            new_params.append(p)
        return x, total, tuple(new_params)

    def inverse_and_log_diag(self, params, x, context=None):
        total = jnp.zeros_like(x)
        for layer, p in zip(self.layers, params):
            x, log_diag = layer.inverse_and_log_diag(p, x, context)
            total = total + log_diag
        return x, total

    def forward_and_log_det(self, params, z, context=None):
        total = jnp.zeros(z.shape[:-1], z.dtype)
        for layer, p in zip(reversed(self.layers), reversed(params)):
            z, log_det = layer.forward_and_log_det(p, z, context)
            total = total + log_det
        return z, total


@register
@dataclass(frozen=True)
class Repeat(Bijector):
    """``n`` copies of one block with independent parameters, run with ``lax.scan`` over stacked parameters.

    Scanning keeps compile time independent of depth (Cranmer's 35-block MAF compiles as fast as a 1-block one).
    ``block`` copy 0 is nearest the data.
    """

    block: Bijector | None = None
    n: int = 1

    @property
    def triangular(self) -> bool:  # type: ignore[override]
        return self.block.triangular

    def init(self, key):
        return jax.vmap(self.block.init)(jax.random.split(key, self.n))

    def inverse_and_log_det(self, params, x, context=None):
        def step(carry, p):
            y, total = carry
            y, log_det = self.block.inverse_and_log_det(p, y, context)
            return (y, total + log_det), None

        (z, total), _ = jax.lax.scan(step, (x, jnp.zeros(x.shape[:-1], x.dtype)), params)
        return z, total

    def inverse_and_log_det_train(self, params, x, context=None, weight=None):
        def step(carry, p):
            y, total = carry
            y, log_det, p = self.block.inverse_and_log_det_train(p, y, context, weight)
            return (y, total + log_det), p

        (z, total), new_params = jax.lax.scan(step, (x, jnp.zeros(x.shape[:-1], x.dtype)), params)
        return z, total, new_params

    def inverse_and_log_diag(self, params, x, context=None):
        def step(carry, p):
            y, total = carry
            y, log_diag = self.block.inverse_and_log_diag(p, y, context)
            return (y, total + log_diag), None

        (z, total), _ = jax.lax.scan(step, (x, jnp.zeros_like(x)), params)
        return z, total

    def forward_and_log_det(self, params, z, context=None):
        def step(carry, p):
            y, total = carry
            y, log_det = self.block.forward_and_log_det(p, y, context)
            return (y, total + log_det), None

        (x, total), _ = jax.lax.scan(step, (z, jnp.zeros(z.shape[:-1], z.dtype)), params, reverse=True)
        return x, total


@register
@dataclass(frozen=True)
class Permute(Bijector):
    """A fixed permutation of dimensions: ``z = x[..., permutation]``.  Log-det is zero.

    ``Permute.reverse(dim)`` is the Reverse layer of Dinh et al. (2016) used between MADE blocks.
    """

    permutation: tuple = ()

    @classmethod
    def reverse(cls, dim: int, context_dim: int = 0) -> Permute:
        return cls(dim=dim, context_dim=context_dim, permutation=tuple(range(dim - 1, -1, -1)))

    def __post_init__(self):
        if sorted(self.permutation) != list(range(self.dim)):
            raise ValueError(f"permutation {self.permutation} is not a permutation of range({self.dim})")

    @property
    def triangular(self) -> bool:  # type: ignore[override]
        return tuple(self.permutation) == tuple(range(self.dim))

    def init(self, key):
        return {}

    def _apply(self, x, permutation):
        # A reversal is a flip: cheaper than a gather, and its transpose is not a scatter-add.
        if tuple(permutation) == tuple(range(self.dim - 1, -1, -1)):
            return jnp.flip(x, axis=-1)
        return x[..., jnp.asarray(permutation)]

    def inverse_and_log_det(self, params, x, context=None):
        return self._apply(x, self.permutation), jnp.zeros(x.shape[:-1], x.dtype)

    def inverse_and_log_diag(self, params, x, context=None):
        if not self.triangular:
            return super().inverse_and_log_diag(params, x, context)
        return x, jnp.zeros_like(x)

    def forward_and_log_det(self, params, z, context=None):
        inverse_perm = tuple(int(i) for i in np.argsort(self.permutation))
        return self._apply(z, inverse_perm), jnp.zeros(z.shape[:-1], z.dtype)
