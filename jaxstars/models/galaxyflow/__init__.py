"""GalaxyFlow (Lim et al., paper 004): upsampling star particles with continuous normalising flows.

* :mod:`~jaxstars.models.galaxyflow.particles` — seeded mock star particles with structure around the Sun;
* :mod:`~jaxstars.models.galaxyflow.preprocessing` — §3.3 position/velocity preprocessing (Eqs. 9–11), exact inverse
  and log-Jacobians;
* :mod:`~jaxstars.models.galaxyflow.model` — :class:`GalaxyFlow`, ``f(r, v) = p(r) p(v | r)`` (Eq. 4), ensembles,
  sampling, I/O;
* :mod:`~jaxstars.models.galaxyflow.training` — §3.3 training (early stopping, refinement, vmapped seeds);
* :mod:`~jaxstars.models.galaxyflow.upsample` — §3.3 upsampling with the outlier cut, ICRS output;
* :mod:`~jaxstars.models.galaxyflow.enbid` — the §4 EnBiD baseline (vectorised entropy-based partition + kernels);
* :mod:`~jaxstars.models.galaxyflow.classifier` — the §5.3 multi-model classifier test (LP scores, AUC).
"""

from .classifier import (
    PAPER_CLASSIFIER,
    ClassifierOptions,
    MultiModelClassifier,
    log_posterior_scores,
    multi_model_test,
    roc_auc,
    split_particles,
    train_classifier,
)
from .enbid import EnbidTree, EnbidUpsampler, enbid_partition, enbid_sample
from .model import FlowOptions, GalaxyFlow
from .particles import R_MAX, SUN_POSITION, SUN_VELOCITY, Particles, generate_particles
from .preprocessing import C_BOUNDARY, PositionPreprocessor, VelocityPreprocessor
from .training import TrainOptions, train_galaxyflow
from .upsample import selection_mask, sky_window, to_icrs, upsample

__all__ = [
    "C_BOUNDARY",
    "PAPER_CLASSIFIER",
    "R_MAX",
    "SUN_POSITION",
    "SUN_VELOCITY",
    "ClassifierOptions",
    "EnbidTree",
    "EnbidUpsampler",
    "FlowOptions",
    "GalaxyFlow",
    "MultiModelClassifier",
    "Particles",
    "PositionPreprocessor",
    "TrainOptions",
    "VelocityPreprocessor",
    "enbid_partition",
    "enbid_sample",
    "generate_particles",
    "log_posterior_scores",
    "multi_model_test",
    "roc_auc",
    "selection_mask",
    "sky_window",
    "split_particles",
    "to_icrs",
    "train_classifier",
    "train_galaxyflow",
    "upsample",
]
