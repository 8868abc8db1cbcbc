"""Where real data lives: ``JAXSTARS_DATA_DIR``, defaulting to ``../shared/data`` beside the project when present."""

from __future__ import annotations

import os
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path | None:
    """The real-data folder, or ``None`` when there is none (tests then skip with a reason)."""
    env = os.environ.get("JAXSTARS_DATA_DIR")
    if env:
        path = Path(env)
        return path if path.is_dir() else None
    for candidate in (_PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def data_file(*parts: str) -> Path:
    """Path of a file in the real-data folder; ``FileNotFoundError`` naming ``JAXSTARS_DATA_DIR`` if absent."""
    base = data_dir()
    if base is None:
        raise FileNotFoundError("no real-data folder: set JAXSTARS_DATA_DIR (or place ../shared/data beside the project)")
    path = base.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in the real-data folder {base} (JAXSTARS_DATA_DIR)")
    return path
