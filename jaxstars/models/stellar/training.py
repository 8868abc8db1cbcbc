"""Training the stellar model (Green et al. §2, §4): iterate between fitting the network with the per-star
covariances held fixed and updating the covariances and reddenings with the network held fixed.

Per iteration ``k = 0 … n_iterations − 1``:

1. whitening matrices ``Lᵀ`` (Eqs. 4, 6, 10) at the current reddenings — at ``k = 0`` without the θ-gradient and
   reddening terms (``∇M = 0``, ``R = 0``), and without the stars with ``σ_E > 0.2``;
2. ``epochs`` epochs of Adam on the loss of Eq. 15 (``χ²/n_bands`` + L2 1e-4 on the stellar hidden kernels + L1
   1e-2 on the R kernel), learning rate ``lr · decay^k`` with ``decay = e^{-1/5}``, batch 1024;
3. every star's reddening re-estimated by Eqs. 8–9 with the fixed prior (clipped ≥ 0, variance floor);
4. χ²/d.o.f. of every star (d.o.f. = observed entries of ``c`` − 1, since E was fitted); stars above the threshold
   — decreasing logarithmically from 100 after the first iteration to 5 at iteration ``round(0.75 n_iterations)``
   (15 of 20 in the paper), then constant — are left out of the next iteration.

The split is 70/20/10 (train / validation / test) with a fixed seed; validation stars are never trained on (their
loss tracks over-fitting); test stars are for the reported metrics.  The whole of step 2 is one compiled call
(``lax.scan`` over epochs and batches; excluded stars carry weight 0 so shapes never change).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .covariance import (
    StarArrays,
    batch_chi2,
    batch_reddening_update,
    batch_whitening,
    chi2,
    star_arrays,
)
from .density import DensityMap
from .model import StellarModel
from .network import StellarNetwork
from .stars import StellarStars

__all__ = [
    "StellarTrainConfig",
    "TrainedStellar",
    "chi2_threshold",
    "split_indices",
    "train_stellar",
]


@dataclasses.dataclass(frozen=True)
class StellarTrainConfig:
    """Settings of :func:`train_stellar` (defaults: the paper's §4 and the released code).

    Attributes
    ----------
    n_iterations, epochs, batch_size : int
        Outer iterations, epochs per iteration, stars per Adam step.
    learning_rate, lr_decay : float
        Initial learning rate and its factor per iteration (``e^{-1/5}``).
    l2_stellar, l1_extinction : float
        Eq. 15's ``λ_s`` and ``λ_r``.
    chi2_start, chi2_final : float
        χ²/d.o.f. exclusion thresholds after the first and from the ``chi2_final_fraction · n_iterations``-th
        iteration on (log-linear in between).
    first_max_sigma_E : float
        Stars with a larger reddening error sit out the first iteration.
    split, split_seed : tuple of float, int
        Train / validation / test fractions and the seed of the fixed random split.
    hidden, activation : tuple of int, str
        Network architecture (released: ``(32, 32)``, sigmoid).
    seed : int
        Initialisation and shuffling seed.
    """

    n_iterations: int = 20
    epochs: int = 25
    batch_size: int = 1024
    learning_rate: float = 1e-3
    lr_decay: float = math.exp(-0.2)
    l2_stellar: float = 1e-4
    l1_extinction: float = 1e-2
    chi2_start: float = 100.0
    chi2_final: float = 5.0
    chi2_final_fraction: float = 0.75
    first_max_sigma_E: float = 0.2
    split: tuple[float, float, float] = (0.7, 0.2, 0.1)
    split_seed: int = 0
    hidden: tuple[int, ...] = (32, 32)
    activation: str = "sigmoid"
    seed: int = 0

    def __post_init__(self):
        for name in ("n_iterations", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1.0) > 1e-6 or self.split[0] <= 0:
            raise ValueError(f"split must be three non-negative fractions summing to 1, got {self.split}")
        if self.learning_rate <= 0 or self.chi2_final <= 0 or self.chi2_start < self.chi2_final:
            raise ValueError("learning_rate and chi2 thresholds must be positive, chi2_start >= chi2_final")


def chi2_threshold(iteration: int, config: StellarTrainConfig) -> float:
    """χ²/d.o.f. cut applied after (1-based) ``iteration``: 100 → 5 logarithmically, then constant (§4)."""
    reach = max(1, round(config.chi2_final_fraction * config.n_iterations))
    if iteration >= reach or reach == 1:
        return float(config.chi2_final)
    frac = (iteration - 1) / (reach - 1)
    return float(
        math.exp(math.log(config.chi2_start) + frac * (math.log(config.chi2_final) - math.log(config.chi2_start)))
    )


def split_indices(n: int, fractions=(0.7, 0.2, 0.1), seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed random 70/20/10 split (§4): ``{"train", "validation", "test"}`` sorted index arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    return {
        "train": np.sort(perm[:n_train]),
        "validation": np.sort(perm[n_train : n_train + n_val]),
        "test": np.sort(perm[n_train + n_val :]),
    }


@dataclasses.dataclass
class TrainedStellar:
    """Result of :func:`train_stellar`.

    Attributes
    ----------
    model : StellarModel
        Trained network with its training-density map and provenance.
    split : dict of str to ndarray
        Row indices of the train / validation / test sets.
    E, E_var : ndarray
        Final reddening estimates (Eqs. 8–9) of every row.
    chi2, dof : ndarray
        Final χ² and degrees of freedom per row (NaN / 0 on invalid rows).
    excluded : ndarray of bool
        Rows above the final χ²/d.o.f. threshold (or invalid).
    history : list of dict
        Per iteration: learning rate, threshold, stars trained on, epoch losses (train, validation), final losses,
        ⟨χ²/d.o.f.⟩, excluded fraction, seconds.
    """

    model: StellarModel
    split: dict
    E: np.ndarray
    E_var: np.ndarray
    chi2: np.ndarray
    dof: np.ndarray
    excluded: np.ndarray
    history: list


def _epoch_runner(network: StellarNetwork, config: StellarTrainConfig, n_train: int):
    """One compiled call running ``config.epochs`` epochs (shuffled batches) and the per-epoch validation loss."""
    n_b = network.n_bands
    bs = min(config.batch_size, n_train)
    n_batches = -(-n_train // bs)
    pad = n_batches * bs - n_train
    optimiser = optax.inject_hyperparams(optax.adam)(learning_rate=config.learning_rate)

    def data_loss(params, W, y, theta_n, E, w):
        pred = network.colour_output(params, theta_n, E)
        c2 = jax.vmap(chi2)(W, pred, y)
        return jnp.sum(w * c2) / n_b / jnp.maximum(jnp.sum(w), 1.0)

    def loss(params, batch):
        return data_loss(params, *batch) + network.penalty(params, config.l2_stellar, config.l1_extinction)

    grad_fn = jax.value_and_grad(loss)

    def epoch(carry, key):
        params, opt_state, train, val = carry
        perm = jax.random.permutation(key, n_train)
        idx = jnp.concatenate([perm, perm[:pad]]).reshape(n_batches, bs)
        keep = jnp.concatenate([jnp.ones(n_train), jnp.zeros(pad)]).reshape(n_batches, bs)

        def step(state, args):
            params, opt_state = state
            i, k = args
            batch = tuple(x[i] for x in train[:-1]) + (train[-1][i] * k,)
            value, grads = grad_fn(params, batch)
            updates, opt_state = optimiser.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), values = jax.lax.scan(step, (params, opt_state), (idx, keep))
        val_loss = loss(params, val)
        return (params, opt_state, train, val), (jnp.mean(values), val_loss)

    @jax.jit
    def run(params, opt_state, key, lr, train, val):
        opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, opt_state.hyperparams["learning_rate"].dtype)
        keys = jax.random.split(key, config.epochs)
        (params, opt_state, _, _), (train_losses, val_losses) = jax.lax.scan(
            epoch, (params, opt_state, train, val), keys
        )
        return params, opt_state, train_losses, val_losses

    @jax.jit
    def evaluate(params, batch):
        return loss(params, batch)

    return optimiser, run, evaluate


def _init_output_bias(network: StellarNetwork, params, arrays: StarArrays, idx) -> dict:
    """Start the output bias at the median observed ``B(m̂ − μ) − Ê B R`` of the training stars.

    The paper's Keras network starts from a zero bias and has ~3000 Adam steps per epoch on 2.9 million stars; with
    a few thousand stars the first iteration would end far from the data and the χ² cut would then remove almost
    every star.  Starting at the data's median (a constant offset per output) avoids that; the rest of the
    initialisation is Keras' (Glorot-uniform kernels).
    """
    y = np.asarray(arrays.y)[idx]
    obs = np.asarray(arrays.obs)[idx]
    base = np.asarray(network.colour_output(params, arrays.theta_n[idx], arrays.E0[idx]))
    resid = np.where(obs, y - base, np.nan)
    offset = np.nanmedian(np.where(obs.any(axis=0), resid, 0.0), axis=0)
    offset = np.where(np.isfinite(offset), offset, 0.0)
    out = dict(params)
    out["out"] = {"w": params["out"]["w"], "b": params["out"]["b"] + jnp.asarray(offset, params["out"]["b"].dtype)}
    return out


def _take(arrays: StarArrays, W, E, idx, weight):
    return (W[idx], arrays.y[idx], arrays.theta_n[idx], E[idx], jnp.asarray(weight, W.dtype))


def train_stellar(
    stars: StellarStars,
    config: StellarTrainConfig = StellarTrainConfig(),
    *,
    split: dict | None = None,
    progress: Callable[[dict], None] | None = None,
    density: bool = True,
) -> TrainedStellar:
    """Train a stellar model on a prepared sample (§4).

    Parameters
    ----------
    stars : StellarStars
        From :func:`~jaxstars.models.stellar.stars.prepare_stars` (rows with invalid flags are never used).
    config : StellarTrainConfig
    split : dict, optional
        Custom ``{"train", "validation", "test"}`` row indices (default: :func:`split_indices`).
    progress : callable, optional
        Called with each iteration's history entry.
    density : bool
        Build the training-density map (§6) of the training stars.

    Returns
    -------
    TrainedStellar
    """
    n = len(stars)
    split = split or split_indices(n, config.split, config.split_seed)
    valid = stars.valid
    train_idx = split["train"][valid[split["train"]]]
    val_idx = split["validation"][valid[split["validation"]]]
    if train_idx.size == 0:
        raise ValueError("no valid training star (check the flags of prepare_stars)")
    if val_idx.size == 0:
        val_idx = train_idx[:1]
    theta_med = np.median(stars.theta[train_idx], axis=0)
    theta_std = np.std(stars.theta[train_idx], axis=0)
    theta_std = np.where(theta_std > 0, theta_std, 1.0)
    network = StellarNetwork(stars.bands, tuple(theta_med), tuple(theta_std), config.hidden, config.activation)
    arrays = star_arrays(network, stars)
    key = jax.random.PRNGKey(config.seed)
    key, k_init = jax.random.split(key)
    params = _init_output_bias(network, network.init(k_init), arrays, train_idx)
    optimiser, run, evaluate = _epoch_runner(network, config, train_idx.size)
    opt_state = optimiser.init(params)

    E = arrays.E0
    E_var = arrays.E0_var
    excluded = ~valid
    dof = np.maximum(np.asarray(arrays.obs).sum(axis=1) - 1, 1)
    history = []
    c2 = np.full(n, np.nan)
    for k in range(config.n_iterations):
        t0 = time.perf_counter()
        first = k == 0
        W = batch_whitening(network, params, arrays, E, E_var, gradients=not first)
        if first:
            use = valid & (np.sqrt(stars.E0_var) <= config.first_max_sigma_E)
        else:
            use = valid & ~excluded
        lr = config.learning_rate * config.lr_decay**k
        train = _take(arrays, W, E, train_idx, use[train_idx])
        val = _take(arrays, W, E, val_idx, use[val_idx])
        key, k_run = jax.random.split(key)
        params, opt_state, train_losses, val_losses = run(params, opt_state, k_run, lr, train, val)
        train_loss = float(evaluate(params, train))
        val_loss = float(evaluate(params, val))
        # reddening update (Eqs. 8–9), then the covariances and χ²/d.o.f. of every star at the new reddenings
        E, E_var = batch_reddening_update(network, params, arrays)
        W = batch_whitening(network, params, arrays, E, E_var)
        c2 = np.asarray(batch_chi2(network, params, W, arrays, E), float)
        ratio = np.where(valid, c2 / dof, np.nan)
        threshold = chi2_threshold(k + 1, config)
        excluded = ~valid | ~(ratio <= threshold)
        kept = valid & ~excluded
        entry = {
            "iteration": k + 1,
            "learning_rate": lr,
            "n_trained": int(use[train_idx].sum()),
            "epoch_train_loss": np.asarray(train_losses).tolist(),
            "epoch_val_loss": np.asarray(val_losses).tolist(),
            "train_loss": train_loss,
            "val_loss": val_loss,
            "threshold": threshold,
            "mean_chi2_dof_train": float(np.mean(ratio[train_idx][kept[train_idx]]))
            if kept[train_idx].any()
            else None,
            "excluded_fraction_train": float(np.mean(excluded[train_idx])),
            "seconds": time.perf_counter() - t0,
        }
        history.append(entry)
        if progress is not None:
            progress(entry)

    density_map = None
    if density:
        observed = np.concatenate([stars.plx_ok[:, None], stars.band_obs[:, 1:] & stars.band_obs[:, :1]], axis=1)
        density_map = DensityMap.from_training(
            stars.theta[train_idx], observed[train_idx], ["parallax", *stars.bands[1:]]
        )
    info = {
        "source": "jaxstars.models.stellar.train_stellar",
        "config": dataclasses.asdict(config),
        "n_train": int(train_idx.size),
        "n_validation": int(val_idx.size),
        "final_train_loss": history[-1]["train_loss"],
        "final_val_loss": history[-1]["val_loss"],
    }
    model = StellarModel(network, jax.device_get(params), density_map, info)
    return TrainedStellar(
        model=model,
        split=split,
        E=np.asarray(E, float),
        E_var=np.asarray(E_var, float),
        chi2=np.where(valid, c2, np.nan),
        dof=np.where(valid, dof, 0),
        excluded=excluded,
        history=history,
    )
