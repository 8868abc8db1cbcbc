"""The vector a colour–magnitude flow models: one absolute magnitude followed by colours (Cranmer et al. §3).

Cranmer et al. model ``(g, bp − rp, bp − g)``: the dereddened absolute G magnitude and two dereddened Gaia
colours. :class:`CMDFeatures` generalises this to any band set as a fixed linear map ``f = Λ m`` (row 0 the
reference magnitude, every other row a colour), with the extinction of each feature per unit reddening, so that
for a star at distance modulus μ with reddening E::

    f = Λ m_obs − μ e₀ − E k,     k = Λ A,   e₀ = (1, 0, …, 0)

Extra bands are appended as colours ``G − X`` after the Gaia block; a star missing some of them keeps its leading
observed features and the rest are marginalised exactly by a triangular flow (Cranmer et al. §5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jaxstars.astro.extinction import CRANMER_COEFFICIENTS
from jaxstars.astro.schema import BANDS, mag_column, mag_err_column

CRANMER_BAND_EXTINCTION: dict[str, float] = {
    "G": CRANMER_COEFFICIENTS["G_DR2"],
    "BP": CRANMER_COEFFICIENTS["G_DR2"] + CRANMER_COEFFICIENTS["BP_DR2-G_DR2"],
    "RP": CRANMER_COEFFICIENTS["G_DR2"]
    + CRANMER_COEFFICIENTS["BP_DR2-G_DR2"]
    - CRANMER_COEFFICIENTS["BP_DR2-RP_DR2"],
}
"""Cranmer et al. §3.2's A_G = 2.71, E(BP−RP) = 0.85, E(BP−G) = 0.39 per unit E(g−r), as band extinctions
(A_BP = 3.10, A_RP = 2.25): the same three numbers, one per band."""


@dataclass(frozen=True)
class CMDFeatures:
    """A fixed linear map from magnitudes to (absolute magnitude, colours) and each feature's extinction.

    Attributes
    ----------
    bands : canonical band names (schema names: ``G``, ``BP``, ``RP``, ``J``, …) of the magnitude vector.
    matrix : ``(n_features, n_bands)`` rows of Λ; row 0 picks the reference magnitude.
    names : feature names, e.g. ``("M_G", "BP-RP", "BP-G")``.
    extinction : per band, extinction per unit ``reddening`` (A_band / E).
    reddening : what E is (``"E(g-r)"`` for Cranmer et al.'s Bayestar-based coefficients).
    n_required : leading features every star must have (the Gaia block); later ones may be missing.
    """

    bands: tuple[str, ...]
    matrix: tuple[tuple[float, ...], ...]
    names: tuple[str, ...]
    extinction: tuple[float, ...]
    reddening: str = "E(g-r)"
    n_required: int = 3

    def __post_init__(self):
        m = self.matrix_array
        if m.shape != (len(self.names), len(self.bands)):
            raise ValueError(
                f"matrix of shape {m.shape} for {len(self.names)} features and {len(self.bands)} bands"
            )
        if len(self.extinction) != len(self.bands):
            raise ValueError("need one extinction coefficient per band")
        for band in self.bands:
            if band not in BANDS:
                raise ValueError(f"unknown band {band!r}; schema bands: {BANDS}")
        if not 1 <= self.n_required <= len(self.names):
            raise ValueError("n_required must be between 1 and the number of features")
        if m[0].sum() != 1.0 or np.count_nonzero(m[0]) != 1:
            raise ValueError("row 0 of the feature matrix must pick one magnitude (the absolute magnitude)")
        if not np.allclose(m[1:].sum(axis=1), 0.0):
            raise ValueError("rows after the first must be colours (coefficients summing to zero)")

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def matrix_array(self) -> np.ndarray:
        return np.asarray(self.matrix, dtype=np.float64)

    @property
    def feature_extinction(self) -> np.ndarray:
        """``k = Λ A``: each feature's extinction per unit reddening (Cranmer: 2.71, 0.85, 0.39)."""
        return self.matrix_array @ np.asarray(self.extinction, dtype=np.float64)

    def to_config(self) -> dict:
        return {
            "bands": list(self.bands),
            "matrix": [list(r) for r in self.matrix],
            "names": list(self.names),
            "extinction": list(self.extinction),
            "reddening": self.reddening,
            "n_required": self.n_required,
        }

    @classmethod
    def from_config(cls, config: Mapping) -> CMDFeatures:
        return cls(
            bands=tuple(config["bands"]),
            matrix=tuple(tuple(float(v) for v in r) for r in config["matrix"]),
            names=tuple(config["names"]),
            extinction=tuple(float(v) for v in config["extinction"]),
            reddening=str(config.get("reddening", "E(g-r)")),
            n_required=int(config.get("n_required", 3)),
        )

    # -- from a catalogue -----------------------------------------------------------------------------------------
    def observed(self, table) -> tuple[np.ndarray, np.ndarray]:
        """Observed features ``Λ m`` and the number of leading observable features per row.

        A feature is observable when every band it uses has a finite magnitude and a finite positive uncertainty.
        Unobservable entries are set to 0 (a harmless placeholder: only the first ``n_observed`` are used).
        Missing magnitude columns count as unobserved.
        """
        n = len(table)
        mags = np.zeros((n, len(self.bands)))
        ok = np.zeros((n, len(self.bands)), dtype=bool)
        colnames = set(table.colnames) if hasattr(table, "colnames") else set(table.keys())
        for j, band in enumerate(self.bands):
            if mag_column(band) not in colnames:
                continue
            m = np.asarray(table[mag_column(band)], dtype=np.float64)
            good = np.isfinite(m)
            if mag_err_column(band) in colnames:
                e = np.asarray(table[mag_err_column(band)], dtype=np.float64)
                good &= np.isfinite(e) & (e > 0)
            mags[:, j] = np.where(good, m, 0.0)
            ok[:, j] = good
        matrix = self.matrix_array
        uses = matrix != 0
        feature_ok = np.all(ok[:, None, :] | ~uses[None], axis=-1)
        n_observed = np.cumprod(feature_ok, axis=1).sum(axis=1).astype(np.int32)
        features = mags @ matrix.T
        features = np.where(np.arange(self.dim)[None] < n_observed[:, None], features, 0.0)
        return features, n_observed


def gaia_cmd_features(
    extra_bands: Sequence[str] = (), extinction: Mapping[str, float] | None = None, reddening: str = "E(g-r)"
) -> CMDFeatures:
    """Cranmer et al.'s ``(M_G, BP−RP, BP−G)``, optionally followed by ``G − X`` for each extra band ``X``.

    ``extinction`` maps every band to A_band / E; default: Cranmer et al.'s Gaia coefficients
    (:data:`CRANMER_BAND_EXTINCTION`), which is enough only when there are no extra bands.
    """
    bands = ("G", "BP", "RP", *extra_bands)
    if len(set(bands)) != len(bands):
        raise ValueError(f"duplicate bands in {bands}")
    coeffs = dict(CRANMER_BAND_EXTINCTION if extinction is None else extinction)
    missing = [b for b in bands if b not in coeffs]
    if missing:
        raise ValueError(f"no extinction coefficient for band(s) {missing}: pass extinction={{band: A/E, ...}}")
    n = len(bands)
    rows = [np.eye(n)[0], np.eye(n)[1] - np.eye(n)[2], np.eye(n)[1] - np.eye(n)[0]]
    names = ["M_G", "BP-RP", "BP-G"]
    for j, band in enumerate(extra_bands, start=3):
        rows.append(np.eye(n)[0] - np.eye(n)[j])
        names.append(f"G-{band}")
    return CMDFeatures(
        bands=bands,
        matrix=tuple(tuple(float(v) for v in r) for r in rows),
        names=tuple(names),
        extinction=tuple(float(coeffs[b]) for b in bands),
        reddening=reddening,
        n_required=3,
    )
