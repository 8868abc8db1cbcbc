"""The jaxstars flow library: pure functional bijectors composed into normalising flows."""

from jaxstars.flows.base import Bijector, Chain, Permute, Repeat, from_config, register
from jaxstars.flows.batchnorm import BatchNorm
from jaxstars.flows.flow import Flow, standard_normal_log_prob
from jaxstars.flows.distribution import FlowDistribution
from jaxstars.flows.io import FlowFileError, load_flow, save_flow
from jaxstars.flows.maf import MADE, maf
from jaxstars.flows.train import FitResult, fit, nll_loss

__all__ = [
    "BatchNorm",
    "Bijector",
    "Chain",
    "Flow",
    "FlowDistribution",
    "FlowFileError",
    "FitResult",
    "fit",
    "load_flow",
    "nll_loss",
    "save_flow",
    "MADE",
    "Permute",
    "Repeat",
    "from_config",
    "maf",
    "register",
    "standard_normal_log_prob",
]
