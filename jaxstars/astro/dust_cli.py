"""``jaxstars dust --map NAME INPUT -o OUTPUT``: add reddening (mean, std) columns from any registered dust map.

The input is any table astropy reads (FITS, CSV/ECSV, Parquet, HDF5, VOTable) with Galactic ``l``/``b`` or ICRS
``ra``/``dec`` columns (degrees) and, optionally, a distance column (pc, or any length unit the column carries).
Added columns, for a map called NAME:

* ``ebv_NAME`` — mean reddening, in the map's units (``DustMap.units``, also written to the column description);
* ``ebv_NAME_std`` — its standard deviation;
* ``ebv_NAME_flag`` — True where no value could be computed (non-finite position or distance, outside the map);
  those rows hold NaN, none is dropped;
* ``ebv_NAME_<flag>`` — any map-specific quality flag (e.g. Bayestar's ``converged``, ``reliable_dist``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jaxstars.astro.catalog_io import _format_of, read_table, write_table

__all__ = ["add_dust_arguments", "dust_command", "run_dust_command"]

_GALACTIC_NAMES = (("l", "b"), ("glon", "glat"), ("gal_l", "gal_b"), ("l_deg", "b_deg"), ("lgal", "bgal"))
_ICRS_NAMES = (
    ("ra", "dec"),
    ("ra_deg", "dec_deg"),
    ("radeg", "dedeg"),
    ("raj2000", "dej2000"),
    ("ra_icrs", "de_icrs"),
    ("ra_j2000", "dec_j2000"),
)
_DISTANCE_NAMES = ("distance_pc", "distance", "dist", "r_med_geo", "r_med_photogeo")
def _read_table(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"input table not found: {path}")
    return read_table(path)


def _find(colnames: list[str], name: str) -> str | None:
    """The column called ``name``, case-insensitively."""
    lower = {c.lower(): c for c in colnames}
    return lower.get(name.lower())


def _column_values(table: Any, name: str, unit: str) -> np.ndarray:
    """Column ``name`` as float64 in ``unit`` (converted when the column carries a unit); masked entries → NaN."""
    col = table[name]
    try:
        values = np.array(np.ma.getdata(col), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"column {name!r} is not numeric (dtype {col.dtype})") from None
    if getattr(col, "unit", None) is not None:
        values = (values * col.unit).to_value(unit)
    values[np.ma.getmaskarray(col)] = np.nan
    return values


def _positions(
    table: Any, lon_column: str | None, lat_column: str | None, frame: str | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Galactic (l, b) in degrees for every row (NaN where the input position is missing), and a description."""
    names = list(table.colnames)
    if lon_column or lat_column:
        if not (lon_column and lat_column):
            raise ValueError("give both --lon-column and --lat-column (or neither, to detect l/b or ra/dec)")
        missing = [c for c in (lon_column, lat_column) if _find(names, c) is None]
        if missing:
            raise ValueError(f"position column(s) {missing} not in the input; columns present: {', '.join(names)}")
        lon_name, lat_name = _find(names, lon_column), _find(names, lat_column)
        if frame is None:
            pair = (lon_column.lower(), lat_column.lower())
            frame = "galactic" if pair in _GALACTIC_NAMES else "icrs" if pair in _ICRS_NAMES else None
            if frame is None:
                raise ValueError(
                    f"cannot tell the frame of {lon_column}/{lat_column}: give --frame galactic or icrs"
                )
    else:
        found = None
        for frame_name, pairs in (("galactic", _GALACTIC_NAMES), ("icrs", _ICRS_NAMES)):
            for lon, lat in pairs:
                if _find(names, lon) and _find(names, lat):
                    found = (_find(names, lon), _find(names, lat), frame_name)
                    break
            if found:
                break
        if found is None:
            expected = ", ".join(f"{a}/{b}" for a, b in _GALACTIC_NAMES + _ICRS_NAMES)
            raise ValueError(
                f"no sky position columns found; expected Galactic or ICRS degrees as one of: {expected} "
                f"(case-insensitive), or name them with --lon-column/--lat-column and --frame. "
                f"Columns present: {', '.join(names)}"
            )
        lon_name, lat_name, frame = found
    if frame not in ("galactic", "icrs"):
        raise ValueError(f"frame must be 'galactic' or 'icrs', got {frame!r}")
    lon = _column_values(table, lon_name, "deg")
    lat = _column_values(table, lat_name, "deg")
    if frame == "galactic":
        return lon, lat, f"Galactic {lon_name}/{lat_name}"
    from jaxstars.astro.geometry import icrs_to_galactic

    l_deg = np.full(lon.shape, np.nan)
    b_deg = np.full(lon.shape, np.nan)
    ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90.0)  # other rows stay NaN and get flagged
    if ok.any():
        l_deg[ok], b_deg[ok] = icrs_to_galactic(lon[ok], lat[ok])
    return l_deg, b_deg, f"ICRS {lon_name}/{lat_name} (converted to Galactic)"


def _tag(map_name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", map_name.lower()).strip("_")


def run_dust_command(
    map_name: str,
    input_path: str | Path,
    output_path: str | Path,
    *,
    distance_column: str | None = None,
    use_distance: bool = True,
    lon_column: str | None = None,
    lat_column: str | None = None,
    frame: str | None = None,
    map_path: str | Path | None = None,
    map_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Read ``input_path``, add ``ebv_<map>``, ``ebv_<map>_std`` and ``ebv_<map>_flag`` columns, write ``output_path``.

    Parameters
    ----------
    map_name : str
        A registered dust map (:func:`jaxstars.astro.dust.available_maps`); ``"sfd_lowres"`` is the offline default.
    input_path, output_path : str or Path
        Tables in any format astropy reads/writes, chosen by extension (.fits, .csv, .ecsv, .parquet, .h5/.hdf5,
        .vot/.xml).
    distance_column : str, optional
        Distance column (pc unless the column carries a unit).  When omitted and the map is 3D, the first of
        ``distance_pc, distance, dist, r_med_geo, r_med_photogeo`` present is used; when none is, the map's total
        column is returned (maps that need distances then raise).
    use_distance : bool
        False ignores distances (total column along each sight line).
    lon_column, lat_column, frame : str, optional
        Name the position columns and their frame (``"galactic"`` or ``"icrs"``) when they are not one of the
        recognised pairs (l/b, glon/glat, ra/dec, ...).
    map_path : str or Path, optional
        Map file or folder for file-based maps (``bayestar19``, ``sfd``, ``sfd_lowres``).
    map_kwargs : dict, optional
        Further keyword arguments for the map's factory.
    overwrite : bool
        Replace ``output_path`` if it exists.

    Returns
    -------
    dict
        ``columns`` added, ``n_rows``, ``n_flagged``, the ``map`` used, its ``units``, the ``positions`` and
        ``distance`` sources, and the ``output`` path.
    """
    from jaxstars.astro.dust import get_map

    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"output {output_path} exists; pass --overwrite to replace it")
    _format_of(output_path, None)  # fail before any work when the output format is unknown
    kwargs = dict(map_kwargs or {})
    if map_path is not None:
        kwargs["path"] = map_path
    try:
        dust_map = get_map(map_name, **kwargs)
    except TypeError as err:
        given = ", ".join(sorted(kwargs)) or "none"
        raise ValueError(f"cannot build dust map {map_name!r} with the options given ({given}): {err}") from None

    table = _read_table(input_path)
    l_deg, b_deg, positions = _positions(table, lon_column, lat_column, frame)

    distance = None
    distance_source = "none (total column along each sight line)"
    if distance_column is not None and _find(list(table.colnames), distance_column) is None:
        raise ValueError(
            f"distance column {distance_column!r} not in the input; columns present: {', '.join(table.colnames)}"
        )
    if use_distance and dust_map.three_d:
        name = (
            _find(list(table.colnames), distance_column)
            if distance_column
            else next(
                (_find(list(table.colnames), n) for n in _DISTANCE_NAMES if _find(list(table.colnames), n)), None
            )
        )
        if name is not None:
            distance = _column_values(table, name, "pc")
            distance_source = f"column {name!r} [pc]"
    elif not dust_map.three_d:
        distance_source = "ignored (2D map: total column)"

    result = dust_map.query(l_deg, b_deg, distance)
    tag = _tag(dust_map.name or map_name)
    unit = "mag" if "[mag]" in dust_map.units else None
    added = {
        f"ebv_{tag}": (result.mean, unit, f"reddening from dust map {dust_map.name!r}: {dust_map.units}"),
        f"ebv_{tag}_std": (result.std, unit, f"standard deviation of ebv_{tag}"),
        f"ebv_{tag}_flag": (
            ~result.valid,
            None,
            "True where no reddening could be computed (bad position or distance, outside the map)",
        ),
    }
    for flag_name, values in result.flags.items():
        added[f"ebv_{tag}_{_tag(flag_name)}"] = (
            values,
            None,
            f"dust map {dust_map.name!r} quality flag {flag_name}",
        )
    for name, (values, col_unit, description) in added.items():
        if name in table.colnames:
            table.remove_column(name)
        table[name] = values
        table[name].unit = col_unit
        table[name].description = description
    output_path.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, output_path, overwrite=overwrite)
    return {
        "columns": list(added),
        "n_rows": len(table),
        "n_flagged": int(np.count_nonzero(~result.valid)),
        "map": dust_map.name,
        "units": dust_map.units,
        "positions": positions,
        "distance": distance_source,
        "output": str(output_path),
    }


def add_dust_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``dust`` sub-command's arguments to ``parser`` and set ``func`` to :func:`dust_command`."""
    from jaxstars.astro.dust import DEFAULT_MAP, available_maps

    parser.add_argument("input", help="input table (FITS, CSV, ECSV, Parquet, HDF5, VOTable) with l/b or ra/dec")
    parser.add_argument("-o", "--output", required=True, help="output table; format from the extension")
    parser.add_argument(
        "--map",
        default=DEFAULT_MAP,
        dest="map_name",
        help=f"dust map: {', '.join(available_maps())} (default: %(default)s)",
    )
    parser.add_argument(
        "--distance-column",
        default=None,
        help="distance column in pc (default: detect distance_pc/distance/dist/r_med_geo/...)",
    )
    parser.add_argument("--no-distance", action="store_true", help="ignore distances: total column per sight line")
    parser.add_argument("--lon-column", default=None, help="longitude column (with --lat-column and --frame)")
    parser.add_argument("--lat-column", default=None, help="latitude column")
    parser.add_argument("--frame", choices=("galactic", "icrs"), default=None, help="frame of the named columns")
    parser.add_argument("--map-path", default=None, help="map file or folder for bayestar19 / sfd")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    parser.set_defaults(func=dust_command)
    return parser


def dust_command(args: argparse.Namespace) -> int:
    """Run :func:`run_dust_command` from parsed arguments; print a summary, or a clear error and exit code 2."""
    from jaxstars.astro.dust import DustMapFileNotFoundError

    try:
        summary = run_dust_command(
            args.map_name,
            args.input,
            args.output,
            distance_column=args.distance_column,
            use_distance=not args.no_distance,
            lon_column=args.lon_column,
            lat_column=args.lat_column,
            frame=args.frame,
            map_path=args.map_path,
            overwrite=args.overwrite,
        )
    except (
        DustMapFileNotFoundError,
        FileNotFoundError,
        FileExistsError,
        ImportError,
        KeyError,
        ValueError,
    ) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"jaxstars dust: error: {message}", file=sys.stderr)
        return 2
    print(
        f"jaxstars dust: map {summary['map']!r} ({summary['units']}); positions from {summary['positions']}; "
        f"distances: {summary['distance']}"
    )
    print(
        f"  added {', '.join(summary['columns'])} to {summary['n_rows']} rows "
        f"({summary['n_flagged']} flagged); wrote {summary['output']}"
    )
    return 0
