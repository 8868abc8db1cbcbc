"""The spectrophotometric-parallax model of Hogg, Eilers & Rix: forward function, objective, NumPyro model, I/O.

Model (Eqs. 1, 4): the log of a star's parallax is linear in its features, ``ϖ_sp = exp(θ · x)``.
Data (Eq. 2 and §4): the Gaia parallax plus a zero-point offset, ``ϖ_a = ϖ_Gaia + ϖ₀``, is ``exp(θ · x)`` plus
Gaussian noise of width σ_Gaia. Every parallax is used as published — negative and low-S/N ones included; no
cut on ϖ or ϖ/σ ever enters a likelihood here.
Objective (Eq. 3): ``½ χ²(θ) + λ ‖P θ‖₁`` with P selecting the spectral coefficients.
Uncertainty (Eq. 5): ``σ_sp² = ϖ_sp² θᵀ C θ`` with C diagonal (the feature variances).

:func:`log_parallax` is THE forward function: the optimiser (:mod:`.optimize`), the predictions, the NumPyro
model (:func:`spectrophot_numpyro_model`) and the numpy baseline of the benchmark all evaluate ``θ · x`` through it
(the baseline re-implements it in numpy on purpose, as an independent reference).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jax.numpy as jnp
import numpy as np

__all__ = [
    "FORMAT",
    "MODEL_FILE",
    "SpectrophotModel",
    "SpectrophotModelError",
    "chi2",
    "log_parallax",
    "objective",
    "prediction_uncertainty",
    "spectrophot_numpyro_model",
]

FORMAT = "jaxstars.spectrophot.v1"
MODEL_FILE = "spectrophot.npz"


class SpectrophotModelError(ValueError):
    """A model file that is missing, corrupt, of another format or inconsistent with the data."""


def log_parallax(theta, X):
    """``ln ϖ_sp = X θ`` (Eqs. 1, 4): the forward function shared by fit, prediction and the NumPyro model."""
    return X @ theta


def chi2(theta, X, parallax, parallax_error, zero_point=0.0):
    """χ²(θ) of Eq. 2 against ``ϖ_a = parallax + zero_point`` (no cut, negative parallaxes included)."""
    resid = (parallax + zero_point - jnp.exp(log_parallax(theta, X))) / parallax_error
    return jnp.sum(resid * resid)


def objective(theta, X, parallax, parallax_error, penalised, lam, zero_point=0.0):
    """The regularised objective of Eq. 3: ``½ χ²(θ) + λ Σ_{j ∈ P} |θ_j|``."""
    l1 = jnp.sum(jnp.where(penalised, jnp.abs(theta), 0.0))
    return 0.5 * chi2(theta, X, parallax, parallax_error, zero_point) + lam * l1


def prediction_uncertainty(theta, X, variance):
    """``(ϖ_sp, σ_sp)`` with ``σ_sp² = ϖ_sp² Σ_j θ_j² C_jj`` (Eq. 5, diagonal C)."""
    plx = jnp.exp(log_parallax(theta, X))
    return plx, plx * jnp.sqrt(variance @ (theta * theta))


def spectrophot_numpyro_model(
    X, parallax=None, parallax_error=None, *, penalised, lam, zero_point=0.0, scale=10.0
):
    """NumPyro version of Eqs. 1–3: Gaussian parallax likelihood, Laplace prior on the spectral coefficients.

    ``θ_j ~ Laplace(0, 1/λ)`` for penalised j (its negative log density is ``λ|θ_j|`` + const, so the MAP of this
    model is the minimum of Eq. 3), ``θ_j ~ Normal(0, scale)`` for the others (a weak proper prior instead of the
    paper's flat one), and ``ϖ_Gaia ~ Normal(exp(θ · x) − ϖ₀, σ_Gaia)``. Runs with NUTS or SVI; ``parallax=None``
    draws predictive parallaxes. Works best on standardised features (see :class:`.optimize.Standardiser`).
    """
    import numpyro
    import numpyro.distributions as dist

    penalised = jnp.asarray(penalised, dtype=bool)
    n_pen = int(np.sum(np.asarray(penalised)))
    d = int(X.shape[1])
    theta_free = numpyro.sample("theta_free", dist.Normal(0.0, scale).expand([d - n_pen]).to_event(1))
    theta_pen = numpyro.sample("theta_penalised", dist.Laplace(0.0, 1.0 / lam).expand([n_pen]).to_event(1))
    idx_free = np.flatnonzero(~np.asarray(penalised))
    idx_pen = np.flatnonzero(np.asarray(penalised))
    theta = jnp.zeros(d, dtype=theta_free.dtype).at[idx_free].set(theta_free).at[idx_pen].set(theta_pen)
    theta = numpyro.deterministic("theta", theta)
    mean = jnp.exp(log_parallax(theta, X)) - zero_point
    with numpyro.plate("stars", X.shape[0]):
        numpyro.sample("parallax", dist.Normal(mean, parallax_error), obs=parallax)


@dataclass
class SpectrophotModel:
    """A trained two-fold spectrophotometric-parallax model: one θ per fold, in raw feature units.

    Attributes
    ----------
    thetas : dict of str to numpy.ndarray
        ``{"A": θ_A, "B": θ_B}`` (or ``{"all": θ}``); θ_A is trained on fold A and predicts fold B.
    feature_names : tuple of str
        Names of the features (Eq. 11 order), see :class:`.features.FeatureMatrix`.
    penalised : numpy.ndarray of bool
        The projection P of Eq. 3.
    lam, zero_point : float
        Chosen λ and ϖ₀ [mas].
    config : dict
        Everything else needed to rebuild the features (bands, labels, spectrum column) and provenance.
    """

    thetas: dict
    feature_names: tuple
    penalised: np.ndarray
    lam: float
    zero_point: float
    config: dict = field(default_factory=dict)

    def theta_for(self, fold_label: str) -> np.ndarray:
        """The θ that predicts a star of fold ``fold_label`` (trained on the *other* fold)."""
        if "all" in self.thetas:
            return self.thetas["all"]
        other = {"A": "B", "B": "A"}.get(fold_label)
        if other is None or other not in self.thetas:
            raise SpectrophotModelError(f"no model for fold {fold_label!r}")
        return self.thetas[other]

    def sparsity(self) -> dict:
        """Fraction of penalised coefficients that are exactly zero, per fold."""
        out = {}
        for name, theta in self.thetas.items():
            pen = np.asarray(theta)[self.penalised]
            out[name] = float(np.mean(pen == 0.0)) if pen.size else float("nan")
        return out

    def save(self, path: str | Path) -> Path:
        """Write ``spectrophot.npz``: arrays plus a JSON header (format, version); no pickle."""
        path = Path(path)
        if path.suffix != ".npz":
            path.mkdir(parents=True, exist_ok=True)
            path = path / MODEL_FILE
        header = {
            "format": FORMAT,
            "folds": sorted(self.thetas),
            "feature_names": list(self.feature_names),
            "lam": float(self.lam),
            "zero_point": float(self.zero_point),
            "config": self.config,
        }
        arrays = {f"theta_{k}": np.asarray(v, dtype=np.float64) for k, v in self.thetas.items()}
        np.savez(path, header=np.array(json.dumps(header)), penalised=np.asarray(self.penalised), **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SpectrophotModel:
        """Read a file written by :meth:`save` (a folder or the ``.npz``); clear errors for bad files."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.exists():
            raise FileNotFoundError(f"spectrophot model {path} not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                penalised = np.asarray(data["penalised"], dtype=bool)
                thetas = {k: np.asarray(data[f"theta_{k}"]) for k in header["folds"]}
        except Exception as err:  # zip, key, JSON and value errors all mean the same thing here
            raise SpectrophotModelError(f"{path} is not a readable spectrophot model file ({err})") from err
        if header.get("format") != FORMAT:
            raise SpectrophotModelError(f"{path} has format {header.get('format')!r}, expected {FORMAT!r}")
        d = len(header["feature_names"])
        if penalised.shape != (d,) or any(t.shape != (d,) for t in thetas.values()):
            raise SpectrophotModelError(f"{path}: array shapes do not match its {d} feature names")
        return cls(thetas, tuple(header["feature_names"]), penalised, header["lam"], header["zero_point"],
                   header.get("config", {}))  # fmt: skip
