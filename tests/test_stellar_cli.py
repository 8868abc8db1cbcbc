"""``jaxstars stellar train | evaluate | infer`` on small files in the release format."""

from __future__ import annotations

import argparse
import json

import h5py
import pytest

from jaxstars.data import data_dir
from jaxstars.models.stellar.cli import add_stellar_arguments

RELEASE = (data_dir() / "green2020") if data_dir() is not None else None
pytestmark = pytest.mark.skipif(
    RELEASE is None or not (RELEASE / "green2020_sample.h5").exists(),
    reason="real data green2020/ not found (set JAXSTARS_DATA_DIR)",
)


def run(argv):
    parser = argparse.ArgumentParser(prog="jaxstars")
    add_stellar_arguments(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stellar") / "small.h5"
    with h5py.File(RELEASE / "green2020_sample.h5", "r") as src, h5py.File(path, "w") as dst:
        dst["data"] = src["data"][:600]
    return path


def test_cli_evaluate_released(small_file, capsys):
    assert run(["stellar", "evaluate", "--model", "released", "--data", str(small_file), "--subset", "test"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_stars"] == 60 and 0.3 < metrics["mean_chi2_dof"] < 2.0
    assert set(metrics["per_colour"]) >= {"M_G_DR2", "BP_DR2-G_DR2", "W2-G_DR2"}
    assert 0.0 <= metrics["fraction_excluded"] < 0.2


@pytest.mark.slow
def test_cli_train_evaluate_infer(small_file, tmp_path, capsys):
    out = tmp_path / "model"
    assert run(["stellar", "train", "--data", str(small_file), "--out", str(out), "--iterations", "2",
                "--epochs", "2", "--batch-size", "128", "--quiet"]) == 0  # fmt: skip
    assert (out / "stellar.npz").exists() and (out / "training.json").exists()
    capsys.readouterr()
    assert run(["stellar", "evaluate", "--model", "released", "--data", str(small_file), "--subset", "test"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_stars"] == 60 and 0.3 < metrics["mean_chi2_dof"] < 2.0
    assert set(metrics["per_colour"]) >= {"M_G_DR2", "BP_DR2-G_DR2", "W2-G_DR2"}
    assert run(["stellar", "evaluate", "--model", str(out), "--data", str(small_file)]) == 0
    target = tmp_path / "post.csv"
    assert run(["stellar", "infer", "--model", str(out), "--data", str(small_file), "--out", str(target),
                "--rows", "2", "--warmup", "20", "--samples", "20", "--batch-size", "2"]) == 0  # fmt: skip
    from astropy.table import Table

    tab = Table.read(target)
    assert len(tab) == 2 and "teff_q50" in tab.colnames and "E_mean" in tab.colnames


def test_cli_errors(tmp_path, capsys):
    assert run(["stellar", "evaluate", "--model", "released", "--data", str(tmp_path / "nope.h5")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "stellar.npz").write_bytes(b"garbage")
    assert run(["stellar", "evaluate", "--model", str(bad), "--data", str(RELEASE / "green2020_sample.h5")]) == 2
    assert "error" in capsys.readouterr().err
    assert run(["stellar"]) == 2
