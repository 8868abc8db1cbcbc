"""The jaxstars flow library: pure functional bijectors composed into normalising flows."""

from jaxstars.flows.base import Bijector, Chain, Permute, Repeat, from_config, register
from jaxstars.flows.batchnorm import BatchNorm
from jaxstars.flows.flow import Flow, standard_normal_log_prob
from jaxstars.flows.maf import MADE, maf

__all__ = [
    "BatchNorm",
    "Bijector",
    "Chain",
    "Flow",
    "MADE",
    "Permute",
    "Repeat",
    "from_config",
    "maf",
    "register",
    "standard_normal_log_prob",
]
