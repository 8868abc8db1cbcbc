"""``jaxstars infer MODEL CATALOG -o OUT``: the engine's front door, end to end with a saved CMD model.

One tiny colour–magnitude model (2 MAF blocks × 32 hidden, 2 epochs on 2000 simulated stars) is trained per module
and saved like ``jaxstars cmd train`` does. The checks are on what the command promises:

* the grid output is the same, column by column, as ``jaxstars cmd distances`` (same job), does not depend on
  ``--chunk-rows`` (random draws keyed by the global row id) and is byte-identical when the same command is run
  again with the same ``--seed``;
* ``--method nuts`` (vmapped per-star NUTS) samples the posterior the grid computes: medians agree within a few
  Monte-Carlo errors, the sampler diagnostics are written, bad rows are flagged as on the grid path and the output
  does not depend on ``--chunk-rows`` either (``slow``: two NUTS compilations, ~50 s on 2 busy cores);
* bad rows (NaN/sentinel magnitudes, non-positive parallax errors, missing parallaxes, no sky position) are kept,
  once each, flagged as documented in :data:`jaxstars.models.cmd.FLAGS` with NaN results where no result is
  possible, while negative parallaxes are valid data with finite posteriors; bad inputs end with a one-line error
  and exit code 2;
* a run killed with SIGKILL resumes, when the same command is run again, to the output of an uninterrupted run;
* ``--help`` shows the examples and every option group; ``--dask 2`` gives the same output (``slow``).

The expected flags are derived here from the raw catalog values with the rules of the documentation, not read back
from the code under test.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from run_checks import kill_after_rows

from jaxstars.astro.catalog_io import write_catalog, write_table
from jaxstars.astro.simulate import simulate
from jaxstars.catalog.runner import MANIFEST_NAME
from jaxstars.cli import main
from jaxstars.models.cmd import FLAGS

N_STARS = 300
N_KILL = 2000
SAMPLES = "6"  # posterior draws per star: makes the row-id keyed randomness visible in the output
SUMMARY_COLUMNS = (
    "distance_mean",
    "distance_std",
    "distance_q2_5",
    "distance_q16",
    "distance_q50",
    "distance_q84",
    "distance_q97_5",
)
NUTS_COLUMNS = ("nuts_flags", "n_divergent", "accept_prob", "rhat", "ess_bulk")
INPUT_BITS = FLAGS["missing_photometry"] | FLAGS["no_parallax"] | FLAGS["no_dust"]

# bad rows of the test catalog (row -> what is wrong with it)
BAD_ROWS = {
    3: "mag_BP NaN",
    4: "mag_G NaN",
    5: "mag_RP 99 (survey sentinel)",
    6: "negative mag_err_G",
    7: "negative parallax_error",
    8: "zero parallax_error",
    9: "parallax NaN",
    10: "parallax_error NaN",
    11: "parallax negative (valid)",
    12: "parallax strongly negative (valid)",
    13: "no sky position",
    14: "mag_BP NaN and parallax NaN",
}
NEGATIVE_PARALLAX_ROWS = (11, 12)
# 16 rows for the NUTS check: every kind of bad row plus good ones
NUTS_ROWS = np.array([*range(3, 15), 20, 21, 22, 23])


def _infer(model, catalog, out, *extra) -> int:
    """``jaxstars infer MODEL CATALOG -o OUT --quiet [extra...]``; returns the exit code."""
    return main(["infer", str(model), str(catalog), "-o", str(out), "--quiet", *extra])


def _error_line(capsys) -> str:
    """The single stderr line of a failed ``jaxstars infer`` (no traceback)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.count("\n") == 0, err
    assert err.startswith("jaxstars infer: error: "), err
    return err


def _assert_same_values(a: Table, b: Table, columns=None) -> None:
    columns = a.colnames if columns is None else columns
    for name in columns:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)
        assert a[name].unit == b[name].unit, name


def _expected_input_flags(raw: Table) -> np.ndarray:
    """The input bits of FLAGS from the raw values, by the documented rules (independent of the code)."""
    n = len(raw)
    flags = np.zeros(n, dtype=np.int64)
    missing = np.zeros(n, dtype=bool)
    for band in ("G", "BP", "RP"):
        mag = np.asarray(raw[f"mag_{band}"], dtype=float)
        err = np.asarray(raw[f"mag_err_{band}"], dtype=float)
        with np.errstate(invalid="ignore"):
            missing |= ~np.isfinite(mag) | (np.abs(mag) >= 90) | ~np.isfinite(err) | ~(err > 0)
    flags[missing] |= FLAGS["missing_photometry"]
    plx = np.asarray(raw["parallax"], dtype=float)
    plx_err = np.asarray(raw["parallax_error"], dtype=float)
    with np.errstate(invalid="ignore"):
        no_plx = ~np.isfinite(plx) | ~np.isfinite(plx_err) | ~(plx_err > 0)
    flags[no_plx] |= FLAGS["no_parallax"]
    no_pos = ~(np.isfinite(np.asarray(raw["l"], dtype=float)) & np.isfinite(np.asarray(raw["b"], dtype=float)))
    flags[no_pos] |= FLAGS["no_dust"]
    return flags


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("infer_cli")


@pytest.fixture(scope="module")
def model_dir(base):
    from jaxstars.models.cmd import default_flow, train_cmd

    cat = simulate(2000, mode="cranmer", key=0)
    trained = train_cmd(
        cat, epochs=2, batch_size=1024, key=0, progress=False, flow=default_flow(3, n_blocks=2, hidden=32)
    )
    out = base / "model"
    trained.model.save(out, trained.params)
    return out


@pytest.fixture(scope="module")
def simulated():
    """2000 simulated stars (the first :data:`N_STARS` are the bad-row catalog's, all of them the kill test's)."""
    return simulate(N_KILL, mode="cranmer", key=11)


@pytest.fixture(scope="module")
def catalog(base, simulated):
    """A simulated catalog with one bad row of every kind (:data:`BAD_ROWS`)."""
    cat = simulated[:N_STARS].copy()
    cat["mag_BP"][3] = np.nan
    cat["mag_G"][4] = np.nan
    cat["mag_RP"][5] = 99.0
    cat["mag_err_G"][6] = -0.01
    cat["parallax_error"][7] = -0.2
    cat["parallax_error"][8] = 0.0
    cat["parallax"][9] = np.nan
    cat["parallax_error"][10] = np.nan
    cat["parallax"][11] = -0.4
    cat["parallax"][12] = -3.0 * cat["parallax_error"][12]
    for name in ("l", "b", "ra", "dec"):
        cat[name][13] = np.nan
    cat["mag_BP"][14] = np.nan
    cat["parallax"][14] = np.nan
    path = base / "bad_rows.parquet"
    write_catalog(cat, path)
    return path, cat


@pytest.fixture(scope="module")
def grid(model_dir, catalog, base):
    """One grid run of the bad-row catalog (single chunk): ``(output table, output path, printed summary)``."""
    out = base / "grid.parquet"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert _infer(model_dir, catalog[0], out, "--samples", SAMPLES) == 0
    return Table.read(out), out, printed.getvalue()


# ------------------------------------------------------------------------------------------------ 1. grid


def test_grid_equals_cmd_distances_any_chunking_and_is_reproducible(model_dir, catalog, grid, tmp_path):
    path, _ = catalog
    reference, reference_path, _ = grid
    assert len(reference) == N_STARS and reference["distance_samples"].shape == (N_STARS, int(SAMPLES))

    # the same job through `jaxstars cmd distances`
    via_cmd = tmp_path / "cmd.parquet"
    assert (
        main(
            [
                "cmd",
                "distances",
                "--model",
                str(model_dir),
                "--catalog",
                str(path),
                "--out",
                str(via_cmd),
                "--samples",
                SAMPLES,
                "--quiet",
            ]
        )
        == 0
    )
    via_cmd = Table.read(via_cmd)
    assert via_cmd.colnames == reference.colnames
    _assert_same_values(via_cmd, reference)

    # 5 chunks (4 × 70 + 20) instead of one: draws are keyed by the global row id, not the position in a chunk
    chunked = tmp_path / "chunked.parquet"
    assert _infer(model_dir, path, chunked, "--samples", SAMPLES, "--chunk-rows", "70") == 0
    chunked = Table.read(chunked)
    assert chunked.colnames == reference.colnames
    _assert_same_values(chunked, reference)
    assert chunked.meta["jaxstars_run"]["chunk_rows"] == 70

    # the same command again: the same bytes (no time stamps or paths in the file)
    again = tmp_path / "again.parquet"
    assert _infer(model_dir, path, again, "--samples", SAMPLES) == 0
    assert again.read_bytes() == reference_path.read_bytes()

    # another seed changes the draws (so the comparisons above could fail) but not the grid summaries
    other_seed = tmp_path / "seed1.parquet"
    assert _infer(model_dir, path, other_seed, "--samples", SAMPLES, "--seed", "1") == 0
    other_seed = Table.read(other_seed)
    _assert_same_values(other_seed, reference, ["source_id", *SUMMARY_COLUMNS, "flags"])
    finite = np.isfinite(np.asarray(reference["distance_mean"]))
    a = np.asarray(other_seed["distance_samples"])[finite]
    b = np.asarray(reference["distance_samples"])[finite]
    assert np.mean(a != b) > 0.9


# ------------------------------------------------------------------------------------------------ 3. bad rows


def test_bad_rows_kept_once_flagged_with_nan_results(catalog, grid):
    _, raw = catalog
    out, out_path, printed = grid
    # every input row exactly once, in input order
    np.testing.assert_array_equal(out["source_id"], raw["source_id"])
    assert len(np.unique(out["source_id"])) == N_STARS

    flags = np.asarray(out["flags"], dtype=np.int64)
    expected = _expected_input_flags(raw)
    rows_with_input_flags = sorted(int(i) for i in np.flatnonzero(expected))
    assert rows_with_input_flags == sorted(BAD_ROWS.keys() - set(NEGATIVE_PARALLAX_ROWS))
    np.testing.assert_array_equal(flags & INPUT_BITS, expected)
    assert not np.any(flags & ~(INPUT_BITS | FLAGS["grid_edge"] | FLAGS["outside_coverage"]))
    names = [str(s) for s in out["flag_names"]]
    assert names == ["|".join(n for n, bit in FLAGS.items() if f & bit) for f in flags]

    # no result exactly where the photometry or the dust is missing; photometry-only posteriors elsewhere
    no_result = (expected & (FLAGS["missing_photometry"] | FLAGS["no_dust"])) != 0
    for name in (*SUMMARY_COLUMNS, "log_evidence", "reddening_mean"):
        values = np.asarray(out[name])
        np.testing.assert_array_equal(np.isnan(values), no_result, err_msg=name)
    assert np.all(np.isnan(np.asarray(out["distance_samples"])[no_result]))
    assert np.all(np.isfinite(np.asarray(out["distance_samples"])[~no_result]))
    for row in (7, 8, 9, 10):  # no usable parallax: still a (photometric) posterior
        assert flags[row] & INPUT_BITS == FLAGS["no_parallax"]
        assert np.isfinite(out["distance_q50"][row])
    # negative parallaxes are measurements, not errors: kept, unflagged, with a finite ordered posterior
    for row in NEGATIVE_PARALLAX_ROWS:
        assert raw["parallax"][row] < 0 and flags[row] & INPUT_BITS == 0
        q = [float(out[c][row]) for c in ("distance_q2_5", "distance_q16", "distance_q50", "distance_q84")]
        assert np.all(np.isfinite(q)) and np.all(np.diff(q) >= 0)

    # the summary printed at the end
    lines = printed.strip().splitlines()
    assert lines[0].startswith(f"jaxstars infer: {N_STARS} stars in ") and lines[0].endswith(f"wrote {out_path}")
    assert "grid posterior, prior flat, dust map cranmer_gaussian" in lines[0]
    n_result = int(np.count_nonzero(~no_result))
    assert lines[1] == f"  {n_result} with a result, {N_STARS - n_result} without (NaN results; see flags)"
    counts = {name: int(np.count_nonzero(flags & bit)) for name, bit in FLAGS.items()}
    assert counts["missing_photometry"] == 5 and counts["no_parallax"] == 5 and counts["no_dust"] == 1
    assert lines[2] == "  flags: " + ", ".join(f"{n} {c}" for n, c in counts.items() if c)


def test_input_errors_are_one_line_with_exit_code_2(model_dir, catalog, tmp_path, capsys):
    path, raw = catalog
    out = tmp_path / "o.parquet"
    # a catalog without BP photometry at all: a clear message before any work
    no_bp = tmp_path / "no_bp.parquet"
    write_table(raw[[c for c in raw.colnames if c not in ("mag_BP", "mag_err_BP")]], no_bp)
    assert _infer(model_dir, no_bp, out) == 2
    assert "lacks required column(s) mag_BP/mag_err_BP" in _error_line(capsys)
    # a truncated model file
    truncated = tmp_path / "truncated_model"
    truncated.mkdir()
    data = (model_dir / "model.npz").read_bytes()
    (truncated / "model.npz").write_bytes(data[: len(data) // 2])
    assert _infer(truncated, path, out) == 2
    assert "corrupt" in _error_line(capsys)
    # a folder that holds no jaxstars model: the known kinds are listed
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    assert _infer(not_a_model, path, out) == 2
    err = _error_line(capsys)
    assert "not a saved jaxstars model" in err and "known kinds: cmd (" in err
    # ... also when it holds some other .npz archive under the model's file name
    np.savez(not_a_model / "model.npz", weights=np.ones(3))
    assert _infer(not_a_model, path, out) == 2
    assert "known kinds: cmd (" in _error_line(capsys)
    # missing model, missing catalog
    assert _infer(tmp_path / "nowhere", path, out) == 2
    assert "model" in (err := _error_line(capsys)) and "not found" in err
    assert _infer(model_dir, tmp_path / "absent.parquet", out) == 2
    assert "absent.parquet not found" in _error_line(capsys)
    # contradictory or invalid options
    assert _infer(model_dir, path, out, "--dask", "1", "--scheduler", "tcp://nowhere:8786") == 2
    assert "--dask" in (err := _error_line(capsys)) and "--scheduler" in err
    assert _infer(model_dir, path, out, "--chunk-rows", "0") == 2
    assert "--chunk-rows" in _error_line(capsys)
    assert _infer(model_dir, path, out, "--prior", "edsd:-1") == 2
    assert "prior" in _error_line(capsys)
    assert _infer(model_dir, path, path) == 2
    assert "--out must differ" in _error_line(capsys)
    assert not out.exists() and not Path(f"{out}.parts").exists()


# ------------------------------------------------------------------------------------------------ 2. NUTS


@pytest.mark.slow  # ~15 s of NUTS compilation per run on 2 cores, two runs
def test_nuts_agrees_with_grid_flags_the_same_rows_and_ignores_chunking(model_dir, catalog, grid, tmp_path):
    _, raw = catalog
    grid_out = grid[0]
    subset = tmp_path / "sixteen.parquet"
    write_catalog(raw[NUTS_ROWS], subset)
    out = tmp_path / "nuts.parquet"
    nuts_args = ["--method", "nuts", "--num-warmup", "200", "--num-draws", "400", "--num-chains", "2"]
    nuts_args += ["--batch-size", "8", "--samples", "5"]
    assert _infer(model_dir, subset, out, *nuts_args) == 0
    nuts = Table.read(out)
    # per-star keys (row ids) and the same place in a batch of the same shape: chunking changes nothing
    chunked = tmp_path / "nuts_chunked.parquet"
    assert _infer(model_dir, subset, chunked, *nuts_args, "--chunk-rows", "5") == 0
    chunked = Table.read(chunked)
    assert chunked.colnames == nuts.colnames
    _assert_same_values(chunked, nuts)

    reference = grid_out[NUTS_ROWS]  # same rows of the grid run (flat prior, profile dust, same model)
    np.testing.assert_array_equal(nuts["source_id"], reference["source_id"])
    for name in NUTS_COLUMNS:
        assert name in nuts.colnames, name
    assert nuts["distance_samples"].shape == (len(NUTS_ROWS), 5)

    # bad rows: the same input flags and the same rows without a result
    flags = np.asarray(nuts["flags"], dtype=np.int64)
    np.testing.assert_array_equal(flags & INPUT_BITS, np.asarray(reference["flags"]) & INPUT_BITS)
    no_result = np.isnan(np.asarray(reference["distance_q50"]))
    assert 0 < no_result.sum() < len(NUTS_ROWS) - 8
    for name in SUMMARY_COLUMNS:
        np.testing.assert_array_equal(np.isnan(np.asarray(nuts[name])), no_result, err_msg=name)
    nuts_flags = np.asarray(nuts["nuts_flags"], dtype=np.int64)
    assert np.all(nuts_flags[no_result] & 64)  # invalid_input: not sampled
    assert not np.any(nuts_flags[~no_result] & 1)  # every valid star started

    # sampler diagnostics of the sampled stars
    ok = ~no_result
    ess = np.asarray(nuts["ess_bulk"])[ok]
    assert np.all(ess > 50)
    assert np.all(np.asarray(nuts["rhat"])[ok] < 1.1)
    accept = np.asarray(nuts["accept_prob"])[ok]
    assert np.all((accept > 0.3) & (accept <= 1.0))

    # medians agree with the grid within 4 Monte-Carlo errors of a median (≈ 1.25 σ / √ESS)
    mc_error = 1.2533 * np.asarray(nuts["distance_std"])[ok] / np.sqrt(ess)
    diff = np.asarray(nuts["distance_q50"])[ok] - np.asarray(reference["distance_q50"])[ok]
    z = diff / mc_error
    print("NUTS - grid medians in MC errors:", np.round(z, 2))
    assert np.all(np.abs(z) < 4.0)
    assert np.mean(z**2) < 4.0  # no systematic offset hiding below the per-star bound
    # and the spread is the grid's within a generous 30 % (σ itself is noisier than the median)
    ratio = np.asarray(nuts["distance_std"])[ok] / np.asarray(reference["distance_std"])[ok]
    assert np.all((ratio > 0.7) & (ratio < 1.3)), ratio


# ------------------------------------------------------------------------------------------------ 4. kill


@pytest.mark.slow  # ~30 s; the engine's kill-and-resume is checked by default in test_catalog_runner.py
def test_sigkilled_run_resumes_to_the_uninterrupted_output(model_dir, simulated, tmp_path, capsys):
    n, chunk_rows = N_KILL, 100
    cat = simulated.copy()
    cat["mag_BP"][1500] = np.nan  # a bad row in a chunk computed after the kill
    path = tmp_path / "cat2000.parquet"
    write_catalog(cat, path)
    common = [str(path), "--chunk-rows", str(chunk_rows), "--samples", "3", "--quiet"]

    uninterrupted = tmp_path / "uninterrupted.parquet"
    assert main(["infer", str(model_dir), *common, "-o", str(uninterrupted)]) == 0

    out = tmp_path / "killed.parquet"
    argv = ["infer", str(model_dir), *common, "-o", str(out)]
    manifest = Path(f"{out}.parts") / MANIFEST_NAME
    done_before = kill_after_rows([sys.executable, "-m", "jaxstars.cli", *argv], manifest, chunk_rows, timeout=300)
    assert chunk_rows <= done_before < n and not out.exists()
    assert list((out.parent / f"{out.name}.parts").glob("part-*.parquet"))

    capsys.readouterr()
    assert main(argv) == 0  # the same command again
    printed = capsys.readouterr().out
    n_resumed = done_before // chunk_rows
    assert f"({n - done_before} computed now, {n_resumed} of {n // chunk_rows} chunks resumed" in printed
    assert not Path(f"{out}.parts").exists()

    resumed, reference = Table.read(out), Table.read(uninterrupted)
    np.testing.assert_array_equal(resumed["source_id"], cat["source_id"])  # none missing, none twice
    assert resumed.colnames == reference.colnames
    _assert_same_values(resumed, reference)
    assert np.isnan(resumed["distance_q50"][1500]) and resumed["flags"][1500] & FLAGS["missing_photometry"]
    assert np.isfinite(np.asarray(resumed["distance_samples"])).sum() == 3 * (n - 1)

    # once complete, the same command has nothing left to do
    assert main(argv) == 0
    assert f"already holds these {n} stars" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ 5. help


def test_help_shows_examples_and_option_groups(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    for example in (
        "jaxstars infer cmd_model gaia.parquet -o distances.parquet",
        "--method nuts --num-chains 2 --samples 100",
        "--dask 4",
    ):
        assert example in text, example
    for group in ("scale-out (Dask):", "NUTS (--method nuts):", "cmd models (Cranmer et al."):
        assert group in text, group
    for option in (
        "--method {grid,nuts}",
        "--samples",
        "--seed",
        "--chunk-rows",
        "--dask N",
        "--scheduler ADDRESS",
        "--num-warmup",
        "--num-draws",
        "--num-chains",
        "--batch-size",
        "--prior",
        "--dust-mode",
        "--dust-map",
        "--reddening-column",
        "--overwrite",
    ):
        assert option in text, option
    assert "resumes when the same command is run again" in " ".join(text.split())
    # and `jaxstars --help` lists the command
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "infer" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ Dask


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_output(model_dir, catalog, grid, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "dask.parquet"
    assert _infer(model_dir, catalog[0], out, "--samples", SAMPLES, "--chunk-rows", "100", "--dask", "2") == 0
    result, reference = Table.read(out), grid[0]
    assert result.colnames == reference.colnames
    _assert_same_values(result, reference)
