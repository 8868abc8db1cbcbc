"""Training GalaxyFlow (Lim et al. §3.3): ``p(r)`` first, then ``p(v | r)``, each an ensemble trained in one vmap.

Settings of the paper (the defaults of :class:`TrainOptions`): Adam with learning rate 1e-3, 20 % of the particles
held out for validation, the rest split into 10 minibatches per epoch, early stopping when the validation loss has
not improved for 50 epochs, then a refinement run restarted from the best parameters at learning rate 1e-4 (same
validation split, same stopping rule), and 10 ensemble members with different seeds.  Every size is an option so
tests stay small.  The loop is the shared :func:`jaxstars.flows.fit` (``n_members`` vmaps the seeds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jax
import numpy as np

from jaxstars.flows import fit

from .model import FlowOptions, GalaxyFlow
from .particles import Particles
from .preprocessing import PositionPreprocessor, VelocityPreprocessor


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation settings (§3.3 defaults).  ``max_epochs``/``refine_epochs`` cap the two runs."""

    n_members: int = 10
    learning_rate: float = 1e-3
    refine_learning_rate: float = 1e-4
    val_fraction: float = 0.2
    n_batches: int = 10
    patience: int = 50
    max_epochs: int = 1000
    refine_epochs: int = 1000
    progress: bool = False

    def __post_init__(self):
        if self.n_members < 1 or self.n_batches < 1:
            raise ValueError("n_members and n_batches must be >= 1")


def _fit_ensemble(flow, data, key, opts: TrainOptions):
    n = next(iter(data.values())).shape[0]
    n_train = n - round(n * opts.val_fraction)
    batch_size = max(1, n_train // opts.n_batches)
    common = {
        "key": key,
        "n_members": opts.n_members,
        "batch_size": batch_size,
        "val_fraction": opts.val_fraction,
        "patience": opts.patience,
        "progress": opts.progress,
    }
    first = fit(flow, data, epochs=opts.max_epochs, learning_rate=opts.learning_rate, **common)
    history = {
        "train_loss": first.train_loss.tolist(),
        "val_loss": first.val_loss.tolist(),
        "best_epoch": np.asarray(first.best_epoch).tolist(),
        "epochs": first.epochs_run,
    }
    params = first.params
    if opts.refine_epochs > 0:
        # Same key: fit splits train/validation from it, so the refinement sees the same held-out particles.
        second = fit(
            flow, data, params=params, epochs=opts.refine_epochs, learning_rate=opts.refine_learning_rate, **common
        )
        params = second.params
        history.update(
            refine_train_loss=second.train_loss.tolist(),
            refine_val_loss=second.val_loss.tolist(),
            refine_best_epoch=np.asarray(second.best_epoch).tolist(),
            refine_epochs=second.epochs_run,
        )
    history["batch_size"] = batch_size
    return params, history


def train_galaxyflow(
    particles: Particles,
    *,
    key: jax.Array,
    flow_options: FlowOptions | None = None,
    train_options: TrainOptions | None = None,
) -> GalaxyFlow:
    """Fit ``p(r)`` and ``p(v | r)`` (Eq. 4) to star particles.

    Parameters
    ----------
    particles : the training particles (positions inside ``particles.r_max`` of ``particles.sun_position``).
    key : PRNG key; identical key and data give an identical model.
    flow_options : architecture (default: the paper's CNF).
    train_options : optimisation settings (default: the paper's).
    """
    flow_options = flow_options or FlowOptions()
    opts = train_options or TrainOptions()
    pos = np.asarray(particles.positions, np.float64)
    vel = np.asarray(particles.velocities, np.float64)
    if len(pos) < 10:
        raise ValueError(f"need at least 10 particles to train, got {len(pos)}")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(vel))):
        raise ValueError("particle positions/velocities contain NaN or inf values")
    pos_prep = PositionPreprocessor.fit(pos, particles.sun_position, particles.r_max)
    vel_prep = VelocityPreprocessor.fit(vel)
    u_r = np.asarray(pos_prep.forward(pos.astype(np.float32))[0])
    u_v = np.asarray(vel_prep.forward(vel.astype(np.float32))[0])
    pos_flow, vel_flow = flow_options.build(0), flow_options.build(3)
    k_r, k_v = jax.random.split(key)
    pos_params, pos_hist = _fit_ensemble(pos_flow, {"x": u_r}, k_r, opts)
    vel_params, vel_hist = _fit_ensemble(vel_flow, {"x": u_v, "context": u_r}, k_v, opts)
    return GalaxyFlow(
        pos_flow,
        vel_flow,
        pos_params,
        vel_params,
        pos_prep,
        vel_prep,
        v_max=float(np.linalg.norm(vel, axis=1).max()),
        sun_velocity=tuple(map(float, particles.sun_velocity)),
        options=flow_options,
        info={
            "n_particles": len(pos),
            "train_options": asdict(opts),
            "position_history": pos_hist,
            "velocity_history": vel_hist,
        },
    )
