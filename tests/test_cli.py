"""The ``jaxstars`` command: quickstart writes a loadable model and a PNG."""

import numpy as np

from jaxstars.cli import main
from jaxstars.flows import load_flow


def test_quickstart_small(tmp_path, capsys):
    code = main(["quickstart", "--out", str(tmp_path), "--epochs", "3", "--n-stars", "3000", "--blocks", "2",
                 "--hidden", "16"])
    assert code == 0
    png = tmp_path / "toy_cmd_flow.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    flow, params, meta = load_flow(tmp_path / "toy_cmd_flow.npz")
    assert flow.dim == 2 and len(meta["shift"]) == 2
    lp = flow.log_prob(params, np.zeros((3, 2), np.float32))
    assert np.all(np.isfinite(np.asarray(lp)))
    assert "best validation NLL" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "quickstart" in capsys.readouterr().out
