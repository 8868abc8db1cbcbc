"""``jaxstars cmd train / distances / evaluate`` end to end on a small Cranmer-mode simulation.

A tiny model (2 blocks × 16 hidden, 2 epochs) is trained once per module through ``jaxstars.cli.main``; the
checks are on what the commands promise: one output row per input row in input order, results that do not depend
on the chunk size, bad rows kept with flags and NaN results, distances that agree with the simulation truth where
the parallax alone pins them down, metrics JSON consistent with :mod:`jaxstars.models.cmd.metrics` applied to the
``distances`` output, and one-line errors with exit code 2 for bad inputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table

from jaxstars.astro.catalog_io import write_catalog, write_table
from jaxstars.astro.simulate import simulate
from jaxstars.cli import main
from jaxstars.models.cmd import FLAGS, CMDModel

N_STARS = 400
NAN_ROWS = (5, 17)  # mag_BP missing: no photometric result
NO_PLX_ROW = 23  # parallax missing: photometry-only posterior


def _distances(model_dir, catalog, out, *extra):
    """``jaxstars cmd distances --model M --catalog C --out O [extra...]``; returns the exit code."""
    return main(
        ["cmd", "distances", "--model", str(model_dir), "--catalog", str(catalog), "--out", str(out), *extra]
    )


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmd_cli")
    cat = simulate(N_STARS, mode="cranmer", key=11)
    for row in NAN_ROWS:
        cat["mag_BP"][row] = np.nan
    cat["parallax"][NO_PLX_ROW] = np.nan
    write_catalog(cat, base / "sim.parquet")
    write_catalog(cat, base / "sim.fits")
    return base, cat


@pytest.fixture(scope="module")
def model_dir(sim):
    base, _ = sim
    out = base / "model"
    code = main(
        [
            "cmd",
            "train",
            "--catalog",
            str(base / "sim.fits"),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--blocks",
            "2",
            "--hidden",
            "16",
            "--batch-size",
            "256",
            "--quiet",
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def single_chunk(sim, model_dir):
    base, _ = sim
    out = base / "distances_single.fits"
    assert (
        main(
            [
                "cmd",
                "distances",
                "--model",
                str(model_dir),
                "--catalog",
                str(base / "sim.parquet"),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    table = Table.read(out, mask_invalid=False)  # keep NaN and "" as values, not masks
    table.convert_bytestring_to_unicode()  # FITS stores strings as bytes
    return table


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.count("\n") == 0, err
    assert err.startswith("jaxstars cmd ") and ": error: " in err
    return err


def test_train_writes_model_report_and_plot(sim, model_dir):
    model, _ = CMDModel.load(model_dir)
    assert model.features.names == ("M_G", "BP-RP", "BP-G")
    assert model.info["dust_map"] == "cranmer_gaussian" and model.info["reddening_column"] is None
    report = json.loads((model_dir / "training.json").read_text())
    rows = report["rows"]
    assert rows["n_catalog"] == rows["n_considered"] == N_STARS
    assert rows["flag_counts"]["missing_photometry"] == len(NAN_ROWS)
    assert rows["flag_counts"]["no_parallax"] == 1
    assert rows["n_used"] == N_STARS - len(NAN_ROWS) - 1 and rows["n_not_used"] == len(NAN_ROWS) + 1
    assert report["epochs_run"] == len(report["train_loss"]) == len(report["val_loss"]) == 2
    assert all(np.isfinite(report["train_loss"]))
    assert report["arguments"]["epochs"] == 2 and report["arguments"]["hidden"] == 16
    png = (model_dir / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # refuses to overwrite the model without --overwrite (fails before reading or training)
    assert main(["cmd", "train", "--catalog", str(sim[0] / "sim.fits"), "--out", str(model_dir)]) == 2


def test_distances_rows_order_flags_and_truth(sim, single_chunk, capsys):
    _, cat = sim
    out = single_chunk
    assert len(out) == N_STARS
    np.testing.assert_array_equal(out["source_id"], cat["source_id"])
    flags = np.asarray(out["flags"])
    bad = np.zeros(N_STARS, dtype=bool)
    bad[list(NAN_ROWS)] = True
    assert np.all(flags[bad] & FLAGS["missing_photometry"])
    assert np.all(np.isnan(out["distance_mean"][bad])) and np.all(np.isnan(out["distance_q50"][bad]))
    assert all("missing_photometry" in s for s in out["flag_names"][bad])
    assert flags[NO_PLX_ROW] & FLAGS["no_parallax"] and np.isfinite(out["distance_mean"][NO_PLX_ROW])
    assert np.all(np.isfinite(out["distance_mean"][~bad]))
    assert all(
        out["flag_names"][i] == "|".join(n for n, b in FLAGS.items() if flags[i] & b) for i in range(N_STARS)
    )
    q = np.column_stack(
        [out[c] for c in ("distance_q2_5", "distance_q16", "distance_q50", "distance_q84", "distance_q97_5")]
    )[~bad]
    assert np.all(np.diff(q, axis=1) >= 0)
    assert str(out["distance_mean"].unit) == "pc"
    # where the parallax alone pins the distance (SNR > 10), the posterior must agree with the simulation truth
    snr = np.asarray(cat["parallax"] / cat["parallax_error"])
    precise = (snr > 10) & ~bad
    assert precise.sum() > 20
    frac = np.abs(out["distance_mean"][precise] - cat["true_distance"][precise]) / cat["true_distance"][precise]
    print("median fractional error at SNR > 10:", np.median(frac), "n =", precise.sum())
    assert np.median(frac) < 0.08


def test_distances_do_not_depend_on_chunking(sim, model_dir, single_chunk, capsys):
    base, _ = sim
    out = base / "distances_chunked.parquet"
    assert (
        main(
            [
                "cmd",
                "distances",
                "--model",
                str(model_dir),
                "--catalog",
                str(base / "sim.parquet"),
                "--out",
                str(out),
                "--chunk-rows",
                "250",
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"{N_STARS} stars" in printed and f"missing_photometry {len(NAN_ROWS)}" in printed
    chunked = Table.read(out)
    assert chunked.colnames == single_chunk.colnames
    for name in chunked.colnames:
        np.testing.assert_array_equal(np.asarray(chunked[name]), np.asarray(single_chunk[name]), err_msg=name)
    # an existing output is not replaced without --overwrite
    assert (
        main(
            [
                "cmd",
                "distances",
                "--model",
                str(model_dir),
                "--catalog",
                str(base / "sim.parquet"),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )
    assert "exists" in _error_line(capsys)


def test_distances_resume_an_interrupted_run(sim, model_dir, single_chunk, capsys, tmp_path):
    base, _ = sim
    out = tmp_path / "resumed.parquet"
    work = tmp_path / "resumed.parquet.parts"
    args = [
        "cmd",
        "distances",
        "--model",
        str(model_dir),
        "--catalog",
        str(base / "sim.parquet"),
        "--out",
        str(out),
        "--chunk-rows",
        "200",
        "--quiet",
    ]
    assert main([*args, "--keep-parts"]) == 0
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["completed"] == [{"parts": [0, 1], "rows": [0, N_STARS], "n_rows": N_STARS}]
    # the state a run killed during its second block leaves: one block recorded, no output
    manifest["completed"] = [{"parts": [0, 0], "rows": [0, 200], "n_rows": 200}]
    (work / "manifest.json").write_text(json.dumps(manifest))
    out.unlink()
    capsys.readouterr()
    # other settings are refused while those blocks exist ...
    assert main([*args, "--prior", "edsd:1000"]) == 2
    err = _error_line(capsys)
    assert "config" in err and "--overwrite" in err
    # ... the same command resumes, computing the second block only
    assert main(args) == 0
    assert "1 of 2 chunks resumed" in capsys.readouterr().out
    assert not work.exists()
    resumed = Table.read(out)
    assert resumed.colnames == single_chunk.colnames
    for name in resumed.colnames:
        np.testing.assert_array_equal(np.asarray(resumed[name]), np.asarray(single_chunk[name]), err_msg=name)
    # and once complete, the same command has nothing left to do
    assert main(args) == 0
    assert "already holds these 400 stars" in capsys.readouterr().out


def test_evaluate_prints_metrics_json(sim, model_dir, single_chunk, capsys, tmp_path):
    from jaxstars.models.cmd import metrics

    base, cat = sim
    json_path = tmp_path / "metrics.json"
    assert (
        main(
            [
                "cmd",
                "evaluate",
                "--model",
                str(model_dir),
                "--catalog",
                str(base / "sim.parquet"),
                "--out-json",
                str(json_path),
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert json.loads(json_path.read_text()) == report
    assert report["n"] == N_STARS and report["n_with_posterior"] == N_STARS - len(NAN_ROWS)
    assert report["flag_counts"]["missing_photometry"] == len(NAN_ROWS)
    # the SNR table is metrics.snr_table of the catalog and of the `distances` output (same seed and settings)
    expected = metrics.snr_table(
        np.asarray(cat["parallax"]),
        np.asarray(cat["parallax_error"]),
        np.asarray(single_chunk["distance_mean"]),
        np.asarray(single_chunk["distance_std"]),
    )
    assert report["snr"] == json.loads(json.dumps(expected))
    assert set(report["accuracy"]["methods"]) == {
        "model_mean",
        "model_median",
        "edsd_median",
        "edsd_mode",
        "inverse_parallax",
    }
    for key in ("interval_68", "interval_95"):
        assert report["coverage"][key]["n"] == N_STARS - len(NAN_ROWS)
        assert 0.0 <= report["coverage"][key]["fraction"] <= 1.0
    truth = np.asarray(cat["true_distance"])
    inside = (truth >= single_chunk["distance_q2_5"]) & (truth <= single_chunk["distance_q97_5"])
    assert report["coverage"]["interval_95"]["fraction"] == pytest.approx(inside.sum() / (N_STARS - len(NAN_ROWS)))


def test_evaluate_without_truth_has_no_accuracy_block(sim, model_dir, capsys, tmp_path):
    _, cat = sim
    path = tmp_path / "no_truth.fits"
    write_catalog(cat[:40][[c for c in cat.colnames if not c.startswith("true_")]], path)
    assert main(["cmd", "evaluate", "--model", str(model_dir), "--catalog", str(path), "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 40 and "snr" in report and "accuracy" not in report and "coverage" not in report


def test_corrupt_model_file(sim, tmp_path, capsys):
    bad = tmp_path / "bad_model"
    bad.mkdir()
    (bad / "model.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    assert _distances(str(bad), str(sim[0] / "sim.parquet"), str(tmp_path / "o.parquet")) == 2
    assert "corrupt" in _error_line(capsys)
    assert not (tmp_path / "o.parquet").exists()


def test_missing_files(sim, model_dir, tmp_path, capsys):
    assert _distances(str(tmp_path / "nowhere"), str(sim[0] / "sim.parquet"), str(tmp_path / "o.parquet")) == 2
    assert "not found" in _error_line(capsys)
    assert _distances(str(model_dir), str(tmp_path / "absent.parquet"), str(tmp_path / "o.parquet")) == 2
    assert "absent.parquet" in _error_line(capsys)
    assert main(["cmd", "train", "--catalog", str(tmp_path / "absent.fits"), "--out", str(tmp_path / "m")]) == 2
    assert "not found" in _error_line(capsys)
    assert main(["cmd", "evaluate", "--model", str(model_dir), "--catalog", str(tmp_path / "absent.csv")]) == 2
    _error_line(capsys)


def test_catalog_missing_photometry_columns(sim, model_dir, tmp_path, capsys):
    _, cat = sim
    path = tmp_path / "no_bp.parquet"
    write_table(cat[[c for c in cat.colnames if c not in ("mag_BP", "mag_err_BP")]], path)
    assert _distances(str(model_dir), str(path), str(tmp_path / "o.parquet")) == 2
    assert "mag_BP" in _error_line(capsys)
    assert main(["cmd", "train", "--catalog", str(path), "--out", str(tmp_path / "m")]) == 2
    assert "mag_BP" in _error_line(capsys)
    # no sky positions: the dust map cannot be used
    path = tmp_path / "no_positions.parquet"
    write_table(cat[[c for c in cat.colnames if c not in ("l", "b", "ra", "dec")]], path)
    assert _distances(str(model_dir), str(path), str(tmp_path / "o.parquet")) == 2
    assert "positions" in _error_line(capsys)
    # a Gaia-archive-style file is accepted by the same check (no error before the posterior stage)
    from jaxstars.models.cmd.cli import _probe_photometry

    archive = Table(
        {
            "phot_g_mean_mag": [15.0],
            "phot_g_mean_flux_over_error": [100.0],
            "phot_bp_mean_mag": [15.5],
            "phot_bp_mean_flux_over_error": [50.0],
            "phot_rp_mean_mag": [14.5],
            "phot_rp_mean_flux_over_error": [60.0],
        }
    )
    _probe_photometry(archive, path)


def test_bad_options(sim, model_dir, tmp_path, capsys):
    common = [
        "--model",
        str(model_dir),
        "--catalog",
        str(sim[0] / "sim.parquet"),
        "--out",
        str(tmp_path / "o.fits"),
    ]
    assert main(["cmd", "distances", *common, "--dust-map", "no_such_map"]) == 2
    assert "unknown dust map" in _error_line(capsys)
    assert (
        main(
            [
                "cmd",
                "train",
                "--catalog",
                str(sim[0] / "sim.fits"),
                "--out",
                str(tmp_path / "m"),
                "--dust-map",
                "no_such_map",
            ]
        )
        == 2
    )
    assert "unknown dust map" in _error_line(capsys)
    for prior in ("edsd:-5", "gaussian"):
        assert main(["cmd", "distances", *common, "--prior", prior]) == 2
        assert "prior" in _error_line(capsys)
    assert main(["cmd", "distances", *common, "--reddening-column", "no_such_column"]) == 2
    assert "no_such_column" in _error_line(capsys)
    assert not (tmp_path / "o.fits").exists()
    assert main(["cmd"]) == 2
    assert "distances" in capsys.readouterr().out


@pytest.mark.slow
def test_photometric_errors_flag(sim, model_dir, single_chunk, tmp_path):
    """``--photometric-errors`` convolves the CMD density with the catalogue's G/BP/RP errors: the output changes
    (most for the stars with the largest errors), equals a direct
    ``distance_posteriors(..., photometric_cov=photometric_covariance(...))`` call, and ``jaxstars infer`` with the
    same flag writes the same table."""
    from jaxstars.models.cmd import distance_posteriors, prepare_stars
    from jaxstars.models.cmd.posterior import photometric_covariance

    _, cat = sim
    sub = cat[:120]  # the convolution costs 49 density evaluations per grid point: keep the test small
    path = tmp_path / "sub.parquet"
    write_catalog(sub, path)
    out = tmp_path / "phot.parquet"
    assert _distances(model_dir, path, out, "--photometric-errors", "--quiet") == 0
    table = Table.read(out)
    model, params = CMDModel.load(model_dir)
    stars = prepare_stars(model.features, sub, dust_map="cranmer_gaussian")
    direct = distance_posteriors(
        model, params, stars, key=0, photometric_cov=photometric_covariance(model.features, sub)
    )
    for name in ("distance_mean", "distance_std", "distance_q16", "distance_q50", "distance_q84", "log_evidence"):
        np.testing.assert_allclose(np.asarray(table[name]), direct[name], rtol=1e-6, equal_nan=True, err_msg=name)
    np.testing.assert_array_equal(np.asarray(table["flags"]), direct["flags"])
    # the flag changes the posteriors, most where the photometric errors are largest
    plain = np.asarray(single_chunk["distance_mean"])[: len(sub)]
    ok = np.isfinite(plain)
    change = np.abs(np.asarray(table["distance_mean"])[ok] / plain[ok] - 1)
    order = np.argsort(np.asarray(sub["mag_err_BP"])[ok])  # by BP error (the largest photometric error)
    quarter = len(order) // 4
    precise, noisy = np.median(change[order[:quarter]]), np.median(change[order[-quarter:]])
    print("max |Δmean|/mean", change.max(), "median: largest-error quarter", noisy, "smallest", precise)
    assert change.max() > 0.01
    assert noisy > 10 * precise
    # the generic `jaxstars infer` takes the same flag and runs the same job
    out_infer = tmp_path / "phot_infer.parquet"
    code = main(["infer", str(model_dir), str(path), "-o", str(out_infer), "--photometric-errors", "--quiet"])
    assert code == 0
    infer_table = Table.read(out_infer)
    for name in table.colnames:
        np.testing.assert_array_equal(np.asarray(infer_table[name]), np.asarray(table[name]), err_msg=name)
