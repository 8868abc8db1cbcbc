"""The jaxstars flow library: pure functional bijectors composed into normalising flows.

Builders: :func:`maf` (Cranmer et al.), :func:`bnaf` (FLOWER), :func:`cnf` (GalaxyFlow), :func:`realnvp` and
:func:`spline_flow` (couplings).  Wrap a bijector in :class:`Flow`, fit it with :func:`fit`, use it in NumPyro
through :class:`FlowDistribution`, store it with :func:`save_flow` / :func:`load_flow`.
"""

from jaxstars.flows.base import Bijector, Chain, Permute, Repeat, from_config, register
from jaxstars.flows.batchnorm import BatchNorm
from jaxstars.flows.bnaf import BNAF, bnaf
from jaxstars.flows.cnf import CNF, cnf
from jaxstars.flows.coupling import AffineCoupling, SplineCoupling, realnvp, spline_flow
from jaxstars.flows.distribution import FlowDistribution
from jaxstars.flows.flow import Flow, standard_normal_log_prob
from jaxstars.flows.io import FlowFileError, load_flow, save_flow
from jaxstars.flows.maf import MADE, maf
from jaxstars.flows.train import FitResult, fit, nll_loss, recalibrate_batchnorm

__all__ = [
    "BNAF",
    "CNF",
    "MADE",
    "AffineCoupling",
    "BatchNorm",
    "Bijector",
    "Chain",
    "FitResult",
    "Flow",
    "FlowDistribution",
    "FlowFileError",
    "Permute",
    "Repeat",
    "SplineCoupling",
    "bnaf",
    "cnf",
    "fit",
    "from_config",
    "load_flow",
    "maf",
    "nll_loss",
    "realnvp",
    "recalibrate_batchnorm",
    "register",
    "save_flow",
    "spline_flow",
    "standard_normal_log_prob",
]
