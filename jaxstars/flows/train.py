"""Training flows with optax: whole epochs compiled, validation, early stopping, ensembles in one vmap.

One training loop serves every model: density estimation (the default weighted negative log-likelihood, with
Cranmer's per-star ``1/σ_P²`` weights as ``weight``) and any user-supplied loss, such as FLOWER's
importance-sampled marginal likelihood.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxstars.flows.flow import Flow

Loss = Callable  # loss(flow, params, batch, key) -> scalar, or (scalar, new_params)


def nll_loss(flow: Flow, params, batch: dict, key: jax.Array):
    """Weighted negative log-likelihood in training mode (BatchNorm uses batch statistics).

    ``-Σ w_i log p(x_i | c_i) / Σ w_i`` over the minibatch; returns ``(loss, params with updated running stats)``.
    """
    log_prob, new_params = flow.log_prob_train(params, batch["x"], batch.get("context"), batch.get("weight"))
    weight = batch.get("weight", jnp.ones_like(log_prob))
    return -jnp.sum(weight * log_prob) / jnp.sum(weight), new_params


def nll_eval_loss(flow: Flow, params, batch: dict, key: jax.Array):
    """Weighted negative log-likelihood in evaluation mode (used for validation)."""
    log_prob = flow.log_prob(params, batch["x"], batch.get("context"))
    weight = batch.get("weight", jnp.ones_like(log_prob))
    return -jnp.sum(weight * log_prob) / jnp.sum(weight)


@dataclass
class FitResult:
    """Outcome of :func:`fit`: best parameters (lowest validation loss) and the loss history per epoch.

    For ensembles the parameters have a leading member axis, ``train_loss`` / ``val_loss`` have shape
    ``(epochs, members)`` and ``best_epoch`` one entry per member.  ``best_epoch`` is -1 for a member whose
    validation loss was never finite (training diverged; its last parameters are returned and a warning is issued).
    """

    params: object
    train_loss: np.ndarray
    val_loss: np.ndarray
    best_epoch: np.ndarray
    epochs_run: int
    stopped_early: bool
    info: dict = field(default_factory=dict)


def _decay_mask(params):
    """Weight decay everywhere except running statistics (they are state, not weights)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any("running" in str(getattr(k, "key", "")) for k in path), params
    )


def make_optimizer(
    learning_rate: float | Callable = 1e-3, weight_decay: float = 0.0, clip_norm: float | None = None
) -> optax.GradientTransformation:
    """Adam (AdamW when ``weight_decay > 0``) with optional global-norm gradient clipping and an lr schedule."""
    parts = []
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if weight_decay > 0:
        parts.append(optax.adamw(learning_rate, weight_decay=weight_decay, mask=_decay_mask))
    else:
        parts.append(optax.adam(learning_rate))
    return optax.chain(*parts)


def _as_data(data) -> dict:
    if isinstance(data, dict):
        out = {k: jnp.asarray(v) for k, v in data.items() if v is not None}
    else:
        out = {"x": jnp.asarray(data)}
    sizes = {k: v.shape[0] for k, v in out.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all data arrays need the same leading length, got {sizes}")
    for name, value in out.items():
        if jnp.issubdtype(value.dtype, jnp.floating) and not bool(jnp.all(jnp.isfinite(value))):
            raise ValueError(f"training data {name!r} contains NaN or inf values; mask or drop them first")
    return out


def _split(data: dict, val_fraction: float, key: jax.Array):
    n = next(iter(data.values())).shape[0]
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    perm = jax.random.permutation(key, n)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    take = lambda idx: {k: v[idx] for k, v in data.items()}
    return take(train_idx), (take(val_idx) if n_val else None)


def fit(
    flow: Flow,
    data,
    *,
    key: jax.Array,
    params=None,
    n_members: int | None = None,
    loss: Loss | None = None,
    val_loss: Loss | None = None,
    epochs: int = 100,
    batch_size: int = 2048,
    learning_rate: float | Callable = 1e-3,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    val_fraction: float = 0.1,
    patience: int | None = 20,
    progress: bool = True,
    data_parallel: bool | None = None,
) -> FitResult:
    """Fit a flow (or an ensemble of flows) by minibatch optimisation.

    Parameters
    ----------
    flow : Flow
    data : array (n, dim) or dict of arrays with a common leading axis.  Keys used by the default loss: ``x``,
        optional ``context`` and ``weight`` (per-sample weights, e.g. Cranmer's ``1/σ_P²``).  Custom losses may read
        any keys.
    key : PRNG key; identical key and data → identical result.
    params : starting parameters (default: ``flow.init``); for ensembles, stacked with a leading member axis.
    n_members : train an ensemble of this many flows in one ``vmap`` (independent init and minibatch order).
        Results then have a leading member axis.  ``None`` trains a single flow.
    loss : ``loss(flow, params, batch, key) -> scalar`` or ``(scalar, new_params)`` (the latter to carry running
        statistics).  Default :func:`nll_loss`.
    val_loss : loss for validation (default: :func:`nll_eval_loss` with the default loss, else ``loss``).
    epochs, batch_size, learning_rate (float or optax schedule of the step), weight_decay, clip_norm :
        optimisation settings.
    val_fraction : fraction held out for validation and early stopping (0 disables both).
    patience : epochs without validation improvement before stopping (``None``: never stop early).  The
        parameters with the best validation loss are returned.
    progress : show a progress bar over epochs.
    data_parallel : shard each minibatch over all local devices (default: when more than one device exists).
    """
    loss = nll_loss if loss is None else loss
    if val_loss is None:
        val_loss = nll_eval_loss if loss is nll_loss else loss
    data = _as_data(data)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    key_split, key_init, key_train = jax.random.split(key, 3)
    train, val = _split(data, val_fraction, key_split)
    n_train = next(iter(train.values())).shape[0]
    if n_train < 1:
        raise ValueError(f"no training rows left after holding out val_fraction={val_fraction} of {n_train} rows")

    ensemble = n_members is not None
    members = n_members or 1
    if params is None:
        params = jax.vmap(flow.init)(jax.random.split(key_init, members))
    elif not ensemble:
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a)[None], params)
    # strongly typed copies: weak-typed leaves (e.g. Python-float initialisers) would change dtype after the first
    # update and make the compiled epoch recompile
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)), params)

    devices = jax.local_devices()
    if data_parallel is None:
        data_parallel = len(devices) > 1
    n_dev = len(devices) if data_parallel and n_train >= len(devices) else 1
    batch_size = min(batch_size, n_train)
    batch_size = max(n_dev, batch_size - batch_size % n_dev)
    n_batches = max(1, n_train // batch_size)
    mesh = Mesh(np.array(devices[:n_dev]), ("data",)) if n_dev > 1 else None

    optimizer = make_optimizer(learning_rate, weight_decay, clip_norm)
    opt_state = jax.vmap(optimizer.init)(params)

    def scalar_loss(p, batch, k):
        out = loss(flow, p, batch, k)
        return out if isinstance(out, tuple) else (out, p)

    def member_epoch(p, state, k):
        k_perm, k_steps = jax.random.split(k)
        perm = jax.random.permutation(k_perm, n_train)[: n_batches * batch_size].reshape(n_batches, batch_size)

        def step(carry, inputs):
            p, state = carry
            idx, k_step = inputs
            batch = {name: value[idx] for name, value in train.items()}
            if mesh is not None:
                batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, PartitionSpec("data")))
            (value, new_p), grads = jax.value_and_grad(scalar_loss, has_aux=True)(p, batch, k_step)
            updates, state = optimizer.update(grads, state, p)
            return (optax.apply_updates(new_p, updates), state), value

        (p, state), values = jax.lax.scan(step, (p, state), (perm, jax.random.split(k_steps, n_batches)))
        return p, state, values.mean()

    @jax.jit
    def run_epoch(params, opt_state, keys):
        return jax.vmap(member_epoch)(params, opt_state, keys)

    val_chunks = []
    if val is not None:
        n_val = next(iter(val.values())).shape[0]
        for start in range(0, n_val, batch_size):
            val_chunks.append({k: v[start : start + batch_size] for k, v in val.items()})

    @jax.jit
    def chunk_val_loss(params, chunk, k):
        return jax.vmap(lambda p: val_loss(flow, p, chunk, k))(params)

    def evaluate(params, k):
        # Chunk losses are (weighted) means: combine them by their total weight, not their row count.
        sizes = np.array(
            [float(np.sum(c["weight"])) if "weight" in c else next(iter(c.values())).shape[0] for c in val_chunks]
        )
        values = np.stack([np.asarray(chunk_val_loss(params, c, k)) for c in val_chunks])
        return (values * sizes[:, None]).sum(0) / sizes.sum()

    best_params = params
    best_loss = np.full(members, np.inf)
    best_epoch = np.zeros(members, int)
    train_hist, val_hist = [], []
    stopped_early = False
    bar = _progress(epochs, progress)
    key_val = jax.random.fold_in(key_train, 10**6)
    epoch = 0
    for epoch in range(epochs):
        keys = jax.random.split(jax.random.fold_in(key_train, epoch), members)
        params, opt_state, train_loss = run_epoch(params, opt_state, keys)
        train_hist.append(np.asarray(train_loss))
        if val_chunks:
            current = evaluate(params, key_val)
            val_hist.append(current)
            improved = current < best_loss
            best_loss = np.where(improved, current, best_loss)
            best_epoch = np.where(improved, epoch, best_epoch)
            mask = jnp.asarray(improved)
            best_params = jax.tree_util.tree_map(
                lambda new, old: jnp.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                params,
                best_params,
            )
        else:
            best_params = params
            best_epoch = np.full(members, epoch)
        if bar is not None:
            bar.update(1)
            post = {"train": f"{float(np.mean(train_hist[-1])):.4f}"}
            if val_chunks:
                post["val"] = f"{float(np.mean(val_hist[-1])):.4f}"
            bar.set_postfix(post)
        if val_chunks and patience is not None and np.all(epoch - best_epoch >= patience):
            stopped_early = True
            break
    if bar is not None:
        bar.close()
    if val_chunks and not np.all(np.isfinite(best_loss)):
        diverged = ~np.isfinite(best_loss)
        best_epoch = np.where(diverged, -1, best_epoch)
        mask = jnp.asarray(diverged)
        best_params = jax.tree_util.tree_map(
            lambda new, old: jnp.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old), params, best_params
        )
        warnings.warn(
            f"{int(diverged.sum())} of {members} fit(s) never reached a finite validation loss (diverged?); "
            "their last parameters are returned and best_epoch is -1",
            RuntimeWarning,
            stacklevel=2,
        )

    if not ensemble:
        best_params = jax.tree_util.tree_map(lambda a: a[0], best_params)
    squeeze = (lambda a: a) if ensemble else (lambda a: a[..., 0])
    return FitResult(
        params=best_params,
        train_loss=squeeze(np.array(train_hist)),
        val_loss=squeeze(np.array(val_hist)) if val_hist else np.array([]),
        best_epoch=best_epoch if ensemble else int(best_epoch[0]),
        epochs_run=epoch + 1,
        stopped_early=stopped_early,
        info={"batch_size": batch_size, "n_batches": n_batches, "n_devices": n_dev, "n_train": n_train},
    )


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="training", unit="epoch", leave=False)


def log_mean_exp(values: jax.Array, axis: int = -1) -> jax.Array:
    """``log mean exp`` along ``axis`` (stable); used by importance-sampled losses."""
    return jax.scipy.special.logsumexp(values, axis=axis) - math.log(values.shape[axis])


def recalibrate_batchnorm(flow: Flow, params, x, *, context=None, weight=None, n_passes: int = 60):
    """Replace BatchNorm running statistics by (weighted) statistics of ``x`` through the trained flow.

    Running averages with momentum follow the last few minibatches; with heavy-tailed loss weights they are
    noisy. ``n_passes`` training-mode passes over ``x`` (a representative sample, e.g. the training set) make
    every layer's running mean and variance converge to the statistics of its inputs (momentum^n_passes of the
    old values remain). Weights and biases are unchanged.
    """
    x = jnp.asarray(x)

    def one_pass(p, _):
        _, new = flow.log_prob_train(p, x, context, weight)
        return new, None

    params, _ = jax.lax.scan(one_pass, params, None, length=n_passes)
    return params
