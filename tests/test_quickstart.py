"""``jaxstars quickstart``: the main job end to end (simulate → train → catalog runner → evaluate), quick mode."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from jaxstars.cli import main
from jaxstars.quickstart import FILES, QUICK, RESULT_COLUMNS, make_chunk_processor

PNG = b"\x89PNG\r\n\x1a\n"


def _strict_json(text):
    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``jaxstars quickstart --quick`` run shared by the tests below (the expensive part: ~30–60 s)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("qs") / "quickstart-out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["quickstart", "--quick", "--out", str(out), "--seed", "3", "--no-progress"])
    return code, out, printed.getvalue()


def test_quick_run_writes_every_file(quick_run):
    code, out, printed = quick_run
    assert code == 0
    for rel in FILES.values():
        assert (out / rel).is_file(), rel
    for fig in (FILES["cmd_figure"], FILES["accuracy_figure"]):
        data = (out / fig).read_bytes()
        assert data[:8] == PNG and len(data) > 20_000
    assert "stars/s" in printed and "68% interval" in printed


def test_quick_run_tables_and_model(quick_run):
    from jaxstars.astro.simulate import read_simulation
    from jaxstars.models.cmd import CMDModel

    _, out, _ = quick_run
    train = read_simulation(out / FILES["train_catalog"])
    stars = read_simulation(out / FILES["stars_catalog"])
    assert len(train) == QUICK.n_train and len(stars) == QUICK.n_stars
    assert not np.array_equal(np.asarray(train["true_distance"][:50]), np.asarray(stars["true_distance"][:50]))
    res = pq.read_table(out / FILES["results"])
    assert res.num_rows == QUICK.n_stars
    # written by the catalog runner: row ids, kept source_id, then the results
    assert res.column_names == ["row_id", "source_id", *RESULT_COLUMNS]
    assert np.array_equal(res.column("row_id").to_numpy(), np.arange(QUICK.n_stars))
    assert np.array_equal(res.column("source_id").to_numpy(), np.asarray(stars["source_id"]))
    d = res.column("distance_mean").to_numpy()
    assert np.isfinite(d).all() and (d > 0).all()
    q16, q84 = res.column("distance_q16").to_numpy(), res.column("distance_q84").to_numpy()
    assert np.all(q16 < q84)
    # the reddening is recovered: the map's true E(g−r) at the true distance, to within the dust-map spread
    egr_true = np.asarray(stars["true_egr"], dtype=np.float64)
    egr = res.column("reddening_mean").to_numpy()
    assert np.median(np.abs(egr - egr_true)) < 0.25 * np.median(egr_true)

    # the saved model reproduces the written results for the first rows (save/load + processor round trip)
    model, params = CMDModel.load(out / "model")
    process = make_chunk_processor(model, params)
    again = process(stars[:40], np.arange(40))
    np.testing.assert_allclose(again["distance_mean"], d[:40], rtol=1e-4)
    np.testing.assert_array_equal(again["flags"], res.column("flags").to_numpy()[:40])


def test_quick_run_summary_against_truth(quick_run):
    from jaxstars.astro.simulate import read_simulation

    _, out, _ = quick_run
    summary = _strict_json((out / FILES["summary"]).read_text())
    assert summary["sizes"]["n_stars"] == QUICK.n_stars and summary["seed"] == 3
    assert set(summary["methods"]) == {"model", "edsd", "inverse_parallax"}
    assert sorted(summary["files"]) == sorted(FILES.values())
    assert summary["inference"]["n_rows"] == QUICK.n_stars and summary["inference"]["stars_per_second"] > 0
    assert summary["timings_s"]["total"] >= summary["timings_s"]["train"] > 0

    # recompute the low-SNR accuracy independently from the files: posterior means vs truth vs 1/ϖ
    stars = read_simulation(out / FILES["stars_catalog"])
    res = pq.read_table(out / FILES["results"])
    truth = np.asarray(stars["true_distance"], dtype=np.float64)
    plx = np.asarray(stars["parallax"], dtype=np.float64)
    snr = plx / np.asarray(stars["parallax_error"], dtype=np.float64)
    low = snr <= 3.0
    assert low.sum() > 200
    model_err = np.median(np.abs(res.column("distance_mean").to_numpy()[low] - truth[low]) / truth[low])
    inv = np.where(plx > 0, 1000.0 / np.where(plx > 0, plx, 1.0), np.inf)  # ϖ <= 0: infinitely wrong
    inv_err = np.median(np.abs(inv[low] - truth[low]) / truth[low])
    # the photometric model beats the inverse parallax by a wide margin where the parallax is poor
    assert model_err < 0.25 and model_err < 0.6 * inv_err

    rows = {row["label"]: row for row in summary["accuracy_by_snr"]["rows"]}
    first = rows["(-inf, 1]"]
    assert first["n"] == int(np.sum(snr <= 1.0))
    m = snr <= 1.0
    expected = np.median(np.abs(res.column("distance_mean").to_numpy()[m] - truth[m]) / truth[m])
    assert first["methods"]["model"]["median_abs_frac_error"] == pytest.approx(expected, rel=1e-6)
    for label in ("(-inf, 1]", "(1, 3]"):
        methods = rows[label]["methods"]
        assert methods["model"]["median_abs_frac_error"] < methods["inverse_parallax"]["median_abs_frac_error"]
    # roughly calibrated intervals even for the quick model
    assert 0.5 < summary["coverage"]["68"] < 0.85
    assert 0.8 < summary["coverage"]["95"] <= 1.0


def test_sizes_from_options(monkeypatch):
    import jaxstars.quickstart as qs

    seen = {}

    def fake(out, *, seed, sizes, progress):
        seen.update(out=out, seed=seed, sizes=sizes, progress=progress)
        return {}

    monkeypatch.setattr(qs, "run_quickstart", fake)
    assert main(["quickstart"]) == 0
    assert seen["out"] == "quickstart-out" and seen["sizes"] == qs.FULL and seen["progress"]
    assert qs.FULL.n_train == 20_000 and qs.FULL.n_stars == 3_000
    assert main(["quickstart", "--quick", "--epochs", "2", "--n-stars", "10", "--seed", "5", "--no-progress"]) == 0
    assert seen["sizes"].epochs == 2 and seen["sizes"].n_stars == 10 and seen["sizes"].n_train == qs.QUICK.n_train
    assert seen["seed"] == 5 and not seen["progress"]


def test_bad_options_fail_clearly(tmp_path, capsys):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    assert main(["quickstart", "--quick", "--out", str(not_a_dir)]) == 1
    assert "not a folder" in capsys.readouterr().out
    assert main(["quickstart", "--quick", "--n-stars", "0", "--out", str(tmp_path / "o")]) == 1
    assert "n-stars must be a positive integer" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()
