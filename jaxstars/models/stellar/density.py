"""Where a stellar model is valid: the density of its training data in θ-space (Green et al. §6, Fig. 13).

For each band the paper builds a Gaussian kernel density estimate of the training stars observed in that band, in
``(Teff, logg, [Fe/H])`` with bandwidth (50 K, 0.05 dex, 0.05 dex), normalised to a peak of one; for the absolute
magnitude the density of stars with usable parallaxes is used.  It recommends trusting colour predictions where
that density is above ``1e-3`` and absolute magnitudes where it is above ``1e-2``.

:class:`DensityMap` holds such densities on a regular grid (the release ships one, ``green2020_input_density.h5``;
:meth:`DensityMap.from_training` builds one for a newly trained model) and evaluates them at any θ by trilinear
interpolation (zero outside the grid).  Label 0 is ``"parallax"`` (absolute magnitude), labels 1… are the
non-reference bands (their colours relative to the reference band).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ABSOLUTE_THRESHOLD", "COLOUR_THRESHOLD", "PAPER_BANDWIDTH", "DensityMap"]

#: §6: kernel bandwidth in (Teff [K], logg, [Fe/H]).
PAPER_BANDWIDTH = (50.0, 0.05, 0.05)
#: §6: recommended density thresholds for absolute magnitudes and for colours.
ABSOLUTE_THRESHOLD = 1e-2
COLOUR_THRESHOLD = 1e-3


@dataclass(frozen=True, eq=False)
class DensityMap:
    """Training-data density per label on a regular ``(Teff, logg, [Fe/H])`` grid, peak-normalised to 1.

    Attributes
    ----------
    teff, logg, feh : ndarray
        Increasing, evenly spaced grid axes.
    density : ndarray
        ``(n_labels, n_teff, n_logg, n_feh)`` densities in ``[0, 1]``.
    labels : tuple of str
        ``("parallax", band_1, band_2, …)``: label 0 is the density of stars with usable parallaxes.
    """

    teff: np.ndarray
    logg: np.ndarray
    feh: np.ndarray
    density: np.ndarray
    labels: tuple[str, ...]

    def __post_init__(self):
        axes = [np.asarray(a, float) for a in (self.teff, self.logg, self.feh)]
        for name, a in zip(("teff", "logg", "feh"), axes):
            if a.ndim != 1 or a.size < 2 or not np.all(np.diff(a) > 0):
                raise ValueError(f"density axis {name} must be increasing with at least 2 points")
            if not np.allclose(np.diff(a), a[1] - a[0], rtol=1e-4):
                raise ValueError(f"density axis {name} must be evenly spaced")
        density = np.asarray(self.density, np.float32)
        shape = (len(self.labels), *(a.size for a in axes))
        if density.shape != shape:
            raise ValueError(f"density has shape {density.shape}, expected {shape}")
        if not np.all(np.isfinite(density)):
            raise ValueError("density values must be finite")
        object.__setattr__(self, "teff", axes[0])
        object.__setattr__(self, "logg", axes[1])
        object.__setattr__(self, "feh", axes[2])
        object.__setattr__(self, "density", density)
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_training(
        cls,
        theta,
        observed,
        labels,
        *,
        bandwidth=PAPER_BANDWIDTH,
        n_grid: int = 50,
        limits=None,
        chunk: int = 4096,
    ) -> DensityMap:
        """Kernel density estimate of training θ per label, evaluated on a grid (§6).

        Parameters
        ----------
        theta : array (n, 3)
            Physical ``(Teff, logg, [Fe/H])`` of the training stars.
        observed : bool array (n, n_labels)
            Which stars count for each label (column 0: usable parallax; column j: band j observed).
        labels : sequence of str
            Label names.
        bandwidth : 3 floats
            Gaussian kernel widths; each is raised to at least the grid spacing so that no star falls between
            grid nodes unseen (with a 50-point grid this is the binding limit for Teff).
        n_grid : int
            Points per axis.
        limits : ((lo, hi), (lo, hi), (lo, hi)), optional
            Grid extent; default the 0.1–99.9 percentile range of θ widened by 3 bandwidths.
        chunk : int
            Stars per chunk of the kernel sum (memory bound).
        """
        theta = np.asarray(theta, float)
        observed = np.asarray(observed, bool)
        ok = np.all(np.isfinite(theta), axis=1)
        theta, observed = theta[ok], observed[ok]
        if theta.shape[0] == 0:
            raise ValueError("no finite θ to build the density map from")
        bw = np.asarray(bandwidth, float)
        if limits is None:
            lo, hi = np.percentile(theta, [0.1, 99.9], axis=0)
            limits = list(zip(lo - 3 * bw, hi + 3 * bw))
        axes = [np.linspace(a, b, n_grid) for a, b in limits]
        width = np.maximum(bw, [a[1] - a[0] for a in axes])
        kernels = [np.exp(-0.5 * ((a[:, None] - theta[None, :, k]) / width[k]) ** 2) for k, a in enumerate(axes)]
        density = np.zeros((observed.shape[1], n_grid, n_grid, n_grid))
        for s in range(0, theta.shape[0], chunk):
            kt, kg, kf = (k[:, s : s + chunk] for k in kernels)
            for j in range(observed.shape[1]):
                w = observed[s : s + chunk, j].astype(float)
                if w.any():
                    density[j] += np.einsum("tn,gn,fn->tgf", kt * w, kg, kf, optimize=True)
        peak = density.reshape(density.shape[0], -1).max(axis=1)
        density = density / np.where(peak > 0, peak, 1.0)[:, None, None, None]
        return cls(axes[0], axes[1], axes[2], density, tuple(labels))

    # -- evaluation -------------------------------------------------------------------------------------------
    def __call__(self, theta) -> jnp.ndarray:
        """Densities ``(…, n_labels)`` at physical θ ``(…, 3)``: trilinear interpolation, 0 outside the grid."""
        theta = jnp.asarray(theta, float)
        coords = []
        for k, a in enumerate((self.teff, self.logg, self.feh)):
            coords.append((theta[..., k] - a[0]) / (a[1] - a[0]))
        flat = [c.reshape(-1) for c in coords]
        values = jax.vmap(lambda grid: jax.scipy.ndimage.map_coordinates(grid, flat, order=1, cval=0.0))(
            jnp.asarray(self.density)
        )
        out = jnp.moveaxis(values, 0, -1).reshape(*theta.shape[:-1], len(self.labels))
        return jnp.where(jnp.all(jnp.isfinite(theta), axis=-1, keepdims=True), out, 0.0)

    def in_coverage(
        self,
        theta,
        band_observed=None,
        parallax_used=None,
        *,
        colour_threshold: float = COLOUR_THRESHOLD,
        absolute_threshold: float = ABSOLUTE_THRESHOLD,
    ) -> np.ndarray:
        """Per-star flag: θ lies where every used prediction is backed by training data (§6's thresholds).

        Parameters
        ----------
        theta : array (n, 3)
            Physical θ.
        band_observed : bool array (n, n_labels - 1), optional
            Which non-reference bands the star uses (default: all).
        parallax_used : bool array (n,), optional
            Whether the absolute magnitude is used (default: yes).

        Returns
        -------
        ndarray of bool (n,)
            ``density[parallax] ≥ absolute_threshold`` (where used) and ``density[band] ≥ colour_threshold``
            for every used band.
        """
        rho = np.asarray(self(theta))
        n = rho.shape[0]
        band_observed = np.ones((n, rho.shape[1] - 1), bool) if band_observed is None else band_observed
        parallax_used = np.ones(n, bool) if parallax_used is None else np.asarray(parallax_used, bool)
        ok_abs = ~parallax_used | (rho[:, 0] >= absolute_threshold)
        ok_col = np.all(~np.asarray(band_observed, bool) | (rho[:, 1:] >= colour_threshold), axis=1)
        return ok_abs & ok_col

    def arrays(self) -> dict:
        """Arrays for saving (the inverse of ``DensityMap(**arrays, labels=...)``)."""
        return {"teff": self.teff, "logg": self.logg, "feh": self.feh, "density": self.density}
