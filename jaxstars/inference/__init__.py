"""Per-star posterior machinery shared by all models (started: grid posteriors and importance-sampled marginals).

Still to come (issue "catalog engine"): per-star NUTS vmapped over batches, diagnostics, chunked catalog runs.
"""

from jaxstars.inference.grid import GridPosterior, grid_posterior_1d
from jaxstars.inference.importance import ImportanceResult, importance_log_marginal

__all__ = ["GridPosterior", "ImportanceResult", "grid_posterior_1d", "importance_log_marginal"]
