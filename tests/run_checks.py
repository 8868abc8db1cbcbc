"""Shared helpers for the tests that kill a catalog run mid-way (runner, Dask, ``jaxstars infer``)."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest


def completed_rows(manifest_path: Path) -> int:
    """Rows the run's manifest lists as finished (0 while there is no readable manifest)."""
    try:
        manifest = json.loads(Path(manifest_path).read_text())
    except (OSError, ValueError):
        return 0
    return sum(run["n_rows"] for run in manifest.get("completed", []))


def kill_after_rows(command: list[str], manifest_path: Path, rows: int, timeout: float = 120.0) -> int:
    """Start ``command``, SIGKILL it once its manifest lists at least ``rows`` finished rows; return that count.

    Fails the test if the process ends first or makes no progress within ``timeout`` seconds.
    """
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while completed_rows(manifest_path) < rows:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no progress in the subprocess")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return completed_rows(manifest_path)
