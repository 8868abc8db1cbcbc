"""One module per paper: a NumPyro model, its training and its inference entry points.

* :mod:`jaxstars.models.cmd` — Cranmer et al.: colour–magnitude flow with iterative dust, distance posteriors.
"""
