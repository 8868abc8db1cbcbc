"""Coupling flows: affine (RealNVP, Dinh et al. 2017) and rational-quadratic spline (Durkan et al. 2019) layers.

A coupling layer splits ``x = (x_a, x_b)`` at ``split`` and transforms ``x_b`` elementwise with parameters
computed by a conditioner network from ``(x_a, context)``; ``x_a`` passes through unchanged.  Both directions
therefore cost one network pass, and the Jacobian ``dz/dx`` is lower triangular (identity block, dense
lower-left block, diagonal lower-right block), so the log-det is the sum of the elementwise log-derivatives and
the layers are ``triangular`` in the data ordering.

:func:`realnvp` and :func:`spline_flow` stack ``n_layers`` × (coupling → Reverse) blocks with :class:`Repeat`, so
both halves of the vector get transformed.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxstars.flows.base import Bijector, Chain, Permute, Repeat, check_context, register
from jaxstars.flows.nn import ACTIVATIONS, mlp_apply, mlp_init


@dataclass(frozen=True)
class _Coupling(Bijector):
    """Shared machinery of the coupling layers (not registered; use a subclass).

    Parameters
    ----------
    dim, context_dim
        Data and context dimensions; ``dim >= 2``.
    split
        Number of leading coordinates passed through unchanged (``x_a = x[:, :split]``).  ``None`` means
        ``dim // 2``; the resolved integer is stored, so ``config()`` records it.
    hidden
        Hidden-layer widths of the conditioner MLP.
    activation
        Name of the conditioner activation (a key of :data:`jaxstars.flows.nn.ACTIVATIONS`).
    """

    split: int | None = None
    hidden: tuple = (64, 64)
    activation: str = "relu"

    triangular = True

    def __post_init__(self):
        if self.dim < 2:
            raise ValueError(
                f"{type(self).__name__} needs dim >= 2 (one part to condition on), got dim={self.dim}"
            )
        split = self.dim // 2 if self.split is None else int(self.split)
        if not 1 <= split < self.dim:
            raise ValueError(f"{type(self).__name__}: split must satisfy 1 <= split < dim={self.dim}, got {split}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; known: {', '.join(sorted(ACTIVATIONS))}")
        object.__setattr__(self, "split", split)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    # -- to implement ---------------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def n_raw(self) -> int:
        """Number of unconstrained conditioner outputs per transformed coordinate."""

    @abc.abstractmethod
    def _normalise(self, raw, x_b):
        """Data → latent on the transformed part: ``(z_b, log|dz_b/dx_b|)`` elementwise, shape (n, dim - split)."""

    @abc.abstractmethod
    def _generate(self, raw, z_b):
        """Latent → data on the transformed part: ``(x_b, log|dx_b/dz_b|)`` elementwise."""

    # -- shared ---------------------------------------------------------------------------------------------------
    def init(self, key):
        sizes = [self.split + self.context_dim, *self.hidden, (self.dim - self.split) * self.n_raw]
        # Small output layer: the layer starts close to its identity configuration.
        return {"conditioner": mlp_init(key, sizes, final_scale=1e-2)}

    def conditioner(self, params, x_a, context=None):
        """Raw (unconstrained) transform parameters, shape ``(n, dim - split, n_raw)``, from ``(x_a, context)``."""
        check_context(self, context)
        h = x_a if context is None else jnp.concatenate([x_a, context.astype(x_a.dtype)], axis=-1)
        out = mlp_apply(params["conditioner"], h, self.activation)
        return out.reshape(x_a.shape[0], self.dim - self.split, self.n_raw)

    def inverse_and_log_diag(self, params, x, context=None):
        x_a, x_b = x[:, : self.split], x[:, self.split :]
        z_b, log_diag = self._normalise(self.conditioner(params, x_a, context), x_b)
        return jnp.concatenate([x_a, z_b], -1), jnp.concatenate([jnp.zeros_like(x_a), log_diag], -1)

    def inverse_and_log_det(self, params, x, context=None):
        z, log_diag = self.inverse_and_log_diag(params, x, context)
        return z, log_diag.sum(-1)

    def forward_and_log_det(self, params, z, context=None):
        z_a, z_b = z[:, : self.split], z[:, self.split :]
        x_b, log_diag = self._generate(self.conditioner(params, z_a, context), z_b)
        return jnp.concatenate([z_a, x_b], -1), log_diag.sum(-1)


@register
@dataclass(frozen=True)
class AffineCoupling(_Coupling):
    """RealNVP affine coupling (Dinh, Sohl-Dickstein & Bengio 2017, §3.2-3.3).

    Sampling direction ``x_b = z_b * exp(s(z_a, c)) + t(z_a, c)``, ``x_a = z_a``, with ``log|det dx/dz| = sum s``.
    The log-scale is soft-clamped, ``s = scale_bound * tanh(s_raw / scale_bound)``, so one layer can stretch or
    shrink a coordinate by at most ``exp(scale_bound)``; this keeps early training stable.

    Parameters
    ----------
    scale_bound
        Bound on ``|s|`` (see above), default 3.
    """

    scale_bound: float = 3.0

    n_raw = 2

    def _shift_log_scale(self, raw):
        return raw[..., 0], self.scale_bound * jnp.tanh(raw[..., 1] / self.scale_bound)

    def _normalise(self, raw, x_b):
        shift, log_scale = self._shift_log_scale(raw)
        return (x_b - shift) * jnp.exp(-log_scale), -log_scale

    def _generate(self, raw, z_b):
        shift, log_scale = self._shift_log_scale(raw)
        return z_b * jnp.exp(log_scale) + shift, log_scale


# -----------------------------------------------------------------------------------------------------------------
# Rational-quadratic spline (Durkan, Bekasov, Murray & Papamakarios 2019, "Neural Spline Flows", §3.1 + App. A)
# -----------------------------------------------------------------------------------------------------------------


def spline_knots(raw, bound, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
    """Knots ``(x_k, y_k)`` and knot derivatives ``d_k`` of a rational-quadratic spline on ``[-bound, bound]``.

    ``raw`` has ``3K - 1`` entries on its last axis: ``K`` bin-width logits, ``K`` bin-height logits and ``K - 1``
    interior derivative pre-activations.  Widths and heights are a softmax (floored at ``min_bin_width`` /
    ``min_bin_height``) scaled to ``2 * bound``; interior derivatives are ``min_derivative + softplus(.)``, shifted
    so a zero input gives derivative 1; the two boundary derivatives are fixed at 1 to match the identity tails
    (Durkan et al. §3.1).  Returns three arrays of shape ``raw.shape[:-1] + (K + 1,)``.
    """
    n_bins = (raw.shape[-1] + 1) // 3

    def knots(logits, min_size):
        sizes = min_size + (1.0 - min_size * n_bins) * jax.nn.softmax(logits, axis=-1)
        edges = 2.0 * bound * jnp.cumsum(sizes, axis=-1) - bound
        # Pin the end knots exactly at ±bound (cumsum rounding must not open a gap at the tails).
        edges = edges.at[..., -1].set(bound)
        return jnp.concatenate([jnp.full(edges.shape[:-1] + (1,), -bound, edges.dtype), edges], -1)

    xk = knots(raw[..., :n_bins], min_bin_width)
    yk = knots(raw[..., n_bins : 2 * n_bins], min_bin_height)
    offset = math.log(math.expm1(1.0 - min_derivative))  # softplus(offset) = 1 - min_derivative
    inner = min_derivative + jax.nn.softplus(raw[..., 2 * n_bins :] + offset)
    ones = jnp.ones(raw.shape[:-1] + (1,), raw.dtype)
    return xk, yk, jnp.concatenate([ones, inner, ones], -1)


def _gather(values, idx):
    return jnp.take_along_axis(values, idx[..., None], axis=-1)[..., 0]


def rational_quadratic_spline(u, raw, bound, inverse=False, **mins):
    """Monotone rational-quadratic spline on ``[-bound, bound]`` with identity tails, applied elementwise.

    ``u`` has shape ``S`` and ``raw`` shape ``S + (3K - 1,)`` (see :func:`spline_knots`; ``mins`` are passed
    there).  Inside the interval, in bin ``k`` with ``xi = (x - x_k) / w_k``, ``s_k = h_k / w_k``, the map is the
    rational-quadratic segment of Gregory & Delbourgo (1982) used by Durkan et al. (2019, §3.1),

        g(x) = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)],

    with the closed-form derivative given there.  ``inverse=True`` evaluates ``g^{-1}`` exactly as the stable root
    of the quadratic in ``xi`` (Durkan et al., App. A: ``xi = 2c / (-b - sqrt(b^2 - 4ac))``).  Outside
    ``[-bound, bound]`` the map is the identity with zero log-derivative.  Returns
    ``(output, log|d output / d u|)``, both of shape ``S``.
    """
    xk, yk, dk = spline_knots(raw, bound, **mins)
    inside = (u >= -bound) & (u <= bound)
    # Evaluate on clipped inputs so the untaken branch of `where` stays finite (and so do its gradients).
    uc = jnp.clip(u, -bound, bound)
    in_knots = yk if inverse else xk
    idx = jnp.sum(uc[..., None] >= in_knots[..., 1:-1], axis=-1)
    x0, y0 = _gather(xk, idx), _gather(yk, idx)
    w, h = _gather(xk, idx + 1) - x0, _gather(yk, idx + 1) - y0
    d0, d1 = _gather(dk, idx), _gather(dk, idx + 1)
    s = h / w
    if inverse:
        dy = uc - y0
        a = h * (s - d0) + dy * (d1 + d0 - 2.0 * s)
        b = h * d0 - dy * (d1 + d0 - 2.0 * s)
        c = -s * dy
        xi = 2.0 * c / (-b - jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, 0.0)))
        out = x0 + xi * w
    else:
        xi = (uc - x0) / w
    t = xi * (1.0 - xi)
    denom = s + (d1 + d0 - 2.0 * s) * t
    if not inverse:
        out = y0 + h * (s * xi**2 + d0 * t) / denom
    # dg/dx = s^2 [d_{k+1} xi^2 + 2 s xi(1-xi) + d_k (1-xi)^2] / denom^2
    log_deriv = 2.0 * jnp.log(s) + jnp.log(d1 * xi**2 + 2.0 * s * t + d0 * (1.0 - xi) ** 2) - 2.0 * jnp.log(denom)
    log_deriv = -log_deriv if inverse else log_deriv
    return jnp.where(inside, out, u), jnp.where(inside, log_deriv, 0.0)


@register
@dataclass(frozen=True)
class SplineCoupling(_Coupling):
    """Rational-quadratic neural spline coupling (Durkan et al. 2019, "Neural Spline Flows").

    Each transformed coordinate goes through its own monotone RQ spline (:func:`rational_quadratic_spline`) with
    ``n_bins`` bins on ``[-bound, bound]`` and identity tails, parameterised by the conditioner from
    ``(x_a, context)``.  The normalising direction (data → latent, used by ``log_prob``) evaluates the spline
    directly; sampling uses the analytic inverse.  Both log-dets are exact.

    Parameters
    ----------
    n_bins
        Number of spline bins ``K``.
    bound
        Half-width ``B`` of the spline interval; outside it the layer is the identity.
    min_bin_width, min_bin_height, min_derivative
        Floors that keep the spline well conditioned.
    """

    n_bins: int = 8
    bound: float = 5.0
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        if self.n_bins < 1 or self.bound <= 0:
            raise ValueError(f"SplineCoupling needs n_bins >= 1 and bound > 0, got {self.n_bins}, {self.bound}")
        if max(self.min_bin_width, self.min_bin_height) * self.n_bins >= 1.0:
            raise ValueError("min_bin_width and min_bin_height must be smaller than 1 / n_bins")

    @property
    def n_raw(self) -> int:
        return 3 * self.n_bins - 1

    def _mins(self):
        names = ("min_bin_width", "min_bin_height", "min_derivative")
        return {name: getattr(self, name) for name in names}

    def knots(self, params, x, context=None):
        """Spline knots ``(x_k, y_k, d_k)`` used for each transformed coordinate of ``x``.

        The knots depend on ``x`` only through ``x[:, :split]``.  Each array has shape
        ``(n, dim - split, n_bins + 1)``; ``x_k`` are data-space knots and ``y_k`` latent-space ones.
        """
        raw = self.conditioner(params, x[:, : self.split], context)
        return spline_knots(raw, self.bound, **self._mins())

    def _normalise(self, raw, x_b):
        return rational_quadratic_spline(x_b, raw, self.bound, inverse=False, **self._mins())

    def _generate(self, raw, z_b):
        return rational_quadratic_spline(z_b, raw, self.bound, inverse=True, **self._mins())


# -----------------------------------------------------------------------------------------------------------------
# Builders
# -----------------------------------------------------------------------------------------------------------------


def _stack(coupling: Bijector, n_layers: int) -> Bijector:
    block = Chain(
        coupling.dim, coupling.context_dim, layers=(coupling, Permute.reverse(coupling.dim, coupling.context_dim))
    )
    return Repeat(coupling.dim, coupling.context_dim, block=block, n=n_layers)


def realnvp(
    dim: int,
    n_layers: int = 4,
    hidden: tuple = (64, 64),
    context_dim: int = 0,
    *,
    activation: str = "relu",
    scale_bound: float = 3.0,
) -> Bijector:
    """RealNVP (Dinh et al. 2017): ``n_layers`` × (:class:`AffineCoupling` → Reverse), scanned over parameters.

    The reversal between couplings makes every coordinate get transformed once ``n_layers >= 2``.
    """
    coupling = AffineCoupling(
        dim, context_dim, hidden=tuple(hidden), activation=activation, scale_bound=scale_bound
    )
    return _stack(coupling, n_layers)


def spline_flow(
    dim: int,
    n_layers: int = 4,
    hidden: tuple = (64, 64),
    n_bins: int = 8,
    bound: float = 5.0,
    context_dim: int = 0,
    *,
    activation: str = "relu",
) -> Bijector:
    """Coupling neural spline flow (Durkan et al. 2019, RQ-NSF(C)): ``n_layers`` × (:class:`SplineCoupling` →
    Reverse), scanned over stacked parameters."""
    coupling = SplineCoupling(
        dim, context_dim, hidden=tuple(hidden), activation=activation, n_bins=n_bins, bound=float(bound)
    )
    return _stack(coupling, n_layers)
