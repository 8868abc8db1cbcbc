"""Readers for the files of the Green et al. release (Zenodo 10.5281/zenodo.3902382), with ``h5py`` only.

* :func:`read_keras_network` — the trained Keras network ``green2020_nn_model.h5`` (no TensorFlow): the layer
  weights of Fig. 3 and the architecture from the file's ``model_config`` attribute;
* :func:`read_theta_normalisation` — ``green2020_theta_normalization.json`` (median / std of θ);
* :func:`read_density_grid` — ``green2020_input_density.h5``: the training-data density per band on a θ grid (§6);
* :func:`read_release_catalog` — a star table in the release's HDF5 format (``green2020_sample.h5``: a structured
  dataset ``data`` with ``atm_param``, ``mag``, ``parallax``, ``r`` … columns).

Every reader raises :class:`ReleaseFileError` (a ``ValueError``) with the file name for a missing, truncated or
differently-structured file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jaxstars.astro.bands import GREEN_BANDS

__all__ = [
    "RELEASE_BANDS",
    "ReleaseFileError",
    "read_density_grid",
    "read_keras_network",
    "read_release_catalog",
    "read_theta_normalisation",
]

#: The 13 bands of the release in its order (Gaia DR2 G BP RP, PS1 grizy, 2MASS J H Ks, unWISE W1 W2).
RELEASE_BANDS: tuple[str, ...] = GREEN_BANDS

_LAYER_HIDDEN_PREFIX = "stellar_model_hidden_"


class ReleaseFileError(ValueError):
    """A release file that is missing, corrupt or not in the expected format."""


def _open_h5(path):
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ReleaseFileError(f"{path} is not a readable HDF5 file ({err})") from err


def read_keras_network(path: str | os.PathLike) -> dict:
    """Weights and architecture of the released Keras network (Fig. 3), read with h5py.

    Parameters
    ----------
    path : path-like
        ``green2020_nn_model.h5`` (a Keras 2 ``model.save`` file).

    Returns
    -------
    dict
        ``{"hidden": [(kernel, bias), ...], "out": (kernel, bias), "R": (kernel, bias), "BA": kernel,
        "activation": str, "units": [int, ...]}``; kernels are ``(fan_in, fan_out)`` float32 arrays.

    Raises
    ------
    FileNotFoundError, ReleaseFileError
    """
    with _open_h5(path) as f:
        try:
            config = f.attrs["model_config"]
            config = json.loads(config.decode() if isinstance(config, bytes) else config)
            layers = {layer["name"]: layer for layer in config["config"]["layers"]}
            weights = f["model_weights"]

            def read(name, bias=True):
                group = weights[name][name]
                kernel = np.asarray(group["kernel:0"], dtype=np.float32)
                if not bias:
                    return kernel
                return kernel, np.asarray(group["bias:0"], dtype=np.float32)

            hidden_names = sorted(
                (n for n in layers if n.startswith(_LAYER_HIDDEN_PREFIX)),
                key=lambda n: int(n[len(_LAYER_HIDDEN_PREFIX) :]),
            )
            if not hidden_names:
                raise KeyError("no stellar_model_hidden_* layers")
            activations = {layers[n]["config"]["activation"] for n in hidden_names}
            if len(activations) != 1:
                raise KeyError(f"mixed hidden activations {activations}")
            if layers["R"]["config"]["activation"] != "exponential":
                raise KeyError("the R layer is not exponential")
            out = {
                "hidden": [read(n) for n in hidden_names],
                "out": read("BM"),
                "R": read("R"),
                "BA": read("BA", bias=False),
                "activation": activations.pop(),
                "units": [int(layers[n]["config"]["units"]) for n in hidden_names],
            }
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            raise ReleaseFileError(
                f"{path} is not a Green et al. Keras stellar-model file (missing or malformed {err})"
            ) from err
    n = out["out"][0].shape[1]
    if out["R"][0].shape != (3, n) or out["BA"].shape != (n, n) or out["hidden"][0][0].shape[0] != 3:
        raise ReleaseFileError(f"{path}: inconsistent layer shapes")
    for kernel in [out["BA"], *(w for pair in [*out["hidden"], out["out"], out["R"]] for w in pair)]:
        if not np.all(np.isfinite(kernel)):
            raise ReleaseFileError(f"{path}: non-finite weights")
    return out


def read_theta_normalisation(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(median, std)`` of θ = (Teff, logg, [Fe/H]) from ``green2020_theta_normalization.json``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    try:
        data = json.loads(path.read_text())
        med = np.asarray(data["theta_med"], float)
        std = np.asarray(data["theta_std"], float)
    except (KeyError, TypeError, ValueError) as err:
        raise ReleaseFileError(f"{path} is not a θ-normalisation file ({err})") from err
    if med.shape != (3,) or std.shape != (3,) or np.any(std <= 0) or not np.all(np.isfinite(med)):
        raise ReleaseFileError(f"{path}: theta_med/theta_std must be 3 finite values (std > 0)")
    return med, std


def read_density_grid(path: str | os.PathLike) -> dict:
    """The release's training-density map (§6, Fig. 13): ``rho_stars`` ``(13, n_teff, n_logg, n_feh)``.

    Returns
    -------
    dict
        ``{"density": array, "teff": axis, "logg": axis, "feh": axis, "labels": [str, ...]}``; ``labels[0]`` is
        ``"parallax"`` (density of stars with usable parallaxes, for the absolute magnitude), the others band
        names in the release's spelling.
    """
    with _open_h5(path) as f:
        try:
            ds = f["rho_stars"]
            density = np.asarray(ds, dtype=np.float32)
            axes = {k: np.asarray(ds.attrs[k], float) for k in ("teff", "logg", "feh")}
            labels = [b.decode() if isinstance(b, bytes) else str(b) for b in ds.attrs["bands"]]
            order = [b.decode() if isinstance(b, bytes) else str(b) for b in ds.attrs["axis_order"]]
        except (KeyError, TypeError, ValueError) as err:
            raise ReleaseFileError(f"{path} is not a release density file ({err})") from err
    if order != ["band", "teff", "logg", "feh"] or density.shape != (
        len(labels),
        axes["teff"].size,
        axes["logg"].size,
        axes["feh"].size,
    ):
        raise ReleaseFileError(f"{path}: unexpected density layout {order} {density.shape}")
    return {"density": density, **axes, "labels": labels}


_CATALOG_FIELDS = ("atm_param", "atm_param_cov", "mag", "mag_err", "parallax", "parallax_err", "r", "r_err")


def read_release_catalog(path: str | os.PathLike) -> dict:
    """A star table in the release's HDF5 format as plain arrays.

    Parameters
    ----------
    path : path-like
        HDF5 file with a structured dataset ``data`` (fields ``atm_param`` (3,), ``atm_param_cov`` (3, 3),
        ``mag`` / ``mag_err`` (13,), ``parallax``, ``parallax_err``, ``r``, ``r_err``; optional ``atm_source``,
        ``r_source``) and optional row-aligned datasets ``r_fit`` / ``r_var``.

    Returns
    -------
    dict
        ``theta``, ``theta_cov``, ``mag``, ``mag_err``, ``parallax``, ``parallax_err``, ``E``, ``E_err`` (float64
        arrays), ``bands`` (:data:`RELEASE_BANDS`), and when present ``atm_source``, ``r_source`` (str arrays),
        ``r_fit``, ``r_var``.
    """
    with _open_h5(path) as f:
        if "data" not in f:
            raise ReleaseFileError(f"{path} has no 'data' dataset (not in the release's catalog format)")
        data = f["data"]
        names = data.dtype.names or ()
        missing = [k for k in _CATALOG_FIELDS if k not in names]
        if missing:
            raise ReleaseFileError(f"{path}: the 'data' table lacks the fields {missing}")
        try:
            table = data[...]
            extra = {k: np.asarray(f[k][...], float) for k in ("r_fit", "r_var") if k in f}
        except OSError as err:
            raise ReleaseFileError(f"{path}: cannot read the table ({err})") from err
    n = len(table)
    out = {
        "theta": np.asarray(table["atm_param"], float),
        "theta_cov": np.asarray(table["atm_param_cov"], float),
        "mag": np.asarray(table["mag"], float),
        "mag_err": np.asarray(table["mag_err"], float),
        "parallax": np.asarray(table["parallax"], float),
        "parallax_err": np.asarray(table["parallax_err"], float),
        "E": np.asarray(table["r"], float),
        "E_err": np.asarray(table["r_err"], float),
        "bands": RELEASE_BANDS,
    }
    if out["mag"].shape != (n, len(RELEASE_BANDS)):
        raise ReleaseFileError(f"{path}: 'mag' must have {len(RELEASE_BANDS)} columns, got {out['mag'].shape}")
    for key in ("atm_source", "r_source"):
        if key in names:
            out[key] = np.char.decode(np.asarray(table[key]).astype("S"), "ascii")
    for key, value in extra.items():
        if value.shape == (n,):
            out[key] = value
    return out
