"""``jaxstars spectrophot fit|predict`` through the parser builder (the lead registers it in jaxstars/cli.py)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from jaxstars.astro.catalog_io import read_table, write_table
from jaxstars.data import data_dir
from jaxstars.models.spectrophot import make_synthetic
from jaxstars.models.spectrophot.cli import add_spectrophot_arguments


def _run(argv):
    parser = argparse.ArgumentParser(prog="jaxstars")
    add_spectrophot_arguments(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_fit_and_predict_roundtrip(tmp_path, capsys):
    s = make_synthetic(600, 2, n_pixels=40, n_lines=4)
    t = s.table
    t["logg"] = t["true_logg"]
    t["mag_G"][3] = np.nan  # a star with a missing feature: kept, flagged, NaN prediction
    data = tmp_path / "stars.fits"
    write_table(t, data)
    out = tmp_path / "model"
    assert _run(["spectrophot", "fit", "--data", str(data), "--out", str(out), "--lambda-grid", "3,30",
                 "--zero-point-grid", "0.03"]) == 0  # fmt: skip
    report = json.loads((out / "fit.json").read_text())
    assert report["features"]["spectra"] and report["training_set"]["n"] > 500
    assert report["chosen"]["lam"] in (3.0, 30.0)
    cat = read_table(out / "catalog.fits")
    sp = np.ma.filled(np.ma.asarray(cat["parallax_sp"], dtype=float), np.nan)
    assert len(cat) == 600 and np.isnan(sp[3]) and cat["flags"][3] & 1
    rel = np.nanmedian(np.abs(sp / np.asarray(t["true_parallax"]) - 1))
    assert rel < 0.15
    pred = tmp_path / "pred.parquet"
    assert _run(["spectrophot", "predict", "--model", str(out), "--data", str(data), "--out", str(pred)]) == 0
    p = read_table(pred)
    np.testing.assert_allclose(p["parallax_sp"], np.sqrt(p["parallax_sp_A"] * p["parallax_sp_B"]), rtol=1e-6)
    # errors: existing output, missing file, corrupt model -> exit code 2 with one line
    assert _run(["spectrophot", "predict", "--model", str(out), "--data", str(data), "--out", str(pred)]) == 2
    assert _run(["spectrophot", "fit", "--data", str(tmp_path / "nope.fits"), "--out", str(out)]) == 2
    (out / "spectrophot.npz").write_bytes(b"junk")
    assert _run(["spectrophot", "predict", "--model", str(out), "--data", str(data), "--out",
                 str(tmp_path / "p2.csv")]) == 2  # fmt: skip
    assert "error:" in capsys.readouterr().err


@pytest.mark.skipif(data_dir() is None or not (data_dir() / "green2020" / "green2020_sample.h5").exists(),
                    reason="real data (green2020_sample.h5) not available")  # fmt: skip
def test_green_sample_fit_on_real_data(tmp_path):
    path = data_dir() / "green2020" / "green2020_sample.h5"
    out = tmp_path / "green"
    assert _run(["spectrophot", "fit", "--data", str(path), "--out", str(out), "--lambda-grid", "10,100",
                 "--zero-point-grid", "0.03,0.06"]) == 0  # fmt: skip
    r = json.loads((out / "fit.json").read_text())
    assert r["features"]["bands"] == ["G", "BP", "RP", "J", "H", "Ks"] and r["parent_sample"]["n"] > 400
    assert r["scatter_snr10"]["n"] > 100 and r["scatter_snr10"]["robust"] < 0.3
    assert abs(r["ab_consistency"]["median_ln_ratio"]) < 0.05
