"""The documentation site builds (strict: broken references fail) and the API page has content."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    # docstrings were rendered from the source
    assert "marginal_log_prob" in api and "FlowDistribution" in api
    shutil.rmtree(tmp_path / "site")
