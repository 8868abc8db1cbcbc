"""A trained stellar model: network + parameters + training-density map + provenance, with save/load.

Files (format ``jaxstars.stellar.v1``): ``DIR/stellar.npz``, an uncompressed ``numpy.savez`` archive holding a
UTF-8 JSON header ``__jaxstars__`` (format, version, network config, density labels, info) and the arrays
(parameter leaves in ``jax.tree_util`` order, density grid).  No pickle; a missing, truncated, bit-flipped or
foreign file raises :class:`StellarModelError` (a ``ValueError``).

:func:`load_stellar_model` also accepts ``"released"`` (the released network from the real-data folder) or a path to
a Keras ``.h5`` file of the release, which it ports with :func:`released_model`.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .density import DensityMap
from .network import StellarNetwork
from .release import (
    RELEASE_BANDS,
    ReleaseFileError,
    read_density_grid,
    read_keras_network,
    read_theta_normalisation,
)

__all__ = [
    "FORMAT",
    "MODEL_FILE",
    "StellarModel",
    "StellarModelError",
    "load_stellar_model",
    "released_model",
]

FORMAT = "jaxstars.stellar.v1"
MODEL_FILE = "stellar.npz"
_HEADER = "__jaxstars__"
_RELEASE_DIR = "green2020"


class StellarModelError(ValueError):
    """A stellar-model file that cannot be loaded (corrupt, foreign, incompatible version or shapes)."""


@dataclass(frozen=True, eq=False)
class StellarModel:
    """Network architecture, parameters, and (optionally) the training-density map.

    Attributes
    ----------
    network : StellarNetwork
    params : dict
        Parameter pytree of ``network``.
    density : DensityMap or None
        Training-data density (§6) for the validity flag.
    info : dict
        JSON-serialisable provenance (training settings, losses, source files).
    """

    network: StellarNetwork
    params: dict
    density: DensityMap | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.network.check_params(self.params)
        object.__setattr__(self, "params", jax.tree_util.tree_map(jnp.asarray, self.params))

    @property
    def bands(self) -> tuple[str, ...]:
        return self.network.bands

    # -- convenient evaluation in physical units ---------------------------------------------------------------
    def absolute_magnitudes(self, theta) -> jnp.ndarray:
        """``M(θ)`` for physical θ ``(…, 3)``."""
        return self.network.absolute_magnitudes(self.params, self.network.normalise(theta))

    def extinction_vector(self, theta) -> jnp.ndarray:
        """``R(θ)`` for physical θ ``(…, 3)``."""
        return self.network.extinction_vector(self.params, self.network.normalise(theta))

    def magnitudes(self, theta, mu=0.0, E=0.0) -> jnp.ndarray:
        """Eq. 2: ``M(θ) + μ + E R(θ)`` for physical θ."""
        return self.network.magnitudes(self.params, self.network.normalise(theta), mu, E)

    def colour_output(self, theta, E=0.0) -> jnp.ndarray:
        """``B (M(θ) + E R(θ))`` — the released Keras network's output before ``Lᵀ`` (Fig. 3)."""
        return self.network.colour_output(self.params, self.network.normalise(theta), E)

    def in_coverage(self, theta, band_observed=None, parallax_used=None, **kw) -> np.ndarray:
        """Per-star validity flag (§6); all ``True`` when the model has no density map."""
        if self.density is None:
            return np.ones(np.shape(theta)[0], bool)
        return self.density.in_coverage(theta, band_observed, parallax_used, **kw)

    # -- I/O --------------------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/stellar.npz`` (creating the directory); returns the file path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        leaves_with_path = jax.tree_util.tree_flatten_with_path(self.params)[0]
        arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, (_, leaf) in enumerate(leaves_with_path)}
        header = {
            "format": FORMAT,
            "version": 1,
            "network": self.network.config(),
            "leaves": [jax.tree_util.keystr(p) for p, _ in leaves_with_path],
            "density_labels": list(self.density.labels) if self.density is not None else None,
            "info": _jsonable(self.info),
        }
        if self.density is not None:
            arrays.update({f"density_{k}": v for k, v in self.density.arrays().items()})
        arrays[_HEADER] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        path = directory / MODEL_FILE
        tmp = directory / (MODEL_FILE + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> StellarModel:
        """Read a model saved by :meth:`save` (``path``: the directory or the ``.npz`` file)."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.exists():
            raise FileNotFoundError(f"stellar model {path} not found")
        try:
            with np.load(path, allow_pickle=False) as npz:
                if _HEADER not in npz.files:
                    raise StellarModelError(f"{path} is not a jaxstars stellar model (no header)")
                header = json.loads(bytes(npz[_HEADER]).decode("utf-8"))
                arrays = {k: np.asarray(npz[k]) for k in npz.files if k != _HEADER}
        except StellarModelError:
            raise
        except (
            OSError,
            ValueError,
            KeyError,
            EOFError,
            zipfile.BadZipFile,
            zlib.error,
            UnicodeDecodeError,
        ) as err:
            raise StellarModelError(f"{path} is not a readable stellar model file ({type(err).__name__}: {err})")
        if header.get("format") != FORMAT or header.get("version") != 1:
            raise StellarModelError(
                f"{path} has format {header.get('format')!r} version {header.get('version')!r}; "
                f"this jaxstars reads {FORMAT!r} version 1"
            )
        try:
            network = StellarNetwork(**header["network"])
            template = network.init(jax.random.PRNGKey(0))
            treedef = jax.tree_util.tree_structure(template)
            leaves = [arrays[f"leaf_{i:05d}"] for i in range(treedef.num_leaves)]
            params = jax.tree_util.tree_unflatten(treedef, leaves)
            density = None
            if header.get("density_labels"):
                density = DensityMap(
                    **{k: arrays[f"density_{k}"] for k in ("teff", "logg", "feh", "density")},
                    labels=header["density_labels"],
                )
            return cls(network, params, density, header.get("info") or {})
        except (KeyError, TypeError, ValueError) as err:
            raise StellarModelError(f"{path}: inconsistent stellar model file ({err})") from err


def _jsonable(value):
    from jaxstars.cli_support import jsonable

    return jsonable(value)


def released_model(
    network_file: str | os.PathLike | None = None,
    normalisation_file: str | os.PathLike | None = None,
    density_file: str | os.PathLike | None = None,
) -> StellarModel:
    """Port the released Keras network (Green et al. 2021) to a :class:`StellarModel` (h5py only).

    Parameters
    ----------
    network_file : path-like, optional
        ``green2020_nn_model.h5`` (default: the real-data folder's ``green2020/`` copy).
    normalisation_file : path-like, optional
        ``green2020_theta_normalization.json``; default: the file beside ``network_file``.
    density_file : path-like, optional
        ``green2020_input_density.h5``; default: beside ``network_file`` if present (else no density map).

    Returns
    -------
    StellarModel
        Bands :data:`~jaxstars.models.stellar.release.RELEASE_BANDS`; ``B M`` from the ``BM`` layer, ``R`` from
        the ``R`` layer; the fixed ``BA`` layer is checked to be ``Bᵀ`` (Eq. 5).
    """
    if network_file is None:
        from jaxstars.data import data_file

        network_file = data_file(_RELEASE_DIR, "green2020_nn_model.h5")
    network_file = Path(network_file)
    folder = network_file.parent
    normalisation_file = Path(normalisation_file or folder / "green2020_theta_normalization.json")
    weights = read_keras_network(network_file)
    med, std = read_theta_normalisation(normalisation_file)
    n = weights["out"][0].shape[1]
    if n != len(RELEASE_BANDS):
        raise ReleaseFileError(f"{network_file}: {n} outputs, the release has {len(RELEASE_BANDS)} bands")
    network = StellarNetwork(RELEASE_BANDS, tuple(med), tuple(std), tuple(weights["units"]), weights["activation"])
    if not np.allclose(weights["BA"], network.B.T):
        raise ReleaseFileError(f"{network_file}: the BA layer is not the colour transform Bᵀ of Eq. 5")
    params = {
        "hidden": [{"w": w, "b": b} for w, b in weights["hidden"]],
        "out": {"w": weights["out"][0], "b": weights["out"][1]},
        "R": {"w": weights["R"][0], "b": weights["R"][1]},
    }
    density = None
    density_file = Path(density_file) if density_file is not None else folder / "green2020_input_density.h5"
    if density_file.exists():
        grid = read_density_grid(density_file)
        labels = ["parallax", *RELEASE_BANDS[1:]]
        if len(grid["labels"]) != len(labels):
            raise ReleaseFileError(f"{density_file}: {len(grid['labels'])} density labels, expected {len(labels)}")
        density = DensityMap(grid["teff"], grid["logg"], grid["feh"], grid["density"], labels)
    info = {"source": "Green et al. (2021) released network", "network_file": str(network_file)}
    return StellarModel(network, params, density, info)


def load_stellar_model(spec: str | os.PathLike) -> StellarModel:
    """``"released"``, a release Keras ``.h5`` file, or a directory / ``stellar.npz`` written by :meth:`save`."""
    if str(spec) == "released":
        return released_model()
    path = Path(spec)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return released_model(path)
    return StellarModel.load(path)
