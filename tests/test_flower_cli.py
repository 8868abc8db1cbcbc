"""``jaxstars flower train / infer / evaluate`` and ``jaxstars infer`` with a FLOWER model, end to end.

A tiny FLOWER model (1 BNAF layer of depth 1, 2 epochs, no contrastive term) is trained once per module through
``jaxstars.cli.main`` on zero-extinction stars from the Galaxy simulator; the checks are on what the commands
promise, with expectations derived from the raw catalog values and the documented rules rather than read back from
the code under test:

* ``train`` writes a loadable model (zero-point from the catalog's ``PLXZP`` metadata) and a report whose row
  accounting matches the documented training-row rules;
* ``infer`` keeps every row once, in order, flags bad rows (NaN G, a missing PS1 band, no position, too few bands,
  zero errors) without failing, keeps negative parallaxes as data, agrees with the simulation truth where the
  parallax alone pins the distance, does not depend on ``--chunk-rows``, and ``jaxstars infer`` detects the model and
  writes byte-identical output; ``--e-max-column`` sets ``dust_pushed`` exactly by the §2.9.2 rule;
* a corrupt model file, a FLOWER file of another format version, missing files or columns end with a one-line
  error and exit code 2;
* ``evaluate`` prints the §5.1 metrics, equal to :func:`~jaxstars.models.flower.metrics.reddening_metrics` applied
  to ``infer`` output on the same synthetically reddened stars;
* the metrics against hand-computed values, the synthetic reddening against the Zhang & Yuan law evaluated directly.

The NUTS path and a SIGKILL/resume run are ``slow``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from jaxstars.astro.catalog_io import write_catalog, write_table
from jaxstars.cli import main
from jaxstars.models.flower import FLAGS, GAIA_PS1, FlowerModel

N_TRAIN = 700
N_TEST = 60
PS1 = ("ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y")
BANDS = ("G", "BP", "RP", *PS1)
ZP = -0.017  # the simulator's parallax zero-point (PLXZP metadata)

# bad rows of the test catalog (row -> what is wrong with it)
BAD_ROWS = {
    0: "mag_G NaN (no leading band: no result)",
    1: "mag_ps1_g NaN (a missing PS1 band: marginalised)",
    2: "parallax negative (valid data)",
    3: "parallax_error zero (photometry-only posterior)",
    4: "mag_err_ps1_r zero (band dropped, flagged)",
    5: "no sky position (no (R, Z): no result)",
    6: "only G observed (no colour: no result)",
}
INPUT_BITS = (
    FLAGS["missing_leading_band"]
    | FLAGS["too_few_bands"]
    | FLAGS["no_position"]
    | FLAGS["no_parallax"]
    | FLAGS["bad_mag_error"]
    | FLAGS["bad_prior"]
)
NO_RESULT_BITS = FLAGS["missing_leading_band"] | FLAGS["too_few_bands"] | FLAGS["no_position"] | FLAGS["bad_prior"]
SUMMARY = (
    "ebv_mean",
    "ebv_std",
    "ebv_q2_5",
    "ebv_q16",
    "ebv_q50",
    "ebv_q84",
    "ebv_q97_5",
    "distance_mean",
    "distance_std",
    "distance_q2_5",
    "distance_q16",
    "distance_q50",
    "distance_q84",
    "distance_q97_5",
)


def _values(table, name) -> np.ndarray:
    col = table[name]
    return np.array(np.ma.filled(np.ma.asarray(col, dtype=float), np.nan), dtype=float)


def _error_line(capsys, prefix: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.count("\n") == 0, err
    assert err.startswith(prefix) and ": error: " in err, err
    return err


def _flower_infer(model, catalog, out, *extra) -> int:
    argv = ["flower", "infer", "--model", str(model), "--catalog", str(catalog), "--out", str(out), "--quiet"]
    return main([*argv, *extra])


def _infer(model, catalog, out, *extra) -> int:
    """``jaxstars infer MODEL CATALOG -o OUT --quiet`` with the module's posterior options."""
    return main(["infer", str(model), str(catalog), "-o", str(out), "--quiet", *extra])


def _expected_input_flags(raw: Table) -> np.ndarray:
    """The input bits of FLAGS from the raw values, by the rules documented in jaxstars.models.flower.stars."""
    n = len(raw)
    observed = np.zeros((n, len(BANDS)), bool)
    bad_err = np.zeros(n, bool)
    with np.errstate(invalid="ignore"):
        for j, band in enumerate(BANDS):
            mag, err = _values(raw, f"mag_{band}"), _values(raw, f"mag_err_{band}")
            good_err = np.isfinite(err) & (err > 0)
            observed[:, j] = np.isfinite(mag) & good_err
            bad_err |= np.isfinite(mag) & ~good_err
        plx, plx_err = _values(raw, "parallax"), _values(raw, "parallax_error")
        no_plx = ~(np.isfinite(plx) & np.isfinite(plx_err) & (plx_err > 0))
    flags = np.zeros(n, np.int64)
    flags[bad_err] |= FLAGS["bad_mag_error"]
    flags[~observed[:, 0]] |= FLAGS["missing_leading_band"]
    flags[observed.sum(axis=1) < 2] |= FLAGS["too_few_bands"]
    flags[no_plx] |= FLAGS["no_parallax"]
    flags[~(np.isfinite(_values(raw, "l")) & np.isfinite(_values(raw, "b")))] |= FLAGS["no_position"]
    return flags


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("flower_cli")


@pytest.fixture(scope="module")
def simulated():
    """Zero-extinction Galaxy stars: the first N_TRAIN for training, the next N_TEST for the test catalog."""
    from jaxstars.astro.dust.analytic import CloudsMap
    from jaxstars.astro.simulate import simulate_galaxy

    zero = CloudsMap(distances_pc=[100.0], ebv=[0.0], ebv_std=[0.0], distance_std_pc=[1.0], name="zero")
    cat = simulate_galaxy(N_TRAIN + N_TEST, key=3, dust_map=zero)
    assert cat.meta["PLXZP"] == ZP and np.all(np.asarray(cat["true_ebv"]) == 0)
    return cat


@pytest.fixture(scope="module")
def train_catalog(base, simulated):
    path = base / "train.parquet"
    write_catalog(simulated[:N_TRAIN], path)
    return path


@pytest.fixture(scope="module")
def model_dir(base, train_catalog):
    out = base / "model"
    argv = ["flower", "train", "--catalog", str(train_catalog), "--out", str(out), "--epochs", "2"]
    argv += ["--batch-size", "256", "--flow-layers", "1", "--flow-depth", "1", "--contrastive-weight", "0"]
    argv += ["--importance-samples", "16", "--no-progress"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def catalog(base, simulated):
    """The test catalog with one bad row of every kind (:data:`BAD_ROWS`)."""
    cat = simulated[N_TRAIN:].copy()
    cat.meta = dict(simulated.meta)
    cat["mag_G"][0] = np.nan
    cat["mag_ps1_g"][1] = np.nan
    cat["parallax"][2] = -0.5
    cat["parallax_error"][3] = 0.0
    cat["mag_err_ps1_r"][4] = 0.0
    for name in ("l", "b", "ra", "dec"):
        cat[name][5] = np.nan
    for band in ("BP", "RP", *PS1, "J", "H", "Ks"):
        cat[f"mag_{band}"][6] = np.nan
    path = base / "bad_rows.parquet"
    write_catalog(cat, path)
    return path, cat


@pytest.fixture(scope="module")
def inferred(model_dir, catalog, base):
    """One ``flower infer`` run of the bad-row catalog (single chunk): ``(table, path)``."""
    out = base / "infer.parquet"
    assert _flower_infer(model_dir, catalog[0], out) == 0
    return Table.read(out), out


# ------------------------------------------------------------------------------------------------ train


def test_train_writes_model_and_row_accounting(model_dir, simulated, train_catalog, capsys):
    model, _ = FlowerModel.load(model_dir)
    assert model.features.bands == GAIA_PS1 and model.flow.context_dim == 2
    assert model.info["zero_point"] == ZP  # from the catalog's PLXZP metadata ("auto")
    assert model.info["bands_preset"] == "gaia_ps1" and model.info["distance_column"] is None
    report = json.loads((model_dir / "training.json").read_text())
    # the documented training-row rules, applied to the raw catalog here
    raw = simulated[:N_TRAIN]
    with np.errstate(invalid="ignore"):
        ok = np.ones(N_TRAIN, bool)
        for band in BANDS:
            mag, err = _values(raw, f"mag_{band}"), _values(raw, f"mag_err_{band}")
            ok &= np.isfinite(mag) & np.isfinite(err) & (err > 0)
        plx, plx_err = _values(raw, "parallax"), _values(raw, "parallax_error")
        ok &= np.isfinite(plx) & (plx_err > 0) & (plx - ZP > 0)
        g = _values(raw, "mag_G")
        ok &= (g > 5.0) & (g < 21.0)
    rows = report["rows"]
    assert rows["n_catalog"] == rows["n_considered"] == N_TRAIN
    assert rows["n_used"] == int(ok.sum()) and rows["n_not_used"] == N_TRAIN - int(ok.sum())
    assert rows["not_used_because"]["non_positive_parallax"] == int(np.count_nonzero(plx - ZP <= 0))
    assert model.info["training"]["n_stars"] == rows["n_used"]
    assert report["epochs_run"] == len(report["train_loss"]) == 2 and all(np.isfinite(report["train_loss"]))
    assert report["arguments"]["flow_layers"] == 1
    assert (model_dir / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # refuses to overwrite the model without --overwrite (before reading or training)
    capsys.readouterr()
    assert main(["flower", "train", "--catalog", str(train_catalog), "--out", str(model_dir)]) == 2
    assert "--overwrite" in _error_line(capsys, "jaxstars flower train")


def test_train_input_errors(base, simulated, tmp_path, capsys):
    no_ps1 = tmp_path / "no_ps1.parquet"
    raw = simulated[:50]
    write_table(raw[[c for c in raw.colnames if c not in ("mag_ps1_z", "mag_err_ps1_z")]], no_ps1)
    assert main(["flower", "train", "--catalog", str(no_ps1), "--out", str(tmp_path / "m")]) == 2
    assert "mag_ps1_z/mag_err_ps1_z" in _error_line(capsys, "jaxstars flower train")
    assert main(["flower", "train", "--catalog", str(tmp_path / "absent.fits"), "--out", str(tmp_path / "m")]) == 2
    assert "not found" in _error_line(capsys, "jaxstars flower train")
    path = tmp_path / "ok.parquet"
    write_catalog(raw, path)
    assert main(["flower", "train", "--catalog", str(path), "--out", str(tmp_path / "m"), "--distance", "d"]) == 2
    assert "--distance-error" in _error_line(capsys, "jaxstars flower train")
    argv = ["flower", "train", "--catalog", str(path), "--out", str(tmp_path / "m")]
    assert main([*argv, "--distance", "nope", "--distance-error", "nope_err"]) == 2
    assert "nope" in _error_line(capsys, "jaxstars flower train")
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------------------ infer


def test_infer_rows_flags_and_truth(catalog, inferred):
    _, raw = catalog
    out, _ = inferred
    assert len(out) == N_TEST
    np.testing.assert_array_equal(out["source_id"], raw["source_id"])
    for name in SUMMARY:
        assert name in out.colnames, name
    for name in ("log_evidence", "edge_mass", "flags", "flag_names"):  # fast-path diagnostics
        assert name in out.colnames, name
    assert str(out["ebv_mean"].unit) == "mag" and str(out["distance_mean"].unit) == "pc"

    flags = np.asarray(out["flags"], np.int64)
    expected = _expected_input_flags(raw)
    np.testing.assert_array_equal(flags & INPUT_BITS, expected)
    assert expected[0] & FLAGS["missing_leading_band"] and expected[5] & FLAGS["no_position"]
    assert expected[6] & FLAGS["too_few_bands"] and expected[3] == FLAGS["no_parallax"]
    assert expected[4] & FLAGS["bad_mag_error"] and not expected[1] & INPUT_BITS & ~FLAGS["bad_mag_error"]
    assert [str(s) for s in out["flag_names"]] == ["|".join(n for n, b in FLAGS.items() if f & b) for f in flags]

    # NaN results exactly where no result is possible; finite, ordered posteriors elsewhere
    no_result = (expected & NO_RESULT_BITS) != 0
    assert sorted(np.flatnonzero(no_result)) == [0, 5, 6]
    for name in (*SUMMARY, "log_evidence"):
        np.testing.assert_array_equal(np.isnan(_values(out, name)), no_result, err_msg=name)
    for prefix in ("ebv", "distance"):
        q = np.column_stack([_values(out, f"{prefix}_q{s}") for s in ("2_5", "16", "50", "84", "97_5")])[
            ~no_result
        ]
        assert np.all(np.diff(q, axis=1) >= 0), prefix
    ebv_q = _values(out, "ebv_q50")[~no_result]
    assert np.all((ebv_q >= -0.05) & (ebv_q <= 0.5))  # inside the reddening prior U(-0.05, 0.5)
    # a negative parallax is a measurement: kept, not flagged no_parallax, finite posterior
    assert raw["parallax"][2] < 0 and not flags[2] & FLAGS["no_parallax"] and np.isfinite(out["distance_q50"][2])

    # where the parallax alone pins the distance (S/N > 10, i.e. <= 10 % errors), the posterior follows the
    # simulation truth: within 3 posterior standard deviations and 25 % for every such star
    plx_c = _values(raw, "parallax") - ZP
    plx_err = _values(raw, "parallax_error")
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(plx_err > 0, plx_c / plx_err, np.nan)
    precise = (snr > 10) & ~no_result
    assert precise.sum() >= 5
    truth = _values(raw, "true_distance")[precise]
    q50, std = _values(out, "distance_q50")[precise], _values(out, "distance_std")[precise]
    z = (q50 - truth) / std
    frac = np.abs(q50 - truth) / truth
    print("S/N > 10: (q50 - truth) / std =", np.round(z, 2), "; |q50 - truth| / truth =", np.round(frac, 3))
    assert np.all(np.abs(z) < 3.0) and np.all(frac < 0.25)


def test_jaxstars_infer_is_the_same_job_and_chunking_changes_nothing(
    model_dir, catalog, inferred, tmp_path, capsys
):
    path, _ = catalog
    reference, reference_path = inferred
    # `jaxstars infer` detects the FLOWER model and writes the very same bytes
    via_infer = tmp_path / "via_infer.parquet"
    assert _infer(model_dir, path, via_infer) == 0
    assert via_infer.read_bytes() == reference_path.read_bytes()
    printed = capsys.readouterr().out
    assert printed.startswith(f"jaxstars infer: {N_TEST} stars") and "fast posterior" in printed

    # 3 chunks (25 + 25 + 10): draws keyed by the global row id, not the position in a chunk
    chunked = tmp_path / "chunked.parquet"
    assert _flower_infer(model_dir, path, chunked, "--chunk-rows", "25") == 0
    chunked = Table.read(chunked)
    assert chunked.colnames == reference.colnames
    for name in chunked.colnames:
        a, b = np.asarray(chunked[name]), np.asarray(reference[name])
        if a.dtype.kind == "f":
            # XLA may vectorise a 10-star batch differently from a 60-star one: float32 rounding, no more
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
    # the fast path's summaries are deterministic (a grid, no random draws): another seed changes only the
    # posterior draws written with --samples
    seed1 = tmp_path / "seed1.parquet"
    assert _flower_infer(model_dir, path, seed1, "--seed", "1") == 0
    a, b = _values(Table.read(seed1), "ebv_mean"), _values(reference, "ebv_mean")
    np.testing.assert_array_equal(a, b)


def test_e_max_column_sets_dust_pushed_by_the_rule(model_dir, catalog, inferred, tmp_path):
    from jaxstars.astro.extinction import zhang_yuan_law

    _, raw = catalog
    cat = raw.copy()
    e_max = np.where(np.arange(N_TEST) % 3 == 0, 0.0, 4.0)
    e_max[7] = np.nan
    cat["sfd_ebv"] = e_max
    path = tmp_path / "with_emax.parquet"
    write_catalog(cat, path)
    out = tmp_path / "emax.parquet"
    assert _flower_infer(model_dir, path, out, "--e-max-column", "SFD_EBV") == 0  # columns matched without case
    out = Table.read(out)
    # §2.9.2: m_G < m_bright + R_G(E_max, (BP-RP)) E_max with m_bright = 5 and the observed colour for the law
    g = _values(raw, "mag_G")
    bp_rp = np.nan_to_num(_values(raw, "mag_BP"), nan=0.0) - np.nan_to_num(_values(raw, "mag_RP"), nan=0.0)
    law = zhang_yuan_law(("G", "BP", "RP"), argument="bp_rp0")
    r_g = np.asarray(law.coefficients(np.nan_to_num(e_max), bp_rp))[:, 0]
    with np.errstate(invalid="ignore"):
        expected = np.isfinite(g) & (g < 5.0 + r_g * e_max)
    assert 0 < expected.sum() < np.count_nonzero(e_max > 0)  # both outcomes occur
    flagged = (np.asarray(out["flags"], np.int64) & FLAGS["dust_pushed"]) != 0
    np.testing.assert_array_equal(flagged, expected)
    # the flag does not change the posteriors
    for name in SUMMARY:
        np.testing.assert_array_equal(_values(out, name), _values(inferred[0], name), err_msg=name)


def test_model_and_catalog_errors_are_one_line(model_dir, catalog, tmp_path, capsys):
    from jaxstars.flows import save_flow

    path, raw = catalog
    out = tmp_path / "o.parquet"
    # a corrupt flower.npz: both commands report it in one line
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    data = (model_dir / "flower.npz").read_bytes()
    (corrupt / "flower.npz").write_bytes(data[: len(data) // 2])
    assert _infer(corrupt, path, out) == 2
    assert "corrupt" in _error_line(capsys, "jaxstars infer")
    assert _flower_infer(corrupt, path, out) == 2
    assert "corrupt" in _error_line(capsys, "jaxstars flower infer")
    # a FLOWER file of another format version: detected as FLOWER, refused with the version named
    model, params = FlowerModel.load(model_dir)
    future = tmp_path / "future"
    future.mkdir()
    config = {**model.to_config(), "format": "jaxstars.flower.v9"}
    save_flow(future / "flower.npz", model.flow, params, metadata={"flower": json.loads(json.dumps(config))})
    # the model file itself rather than its folder
    assert _infer(future / "flower.npz", path, out) == 2
    assert "jaxstars.flower.v9" in _error_line(capsys, "jaxstars infer")
    # missing model / catalog
    assert _flower_infer(tmp_path / "nowhere", path, out) == 2
    assert "not found" in _error_line(capsys, "jaxstars flower infer")
    assert _flower_infer(model_dir, tmp_path / "absent.parquet", out) == 2
    assert "absent.parquet" in _error_line(capsys, "jaxstars flower infer")
    # a catalog without G at all, or without positions: a clear message before any work
    no_g = tmp_path / "no_g.parquet"
    write_table(raw[[c for c in raw.colnames if c not in ("mag_G", "mag_err_G")]], no_g)
    assert _flower_infer(model_dir, no_g, out) == 2
    assert "mag_G/mag_err_G" in _error_line(capsys, "jaxstars flower infer")
    no_pos = tmp_path / "no_pos.parquet"
    write_table(raw[[c for c in raw.colnames if c not in ("l", "b", "ra", "dec")]], no_pos)
    assert _infer(model_dir, no_pos, out) == 2
    assert "positions" in _error_line(capsys, "jaxstars infer")
    # bad options
    assert _flower_infer(model_dir, path, out, "--distance-prior", "1300,1.5") == 2
    assert "--distance-prior" in _error_line(capsys, "jaxstars flower infer")
    assert _flower_infer(model_dir, path, out, "--e-max-column", "no_such_column") == 2
    assert "no_such_column" in _error_line(capsys, "jaxstars flower infer")
    assert _infer(model_dir, path, out, "--posterior-option", "no_such_setting=1") == 2
    assert "NAME one of" in _error_line(capsys, "jaxstars infer")
    assert _flower_infer(model_dir, path, out, "--posterior-option", "e_min=0.9") == 2
    assert "--posterior-option" in _error_line(capsys, "jaxstars flower infer")
    assert _flower_infer(model_dir, path, path) == 2
    assert "--out must differ" in _error_line(capsys, "jaxstars flower infer")
    assert not out.exists() and not Path(f"{out}.parts").exists()
    assert main(["flower"]) == 2
    assert "evaluate" in capsys.readouterr().out


def test_help_lists_flower(capsys):
    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    text = capsys.readouterr().out
    assert "flower models (FLOWER" in text and "--e-max-column" in text and "--distance-prior" in text
    with pytest.raises(SystemExit):
        main(["flower", "infer", "--help"])
    text = capsys.readouterr().out
    for option in ("--method {fast,nuts}", "--num-warmup", "--zero-point", "--chunk-rows", "--dask N"):
        assert option in text, option


# ------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_matches_metrics_of_infer_output(model_dir, catalog, tmp_path, capsys):
    from jaxstars.models.flower.metrics import add_synthetic_reddening, reddening_metrics

    path, raw = catalog
    json_path = tmp_path / "metrics.json"
    # no retry of edge-flagged stars: it would compile the finer scan too (~40 s); it is checked in
    # test_flower_posterior.py, and the options are passed through to the posterior as for `infer`
    no_retry = ["--posterior-option", "retry_scan_factor=0"]
    argv = ["flower", "evaluate", "--model", str(model_dir), "--catalog", str(path), "--synthetic-ebv", "0,0.3"]
    assert main([*argv, *no_retry, "--out-json", str(json_path), "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(json_path.read_text()) == report
    assert report["synthetic_ebv"] == [0.0, 0.3] and report["n_stars"] == N_TEST
    assert report["bands"] == list(GAIA_PS1) and report["zero_point"] == ZP
    assert report["posterior_options"] == {"retry_scan_factor": 0}
    keys = {"n_rows", "n", "n_no_result", "n_flagged", "mean_residual", "median_residual", "rms_residual",
            "mean_posterior_std", "normalised_residual_std", "coverage_68", "coverage_95"}  # fmt: skip
    assert set(report["overall"]) == keys
    assert [e["synthetic_ebv"] for e in report["per_ebv"]] == [0.0, 0.3]
    for block in (report["overall"], *report["per_ebv"]):
        assert 0.0 <= block["coverage_68"] <= block["coverage_95"] <= 1.0
        assert block["mean_posterior_std"] > 0
    assert report["overall"]["n_rows"] == 2 * N_TEST and report["overall"]["n"] == 2 * (N_TEST - 3)
    assert {"n", "coverage_68", "coverage_95", "median_abs_fractional_error"} <= set(report["distance"])
    assert set(report["flag_counts"]) == set(FLAGS)

    # the same stars reddened by 0.3 through the helper, run through `flower infer`: the same metrics
    reddened = add_synthetic_reddening(FlowerModel.load(model_dir)[0], raw, 0.3)
    red_path = tmp_path / "reddened.parquet"
    write_catalog(reddened, red_path)
    out = tmp_path / "reddened_out.parquet"
    assert _flower_infer(model_dir, red_path, out, *no_retry) == 0
    out = Table.read(out)
    direct = reddening_metrics(
        _values(reddened, "true_ebv"),
        *(_values(out, f"ebv_{s}") for s in ("mean", "std", "q2_5", "q16", "q84", "q97_5")),
        flags=np.asarray(out["flags"]),
    )
    assert report["per_ebv"][1] == {"synthetic_ebv": 0.3, **json.loads(json.dumps(direct))}
    truth = _values(reddened, "true_ebv")
    inside = (truth >= _values(out, "ebv_q2_5")) & (truth <= _values(out, "ebv_q97_5"))
    assert report["per_ebv"][1]["coverage_95"] == pytest.approx(inside.sum() / (N_TEST - 3))

    # without truth and without --synthetic-ebv there is nothing to evaluate against
    no_truth = tmp_path / "no_truth.parquet"
    write_catalog(raw[[c for c in raw.colnames if c != "true_ebv"]], no_truth)
    assert main(["flower", "evaluate", "--model", str(model_dir), "--catalog", str(no_truth)]) == 2
    assert "--synthetic-ebv" in _error_line(capsys, "jaxstars flower evaluate")
    assert main([*argv[:-1], "0,abc"]) == 2
    assert "--synthetic-ebv" in _error_line(capsys, "jaxstars flower evaluate")


# ------------------------------------------------------------------------------------------------ metrics


def test_reddening_metrics_hand_computed():
    from jaxstars.models.flower.metrics import reddening_metrics

    truth = np.array([0.1, 0.2, 0.3, 0.4, np.nan, 0.0])
    mean = np.array([0.12, 0.15, 0.33, 0.40, 0.2, np.nan])
    std = np.array([0.02, 0.05, 0.01, 0.04, 0.1, np.nan])
    q2_5 = np.array([0.08, 0.05, 0.31, 0.32, 0.0, np.nan])
    q16 = np.array([0.10, 0.10, 0.32, 0.36, 0.1, np.nan])
    q84 = np.array([0.14, 0.20, 0.34, 0.44, 0.3, np.nan])
    q97_5 = np.array([0.16, 0.25, 0.35, 0.48, 0.4, np.nan])
    flags = np.array([0, 4, 0, 256, 0, 1])
    m = reddening_metrics(truth, mean, std, q2_5, q16, q84, q97_5, flags=flags)
    # rows 0-3 evaluated (row 4: unknown truth; row 5: no result); residuals 0.02, -0.05, 0.03, 0.00
    assert m["n_rows"] == 6 and m["n"] == 4 and m["n_no_result"] == 1 and m["n_flagged"] == 2
    assert m["mean_residual"] == pytest.approx(0.0)
    assert m["median_residual"] == pytest.approx(0.01)
    assert m["rms_residual"] == pytest.approx(np.sqrt((0.02**2 + 0.05**2 + 0.03**2) / 4))
    assert m["mean_posterior_std"] == pytest.approx(0.03)
    z = np.array([1.0, -1.0, 3.0, 0.0])
    assert m["normalised_residual_std"] == pytest.approx(np.std(z))
    # 68 %: 0.1 in [0.10, 0.14] yes, 0.2 in [0.10, 0.20] yes (closed), 0.3 in [0.32, 0.34] no, 0.4 yes → 3/4
    assert m["coverage_68"] == pytest.approx(0.75)
    # 95 %: 0.3 in [0.31, 0.35] no, the others yes → 3/4
    assert m["coverage_95"] == pytest.approx(0.75)
    empty = reddening_metrics([np.nan], [0.1], [0.1], [0.0], [0.0], [0.2], [0.2])
    assert empty["n"] == 0 and empty["mean_residual"] is None and empty["coverage_68"] is None
    assert empty["n_flagged"] is None
    with pytest.raises(ValueError):
        reddening_metrics([0.1, 0.2], [0.1], [0.1], [0.0], [0.0], [0.2], [0.2])


def test_posterior_options_are_parsed_to_the_config_types():
    from jaxstars.models.flower import FlowerPosteriorConfig
    from jaxstars.models.flower.processor import FlowerCommandError, parse_posterior_options

    parsed = parse_posterior_options(["e_max=0.6", "batch_size=8", "quantiles=0.1,0.5,0.9", "mag_limits=5,21"])
    assert parsed == {"e_max": 0.6, "batch_size": 8, "quantiles": (0.1, 0.5, 0.9), "mag_limits": (5.0, 21.0)}
    config = FlowerPosteriorConfig(**parsed)
    assert config.e_max == 0.6 and isinstance(config.batch_size, int)
    assert parse_posterior_options(["mag_limits=none"]) == {"mag_limits": None}
    assert parse_posterior_options(["n_e_scan=8", "photometric_start=false"]) == {
        "n_e_scan": 8,
        "photometric_start": False,
    }
    assert parse_posterior_options(None) == {}
    assert parse_posterior_options(["nuts_coordinates=paper"]) == {"nuts_coordinates": "paper"}
    bad_items = (["e_max"], ["no_such=1"], ["batch_size=1.5"], ["e_max=0.6", "e_min=0.7"], ["n_samples=3"],
                 ["n_e_scan=1"], ["n_d_scan=2.5"], ["n_e=none"], ["nuts_coordinates=raw"])  # fmt: skip
    for bad in bad_items:
        with pytest.raises(FlowerCommandError):
            parse_posterior_options(bad)


def test_distance_metrics_hand_computed():
    from jaxstars.models.flower.metrics import distance_metrics

    truth = np.array([1000.0, 2000.0, 500.0, np.nan])
    mean = np.array([1100.0, 1900.0, 500.0, 10.0])
    q50 = np.array([1050.0, 1800.0, 520.0, 10.0])
    m = distance_metrics(
        truth,
        mean,
        q50 - 200,  # q2_5
        q50 - 60,  # q16: [990, 1740, 460]
        q50,
        q50 + 60,  # q84: [1110, 1860, 580]
        q50 + 200,  # q97_5: [1250, 2000, 720]
    )
    assert m["n"] == 3
    assert m["median_abs_fractional_error"] == pytest.approx(0.05)  # [0.05, 0.1, 0.04]
    assert m["mean_fractional_residual"] == pytest.approx((0.1 - 0.05 + 0.0) / 3)
    assert m["coverage_68"] == pytest.approx(2 / 3)  # 2000 is outside [1740, 1860]
    assert m["coverage_95"] == pytest.approx(1.0)  # 2000 == q97_5 (closed interval)


def test_synthetic_reddening_follows_the_law():
    from jaxstars.astro.extinction import zhang_yuan_law
    from jaxstars.models.flower import FlowerFeatures
    from jaxstars.models.flower.metrics import add_synthetic_reddening

    features = FlowerFeatures(bands=GAIA_PS1)
    law = zhang_yuan_law(GAIA_PS1, argument="bp_rp0")
    rng = np.random.default_rng(0)
    n = 5
    absmag = {"G": rng.uniform(2, 8, n)}
    colour = np.array([0.5, 0.9, 1.4, 2.2, 0.7])  # intrinsic BP - RP
    absmag["BP"] = absmag["G"] + 0.4 * colour
    absmag["RP"] = absmag["BP"] - colour
    for k, band in enumerate(PS1):
        absmag[band] = absmag["G"] + rng.uniform(-1, 1, n) + 0.1 * k
    mu = 10.0
    table = Table()
    for band in BANDS:
        table[f"mag_{band}"] = absmag[band] + mu + rng.normal(0, 0.01, n)  # observed, zero extinction
        table[f"mag_err_{band}"] = np.full(n, 0.01)
        table[f"true_absmag_{band}"] = absmag[band]
        table[f"true_mag_{band}"] = absmag[band] + mu
    table["mag_W1"] = np.full(n, 12.0)  # not a model band: untouched
    table["mag_ps1_g"][3] = np.nan

    # truth colours: Δm = R(E, C_true) E
    e = 0.3
    out = add_synthetic_reddening(features, table, e)
    expected = e * np.asarray(law.coefficients(np.full(n, e), colour))
    for j, band in enumerate(BANDS):
        delta = _values(out, f"mag_{band}") - _values(table, f"mag_{band}")
        np.testing.assert_allclose(delta[np.isfinite(delta)], expected[np.isfinite(delta), j], rtol=1e-5)
        np.testing.assert_allclose(
            _values(out, f"true_mag_{band}") - _values(table, f"true_mag_{band}"), expected[:, j], rtol=1e-5
        )
    assert np.isnan(out["mag_ps1_g"][3])
    np.testing.assert_array_equal(out["mag_W1"], table["mag_W1"])
    np.testing.assert_array_equal(_values(out, "true_ebv"), np.full(n, e))
    np.testing.assert_array_equal(_values(out, "synthetic_ebv"), np.full(n, e))
    np.testing.assert_array_equal(_values(table, "mag_G"), _values(Table(table), "mag_G"))  # input unchanged

    # with a known E0 the law is non-linear in E: Δm = A(E0 + E) − A(E0)
    table["true_ebv"] = np.full(n, 0.2)
    out = add_synthetic_reddening(features, table, e)
    a = np.asarray(law.coefficients(np.full(n, 0.5), colour)) * 0.5
    a0 = np.asarray(law.coefficients(np.full(n, 0.2), colour)) * 0.2
    np.testing.assert_allclose(_values(out, "mag_RP") - _values(table, "mag_RP"), (a - a0)[:, 2], rtol=1e-5)
    np.testing.assert_allclose(_values(out, "true_ebv"), np.full(n, 0.5))
    assert not np.allclose(a - a0, expected)  # the difference matters at this precision

    # observed colours (no truth columns): the law's colour is the observed BP − RP (E0 = 0)
    plain = table[[c for c in table.colnames if not c.startswith("true_")]]
    out = add_synthetic_reddening(features, plain, e, intrinsic="observed")
    obs_colour = _values(plain, "mag_BP") - _values(plain, "mag_RP")
    expected_obs = e * np.asarray(law.coefficients(np.full(n, e), obs_colour))
    np.testing.assert_allclose(_values(out, "mag_G") - _values(plain, "mag_G"), expected_obs[:, 0], rtol=1e-5)
    # ... and a star without BP has no law colour: not reddened, truth unknown
    plain["mag_BP"][1] = np.nan
    out = add_synthetic_reddening(features, plain, e)
    assert (
        out["mag_G"][1] == plain["mag_G"][1] and np.isnan(out["true_ebv"][1]) and np.isfinite(out["true_ebv"][0])
    )
    with pytest.raises(ValueError):
        add_synthetic_reddening(features, plain, e, intrinsic="truth")


# ------------------------------------------------------------------------------------------------ slow


@pytest.mark.slow  # one NUTS compilation of the 8-band model (~30-60 s on 2 busy cores)
def test_nuts_method_flags_and_agrees_roughly(model_dir, catalog, inferred, tmp_path):
    _, raw = catalog
    subset = tmp_path / "twelve.parquet"
    rows = np.arange(12)
    write_catalog(raw[rows], subset)
    out = tmp_path / "nuts.parquet"
    nuts = ["--method", "nuts", "--num-warmup", "500", "--num-draws", "500", "--num-chains", "2"]
    nuts += ["--batch-size", "6"]
    assert _flower_infer(model_dir, subset, out, *nuts) == 0
    out = Table.read(out)
    for name in ("nuts_flags", "n_divergent", "accept_prob", "rhat", "ess_bulk"):
        assert name in out.colnames, name
    reference = inferred[0][rows]
    flags = np.asarray(out["flags"], np.int64)
    np.testing.assert_array_equal(flags & INPUT_BITS, np.asarray(reference["flags"]) & INPUT_BITS)
    no_result = np.isnan(_values(reference, "ebv_mean"))
    for name in SUMMARY:
        np.testing.assert_array_equal(np.isnan(_values(out, name)), no_result, err_msg=name)
    # rows without a possible result are not sampled: no sampler diagnostics, no nuts_problem flag
    assert not np.any(np.asarray(out["nuts_flags"])[no_result]) and not np.any(
        flags[no_result] & FLAGS["nuts_problem"]
    )
    assert np.all(np.isfinite(_values(out, "accept_prob"))[~no_result])
    # same posterior, two methods: the central 95 % intervals of E(B−V) and of the distance overlap for every star
    # (a plumbing check: the fast path's agreement with NUTS is validated in the model's own tests)
    for name in ("ebv", "distance"):
        lo = np.maximum(_values(out, f"{name}_q2_5"), _values(reference, f"{name}_q2_5"))[~no_result]
        hi = np.minimum(_values(out, f"{name}_q97_5"), _values(reference, f"{name}_q97_5"))[~no_result]
        ratio = (_values(out, f"{name}_std") / _values(reference, f"{name}_std"))[~no_result]
        print(f"{name}: NUTS / fast posterior std", np.round(ratio, 2))
        assert np.all(lo < hi), name


@pytest.mark.slow  # a subprocess compiles the fast path again (~20-30 s)
def test_sigkilled_run_resumes_to_the_uninterrupted_output(model_dir, simulated, tmp_path, capsys):
    from run_checks import kill_after_rows

    from jaxstars.catalog.runner import MANIFEST_NAME

    n, chunk_rows = 160, 16
    cat = simulated[:n].copy()
    cat.meta = dict(simulated.meta)
    cat["mag_G"][150] = np.nan
    path = tmp_path / "cat.parquet"
    write_catalog(cat, path)
    common = [str(path), "--chunk-rows", str(chunk_rows), "--samples", "2", "--quiet"]
    uninterrupted = tmp_path / "uninterrupted.parquet"
    assert main(["infer", str(model_dir), *common, "-o", str(uninterrupted)]) == 0

    out = tmp_path / "killed.parquet"
    argv = ["infer", str(model_dir), *common, "-o", str(out)]
    manifest = Path(f"{out}.parts") / MANIFEST_NAME
    done_before = kill_after_rows([sys.executable, "-m", "jaxstars.cli", *argv], manifest, chunk_rows, timeout=600)
    assert chunk_rows <= done_before < n and not out.exists()
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        f"({n - done_before} computed now, {done_before // chunk_rows} of {n // chunk_rows} chunks resumed"
        in printed
    )
    resumed, reference = Table.read(out), Table.read(uninterrupted)
    np.testing.assert_array_equal(resumed["source_id"], cat["source_id"])
    assert resumed.colnames == reference.colnames
    for name in resumed.colnames:
        np.testing.assert_array_equal(np.asarray(resumed[name]), np.asarray(reference[name]), err_msg=name)
    assert np.isnan(resumed["ebv_mean"][150]) and resumed["flags"][150] & FLAGS["missing_leading_band"]


@pytest.mark.slow  # two worker processes each load the model and compile the fast path
def test_dask_local_cluster_gives_the_same_output(model_dir, catalog, inferred, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "dask.parquet"
    assert _flower_infer(model_dir, catalog[0], out, "--chunk-rows", "20", "--dask", "2") == 0
    result, reference = Table.read(out), inferred[0]
    assert result.colnames == reference.colnames
    for name in result.colnames:
        np.testing.assert_array_equal(np.asarray(result[name]), np.asarray(reference[name]), err_msg=name)
