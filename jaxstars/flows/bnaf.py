"""Block neural autoregressive flow (BNAF; De Cao, Titov & Aziz 2019, arXiv:1904.04676), the flow of FLOWER.

A BNAF layer is one feed-forward network ``z = f(x)`` whose weight matrices are *block lower triangular* with
strictly positive diagonal blocks (De Cao et al. §3, eq. 8), interleaved with strictly increasing activations.
Output ``z_i`` then depends on ``x_{<=i}`` only and increases strictly with ``x_i``: the map is triangular and
monotone, and each diagonal entry ``dz_i/dx_i`` is the product of the diagonal blocks of the layer Jacobians,
evaluated stably as a chain of log-space matrix products (De Cao et al. §3).

The network is the *density* direction (data ``x`` → latent ``z``), so ``log_prob`` costs one pass.  Sampling
needs the inverse, which has no closed form: :class:`BNAF` finds it coordinate by coordinate (bracket expansion,
bisection, then safeguarded Newton steps) and differentiates it by the implicit function theorem through a
``jax.custom_jvp`` rule, so forward- and reverse-mode derivatives never pass through the search iterations.

FLOWER (O'Callaghan et al., paper 002 §2.3) uses 2 BNAF layers, depth 3, block size 4 and tanh, conditioned on
Galactic (R, |Z|) through a bounded scale and a shift of the first layer only: :func:`bnaf` builds that stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from jaxstars.flows.base import Bijector, Chain, Permute, Repeat, check_context, register
from jaxstars.flows.nn import ACTIVATIONS, dense_init

# Bounded positive scale of the first layer given the context (FLOWER's code maps a sigmoid to (0.1, 3)).
_SCALE_MIN, _SCALE_MAX = 0.1, 3.0
# Initial output range: a fresh layer is z ≈ R tanh(tanh(x / R)) per coordinate (slope 1 at 0, image ≈ ±0.76 R).
_INIT_RANGE = 8.0
# Root finder: bracket steps up to 2^_MAX_EXPAND, iteration cap, relative bracket width, Newton polish steps.
_MAX_EXPAND, _MAX_ITER, _TOL, _NEWTON_STEPS = 32, 200, 1e-6, 2
# Slope of ``leaky_tanh`` far from zero; must equal the one in ``jaxstars.flows.nn`` (checked by the log-det tests).
_LEAK = 0.01


def _log_dtanh(h):
    """``log(1 - tanh(h)^2) = 2 (log 2 - |h| - log(1 + exp(-2|h|)))``, finite for every ``h``."""
    a = jnp.abs(h)
    return 2.0 * (math.log(2.0) - a - jnp.log1p(jnp.exp(-2.0 * a)))


def _log_add_exp(a, b):
    """``log(exp(a) + exp(b))`` for finite inputs (cheaper to compile than ``jnp.logaddexp``)."""
    return jnp.maximum(a, b) + jnp.log1p(jnp.exp(-jnp.abs(a - b)))


def _log_matvec(log_w, log_g):
    """``log(exp(log_w) @ exp(log_g))`` per block, stably: (dim, out, in) and (n, dim, in) → (n, dim, out)."""
    terms = log_w[None] + log_g[:, :, None, :]
    top = jax.lax.stop_gradient(jnp.max(terms, axis=-1, keepdims=True))
    return top[..., 0] + jnp.log(jnp.sum(jnp.exp(terms - top), axis=-1))


_LOG_DERIVATIVES = {
    "tanh": _log_dtanh,
    "leaky_tanh": lambda h: _log_add_exp(_log_dtanh(h), math.log(_LEAK)),
}


@register
@dataclass(frozen=True)
class BNAF(Bijector):
    """One BNAF network ``z = f(x, c)`` (De Cao et al. 2019), triangular and increasing in each ``x_i``.

    Parameters
    ----------
    dim, context_dim
        Data and context dimensions.
    depth
        Number of block-linear layers (not hidden layers): ``depth=3`` is ``dim → block_dim·dim → block_dim·dim →
        dim``, i.e. two hidden layers, the original BNAF code's ``layers=2`` and flowjax's ``nn_depth=2``.
        FLOWER's quoted parameter count ``24 × (...)²`` fits this reading: 24 = 4 + 16 + 4, the sizes (in
        units of dim²) of the three matrices of ``dim → 4 dim → 4 dim → dim``.
        ``depth=1`` is a single lower-triangular linear map with positive diagonal.
    block_dim
        Block size ``B``; hidden width is ``B·dim`` (FLOWER: 4).
    activation
        ``"tanh"`` (the paper and FLOWER) or ``"leaky_tanh"`` = ``tanh(h) + 0.01 h``.  tanh saturates, so the
        image of a tanh layer is a bounded box: latent points outside it have no preimage (the forward map
        returns NaN there), the density of a tanh flow integrates to the base mass inside the box, and
        inputs far from the training range get a very small (but finite) density.  ``leaky_tanh`` keeps the
        tails linear (slope ``0.01**(depth-1)`` far out), so the layer is a bijection of R^dim.

    Notes
    -----
    Weights (De Cao et al. eq. 8, with their weight normalisation): raw ``v`` of shape (out, in) is masked to
    block lower triangular, diagonal blocks pass through ``exp`` (strictly positive), strictly lower blocks are
    free, and each row is rescaled to norm ``exp(s)``:  ``W = exp(s) g(v) / ||g(v)||``.  Hence
    ``log W_ij = s_i + v_ij - log||g(v)_i||`` on the diagonal blocks, exact in log space.

    Log-Jacobian (De Cao et al. §3): for each coordinate ``i`` keep ``G_l = log d h^{(l)}_{block i} / d x_i`` (a vector of
    length ``B``); a linear layer maps ``G`` to ``logsumexp_j(log W_{i,kj} + G_j)`` and an activation adds
    ``log σ'(h)``.  The last layer leaves one entry, ``log dz_i/dx_i``.

    Context (FLOWER): the first layer's pre-activation is ``scale(c) ⊙ (W₁ x + b₁) + shift(c)`` with
    ``scale = 0.1 + 2.9 sigmoid(A c + a)`` (positive, so monotonicity in ``x`` is kept) and
    ``shift = B c + b``; ``log scale`` enters the log-Jacobian of that layer.
    """

    depth: int = 3
    block_dim: int = 4
    activation: str = "tanh"

    triangular = True

    def __post_init__(self):
        if self.activation not in _LOG_DERIVATIVES:
            raise ValueError(f"activation must be one of {sorted(_LOG_DERIVATIVES)}, got {self.activation!r}")
        if self.depth < 1 or self.block_dim < 1:
            raise ValueError("depth and block_dim must be >= 1")

    # -- structure --------------------------------------------------------------------------------------------
    def _block_shapes(self) -> list[tuple[int, int]]:
        """(out block size, in block size) of each block-linear layer."""
        if self.depth == 1:
            return [(1, 1)]
        b = self.block_dim
        return [(b, 1)] + [(b, b)] * (self.depth - 2) + [(1, b)]

    def _masks(self, out_block: int, in_block: int):
        """Boolean (diagonal-block, strictly-lower-block) masks of a (dim·out, dim·in) weight matrix."""
        rows = np.arange(self.dim * out_block)[:, None] // out_block
        cols = np.arange(self.dim * in_block)[None, :] // in_block
        return rows == cols, rows > cols

    def init(self, key):
        keys = jax.random.split(key, self.depth + 1)
        # Row norms exp(s): 1/R into the first hidden layer, gain ~1 per hidden layer (a row sums ~B positive
        # diagonal entries of size exp(s)/sqrt(B)), R out of the last, so the image of a tanh layer is wide.
        log_r, log_b = math.log(_INIT_RANGE), 0.5 * math.log(self.block_dim)
        log_norms = [0.0] if self.depth == 1 else [-log_r] + [-log_b] * (self.depth - 2) + [log_r - log_b]
        layers = []
        for k, (b_out, b_in), log_norm in zip(keys[:-1], self._block_shapes(), log_norms):
            fan_in, fan_out = self.dim * b_in, self.dim * b_out
            v = dense_init(k, fan_in, fan_out)["w"].T  # (out, in); exp(v) on the diagonal blocks is ~1
            layers.append({"v": v, "s": jnp.full((fan_out,), log_norm), "b": jnp.zeros((fan_out,))})
        params = {"layers": layers}
        if self.context_dim:
            width = self.dim * self._block_shapes()[0][0]
            ctx = dense_init(keys[-1], self.context_dim, 2 * width)
            # Start at scale = 1: sigmoid(a) = (1 - 0.1) / (3 - 0.1).
            p = (1.0 - _SCALE_MIN) / (_SCALE_MAX - _SCALE_MIN)
            ctx["b"] = ctx["b"].at[:width].set(math.log(p / (1.0 - p)))
            params["context"] = ctx
        return params

    def _weight(self, layer, out_block: int, in_block: int):
        """Weight-normalised block-triangular matrix (out, in) and log of its diagonal blocks (dim, out, in)."""
        diag, lower = self._masks(out_block, in_block)
        v, s = layer["v"], layer["s"]
        g = jnp.where(diag, jnp.exp(v), jnp.where(lower, v, 0.0))
        log_row_scale = s - 0.5 * jnp.log(jnp.sum(g**2, axis=1))
        w = jnp.exp(log_row_scale)[:, None] * g
        log_w = (v + log_row_scale[:, None]).reshape(self.dim, out_block, self.dim, in_block)
        return w, jnp.moveaxis(jnp.diagonal(log_w, axis1=0, axis2=2), -1, 0)  # the diagonal blocks

    def _prepare(self, params, context):
        """Everything that depends on parameters and context only: per layer ``(W, b, log diag blocks)``, and the
        first layer's context ``(scale, shift, log scale)`` (or ``None``).  Computed once per root solve."""
        layers = [(*self._weight(p, *shape), p["b"]) for p, shape in zip(params["layers"], self._block_shapes())]
        film = None
        if context is not None:
            u = context @ params["context"]["w"] + params["context"]["b"]
            width = u.shape[-1] // 2
            scale = _SCALE_MIN + (_SCALE_MAX - _SCALE_MIN) * jax.nn.sigmoid(u[:, :width])
            film = (scale, u[:, width:], jnp.log(scale))
        return layers, film

    def _apply(self, prepared, x):
        """The BNAF network on prepared weights: returns ``(z, log dz_i/dx_i)``, both (n, dim)."""
        layers, film = prepared
        act, log_dact = ACTIVATIONS[self.activation], _LOG_DERIVATIVES[self.activation]
        h, log_g = x, None
        for l, (w, log_w, b) in enumerate(layers):
            h = h @ w.T + b
            if l == 0:
                log_g = jnp.broadcast_to(log_w[..., 0], (x.shape[0], *log_w.shape[:2]))  # input block size 1
                if film is not None:
                    scale, shift, log_scale = film
                    h = scale * h + shift
                    log_g = log_g + log_scale.reshape(log_g.shape)
            else:  # log-space block product: log_g[k] <- logsumexp_j(log W[k, j] + log_g[j])
                log_g = _log_matvec(log_w, log_g)
            if l < len(layers) - 1:
                log_g = log_g + log_dact(h).reshape(log_g.shape)
                h = act(h)
        return h, log_g[..., 0]

    def _network(self, params, x, context=None):
        """The BNAF network ``x → z``: returns ``(z, log dz_i/dx_i)``, both (n, dim)."""
        check_context(self, context)
        return self._apply(self._prepare(params, context), x)

    # -- density direction (the network) -----------------------------------------------------------------------
    def inverse_and_log_diag(self, params, x, context=None):
        return self._network(params, x, context)

    def inverse_and_log_det(self, params, x, context=None):
        z, log_diag = self._network(params, x, context)
        return z, log_diag.sum(-1)

    # -- sampling direction (numerical inverse) ----------------------------------------------------------------
    def forward_and_log_det(self, params, z, context=None):
        """Latent → data by root finding; log-det is minus the network's log-det at the root.

        The root is exact up to float32 evaluation of the network: a few ulps of ``z``, hence about
        ``ulp(z_i) / (dz_i/dx_i)`` in ``x_i`` (below 1e-5 where the map is not flat).  Latent points with no
        preimage (outside the bounded image of a tanh layer) give NaN.
        """
        check_context(self, context)
        x = _solve(self, params, z, context)
        _, log_diag = self._network(params, x, context)
        return x, -log_diag.sum(-1)

    def _jacobian(self, params, x, context):
        """Per-row Jacobians ``dz/dx`` of shape (n, dim, dim) (rows of the batch are independent)."""
        prepared = self._prepare(params, context)

        def column(e):
            tangent = jnp.broadcast_to(e, x.shape)
            return jax.jvp(lambda xx: self._apply(prepared, xx)[0], (x,), (tangent,))[1]

        return jnp.moveaxis(jax.vmap(column)(jnp.eye(self.dim, dtype=x.dtype)), 0, -1)

    @partial(jax.jit, static_argnums=0)  # compiled once per spec and shape, also when called eagerly
    def _root(self, params, z, context):
        """Solve ``f(x) = z`` one coordinate at a time (``z_i`` depends on ``x_{<=i}`` and increases in ``x_i``).

        For coordinate ``i`` with ``x_{<i}`` already solved, one loop of single evaluations first brackets the
        root (from 0, steps 1, 2, 4, ... away from the known side), then bisects to relative width ``_TOL``
        (absolute near 0); Newton steps with the exact ``dz_i/dx_i`` (clipped to the bracket) then polish it.
        Rows still unbracketed after steps of ``2**_MAX_EXPAND`` have no preimage and get NaN.
        """
        prepared = self._prepare(params, context)

        def solve_coordinate(i, x):
            def residual(t):
                zz, log_diag = self._apply(prepared, x.at[:, i].set(t))
                return zz[:, i] - z[:, i], jnp.exp(log_diag[:, i])

            def search(state):
                k, lo, hi, t, step = state
                above = residual(t)[0] > 0
                lo, hi = jnp.where(above, lo, t), jnp.where(above, t, hi)
                bracketed = jnp.isfinite(lo) & jnp.isfinite(hi)
                t = jnp.where(bracketed, 0.5 * (lo + hi), jnp.where(jnp.isfinite(lo), lo + step, hi - step))
                return k + 1, lo, hi, t, jnp.where(bracketed, step, 2 * step)

            def searching(state):
                k, lo, hi, _, step = state
                bracketed = jnp.isfinite(lo) & jnp.isfinite(hi)
                narrow = bracketed & (hi - lo <= _TOL * (1 + jnp.maximum(jnp.abs(lo), jnp.abs(hi))))
                return (k < _MAX_ITER) & jnp.any(~narrow & (step < 2.0**_MAX_EXPAND))

            inf, zero = jnp.full_like(z[:, 0], jnp.inf), jnp.zeros_like(z[:, 0])
            _, lo, hi, _, _ = jax.lax.while_loop(searching, search, (0, -inf, inf, zero, zero + 1))
            found = jnp.isfinite(lo) & jnp.isfinite(hi)

            def newton(_, t):
                r, slope = residual(t)
                step = t - r / slope
                return jnp.clip(jnp.where(jnp.isfinite(step), step, t), lo, hi)

            t = jax.lax.fori_loop(0, _NEWTON_STEPS, newton, jnp.where(found, 0.5 * (lo + hi), 0.0))
            return x.at[:, i].set(jnp.where(found, t, jnp.nan))

        return jax.lax.fori_loop(0, self.dim, solve_coordinate, jnp.zeros_like(z))


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _solve(layer: BNAF, params, z, context):
    """``x`` with ``layer._network(params, x, context)[0] == z``; differentiated implicitly (see ``_solve_jvp``)."""
    return layer._root(params, z, context)


@_solve.defjvp
def _solve_jvp(layer, primals, tangents):
    """Implicit function theorem: ``f(x*, θ, c) = z`` ⇒ ``dx* = J⁻¹ (dz - ∂f/∂θ dθ - ∂f/∂c dc)``, ``J = ∂f/∂x``.

    ``J`` is lower triangular per row, so the solve is a triangular one; the rule is linear in the tangents, so
    JAX transposes it for reverse mode and the search iterations are never differentiated.
    """
    params, z, context = primals
    d_params, d_z, d_context = tangents
    x = _solve(layer, params, z, context)
    _, df = jax.jvp(lambda p, c: layer._network(p, x, c)[0], (params, context), (d_params, d_context))
    jac = layer._jacobian(params, x, context)
    dx = solve_triangular(jac, (d_z - df)[..., None], lower=True)[..., 0]
    return x, dx


def bnaf(
    dim: int,
    context_dim: int = 0,
    *,
    n_layers: int = 2,
    depth: int = 3,
    block_dim: int = 4,
    activation: str = "tanh",
    reverse: bool = True,
) -> Bijector:
    """A BNAF flow: ``n_layers`` × (BNAF → Reverse), scanned over stacked parameters.

    Defaults are FLOWER's (O'Callaghan et al. §2.3: 2 flow layers, depth 3, block size 4, tanh; see
    :class:`BNAF` for what ``depth`` counts).  The Reverse permutation between layers (the BNAF reference code
    also permutes between flows) lets every coordinate depend on all others, but then the stack is no longer
    triangular; ``reverse=False`` keeps it triangular so :meth:`jaxstars.flows.Flow.marginal_log_prob` is exact.
    Use ``activation="leaky_tanh"`` when sampling matters: the latent image of a tanh layer is bounded, and in a
    tanh stack the intermediate points may fall outside the next layer's image (NaN samples).
    """
    layer = BNAF(dim, context_dim, depth=depth, block_dim=block_dim, activation=activation)
    block = Chain(dim, context_dim, layers=(layer, Permute.reverse(dim, context_dim))) if reverse else layer
    return Repeat(dim, context_dim, block=block, n=n_layers)
