"""Figures people would rather look at than read (matplotlib, Agg backend, written to files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def plot_density_comparison(
    data: np.ndarray,
    samples: np.ndarray,
    log_density: Callable,
    path: str | Path,
    labels: tuple[str, str] = ("x", "y"),
    invert_y: bool = False,
    grid_size: int = 200,
) -> Path:
    """Three panels: training data, the flow's density on a grid, and samples drawn from the flow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo = np.percentile(data, 0.5, axis=0)
    hi = np.percentile(data, 99.5, axis=0)
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    gx, gy = np.linspace(lo[0], hi[0], grid_size), np.linspace(lo[1], hi[1], grid_size)
    xx, yy = np.meshgrid(gx, gy)
    dens = np.exp(np.asarray(log_density(np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32))))
    dens = dens.reshape(xx.shape)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True, sharey=True)
    hist_kw = dict(bins=120, range=[[lo[0], hi[0]], [lo[1], hi[1]]], cmap="viridis", norm="log", cmin=1)
    axes[0].hist2d(data[:, 0], data[:, 1], **hist_kw)
    axes[0].set_title("training data")
    axes[1].pcolormesh(gx, gy, np.log10(np.maximum(dens, dens.max() * 1e-5)), cmap="viridis", shading="auto")
    axes[1].set_title("flow density (log)")
    axes[2].hist2d(samples[:, 0], samples[:, 1], **hist_kw)
    axes[2].set_title("flow samples")
    for ax in axes:
        ax.set_xlabel(labels[0])
    axes[0].set_ylabel(labels[1])
    if invert_y:
        axes[0].invert_yaxis()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
