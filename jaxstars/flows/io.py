"""Saving and loading flows: a versioned JSON header plus named arrays in one ``.npz`` file, never pickle.

File layout (format version 1): an uncompressed zip (``numpy.savez``) holding

* ``__jaxstars__``: UTF-8 JSON bytes ``{"format": "jaxstars-flow", "version": 1, "bijector": <spec config>,
  "leaves": [<key path>, ...], "shapes": [...], "dtypes": [...], "members": <ensemble size or null>,
  "metadata": {...}}``;
* ``leaf_00000``, ``leaf_00001``, ...: the parameter arrays in ``jax.tree_util`` flattening order.

Loading checks every array against the shapes the spec implies, so a file that does not match its spec, a
truncated or bit-flipped file (zip CRC), a missing file or another format version each raise a clear error.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxstars.flows.base import from_config
from jaxstars.flows.flow import Flow

FORMAT_NAME = "jaxstars-flow"
FORMAT_VERSION = 1
_HEADER = "__jaxstars__"


class FlowFileError(ValueError):
    """A flow file that cannot be loaded: corrupt, incompatible version, or not matching its spec."""


class NotAFlowFileError(FlowFileError):
    """A readable ``.npz`` archive that was not written by :func:`save_flow` (no jaxstars header)."""


def _path_str(path) -> str:
    return jax.tree_util.keystr(path)


def save_flow(path: str | os.PathLike, flow: Flow, params, *, members: int | None = None, metadata=None) -> None:
    """Write ``flow`` and ``params`` to ``path`` (``.npz``).  ``members``: ensemble size of stacked params.

    The parameters are checked against the spec first (same checks as :func:`load_flow`), so a file that could not
    be loaded back is never written.
    """
    _check_arrays(flow, jax.tree_util.tree_flatten_with_path(params)[0], members, str(path), saving=True)
    leaves_with_path = jax.tree_util.tree_flatten_with_path(params)[0]
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, (_, leaf) in enumerate(leaves_with_path)}
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "bijector": flow.bijector.config(),
        "leaves": [_path_str(p) for p, _ in leaves_with_path],
        "shapes": [list(a.shape) for a in arrays.values()],
        "dtypes": [str(a.dtype) for a in arrays.values()],
        "members": members,
        "metadata": metadata or {},
    }
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    UnicodeDecodeError,
    NotImplementedError,  # zipfile: corrupt compression-method field
)


@contextlib.contextmanager
def _open_flow_file(path):
    """``np.load`` a flow file; read errors inside the block become :class:`FlowFileError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no flow file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            yield npz
    except FlowFileError:
        raise
    except _READ_ERRORS as err:
        raise FlowFileError(f"{path!r} is corrupt or truncated: {err}") from err


def _read_header(npz, path: str) -> dict:
    if _HEADER not in npz.files:
        raise NotAFlowFileError(f"{path!r} is not a jaxstars flow file (no {_HEADER} header)")
    return json.loads(bytes(npz[_HEADER]).decode("utf-8"))


def flow_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` stored by :func:`save_flow` in a flow file, without loading its arrays.

    Raises
    ------
    FileNotFoundError : no file at ``path``.
    NotAFlowFileError : a readable archive without a jaxstars header.
    FlowFileError : the file is corrupt or truncated.
    """
    path = os.fspath(path)
    with _open_flow_file(path) as npz:
        header = _read_header(npz, path)
    metadata = header.get("metadata") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def load_flow(path: str | os.PathLike):
    """Read a flow file written by :func:`save_flow`; returns ``(flow, params, metadata)``.

    Raises
    ------
    FileNotFoundError : no file at ``path``.
    FlowFileError : the file is corrupt, of another format version, or its arrays do not match its spec.
    """
    path = os.fspath(path)
    with _open_flow_file(path) as npz:
        header = _read_header(npz, path)
        _check_header(header, path)
        arrays = []
        for i in range(len(header["leaves"])):
            name = f"leaf_{i:05d}"
            if name not in npz.files:
                raise FlowFileError(f"{path!r}: array {name} ({header['leaves'][i]}) is missing")
            arrays.append(npz[name])

    try:
        flow = Flow(from_config(header["bijector"]))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise FlowFileError(f"{path!r}: cannot rebuild the flow spec: {err!r}") from err
    saved_leaves = [(saved, array) for saved, array in zip(header["leaves"], arrays)]
    treedef = _check_arrays(flow, saved_leaves, header.get("members"), path, saving=False)
    params = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in arrays])
    return flow, params, header.get("metadata", {})


def _check_arrays(flow: Flow, leaves, members, path: str, saving: bool):
    """Check named parameter arrays against the shapes the spec implies; return the parameter treedef.

    ``leaves`` is a list of ``(name, array)``; names are key-path strings or ``jax`` key paths.
    """
    try:
        template = jax.eval_shape(flow.init, jax.random.PRNGKey(0))
    except (TypeError, ValueError) as err:
        raise FlowFileError(f"{path!r}: the flow spec is invalid: {err!r}") from err
    template_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    what = "the parameters to save have" if saving else "the file has"
    if len(template_leaves) != len(leaves):
        raise FlowFileError(
            f"{path!r}: the spec needs {len(template_leaves)} parameter arrays, {what} {len(leaves)}"
        )
    lead = () if members is None else (members,)
    for (key_path, expected), (saved_name, array) in zip(template_leaves, leaves):
        name = _path_str(key_path)
        saved_name = saved_name if isinstance(saved_name, str) else _path_str(saved_name)
        shape = tuple(np.shape(array))
        if name != saved_name or shape != lead + tuple(expected.shape):
            raise FlowFileError(
                f"{path!r}: parameter {saved_name} has shape {shape}, the spec expects {name} with shape "
                f"{lead + tuple(expected.shape)}"
            )
        if not np.issubdtype(np.asarray(array).dtype, np.floating):
            raise FlowFileError(f"{path!r}: parameter {saved_name} has dtype {np.asarray(array).dtype}, not float")
        if not np.all(np.isfinite(np.asarray(array))):
            raise FlowFileError(f"{path!r}: parameter {saved_name} contains NaN or inf values")
    return treedef


def _check_header(header, path: str) -> None:
    if not isinstance(header, dict) or not isinstance(header.get("leaves"), list):
        raise FlowFileError(f"{path!r} has a malformed header")
    if header.get("format") != FORMAT_NAME:
        raise FlowFileError(f"{path!r} is not a jaxstars flow file (format {header.get('format')!r})")
    version = header.get("version")
    if version != FORMAT_VERSION:
        raise FlowFileError(
            f"{path!r} has flow-file format version {version}; this jaxstars reads version {FORMAT_VERSION}"
        )
