"""Evaluation metrics of the colour–magnitude model (Cranmer et al. Tables 1–2, §4.1) against known answers."""

import json
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from scipy import integrate, stats

from jaxstars.models.cmd.metrics import (
    accuracy_by_snr,
    cluster_distance_table,
    cmd_features_from_catalog,
    cmd_hellinger,
    cmd_recovery,
    edsd_distances,
    fit_two_gaussians,
    inverse_parallax_distances,
    snr_table,
)

INF = float("inf")


def strict_json(obj):
    """Round-trip through strict JSON (no NaN/inf allowed)."""
    return json.loads(json.dumps(obj, allow_nan=False))


# ------------------------------------------------------------------------------------------------------ EDSD


def edsd_reference(plx, err, length=1000.0, zp=0.0, d_min=1.0, d_max=1e5):
    """Mean, median, std and mode of the EDSD posterior by adaptive quadrature in float64 (independent of the grid)."""

    def log_unnorm(d):
        return 2.0 * np.log(d) - d / length - 0.5 * ((plx - zp - 1000.0 / d) / err) ** 2

    # locate the mode (root of the derivative, Bailer-Jones 2015's cubic in d) by bounded scalar search
    dd = np.geomspace(d_min, d_max, 200001)
    mode0 = dd[np.argmax(log_unnorm(dd))]
    from scipy.optimize import minimize_scalar

    lo, hi = max(d_min, mode0 * 0.999), min(d_max, mode0 * 1.001)
    mode = minimize_scalar(lambda d: -log_unnorm(d), bounds=(lo, hi), method="bounded", options={"xatol": 1e-10}).x
    peak = log_unnorm(mode)

    def dens(d):
        return np.exp(log_unnorm(d) - peak)

    pts = [p for p in (mode * f for f in (0.5, 0.9, 0.99, 1.01, 1.1, 2.0)) if d_min < p < d_max]

    def integral(f, a=d_min, b=d_max):
        inner = [p for p in pts if a < p < b]
        return integrate.quad(f, a, b, points=inner or None, limit=500, epsabs=0, epsrel=1e-11)[0]

    z = integral(dens)
    mean = integral(lambda d: d * dens(d)) / z
    var = integral(lambda d: (d - mean) ** 2 * dens(d)) / z
    from scipy.optimize import brentq

    median = brentq(lambda m: integral(dens, d_min, m) / z - 0.5, d_min * 1.0001, d_max * 0.9999, xtol=1e-10)
    return mean, median, np.sqrt(var), mode


CASES = [  # (parallax, error) from SNR 0 to 1000, negative parallax included
    (1.0, 0.1),
    (0.5, 0.5),
    (-0.3, 0.5),
    (0.2, 1.0),
    (5.0, 0.05),
    (0.01, 0.005),
    (10.0, 0.01),
]


def test_edsd_matches_quadrature():
    plx, err = np.array(CASES).T
    res = edsd_distances(plx, err)
    for i, (p, s) in enumerate(CASES):
        mean, median, std, mode = edsd_reference(p, s)
        assert res["mean"][i] == pytest.approx(mean, rel=2e-4), (p, s)
        assert res["median"][i] == pytest.approx(median, rel=2e-4), (p, s)
        assert res["std"][i] == pytest.approx(std, rel=3e-3), (p, s)
        assert res["mode"][i] == pytest.approx(mode, rel=2e-4), (p, s)
        assert res["edge_mass"][i] < 1e-6


def test_edsd_per_star_length_scale_and_zero_point():
    # a zero-point shifts the parallax; a per-star L changes the prior: compare with the quadrature reference
    plx = np.array([0.4, 0.4, 0.4])
    err = np.array([0.3, 0.3, 0.3])
    length = np.array([1000.0, 300.0, 1000.0])
    zp = np.array([0.0, 0.0, -0.1])
    res = edsd_distances(plx, err, length_scale=length, zero_point=zp)
    for i in range(3):
        mean, median, _, _ = edsd_reference(plx[i], err[i], length[i], zp[i])
        assert res["mean"][i] == pytest.approx(mean, rel=2e-4)
        assert res["median"][i] == pytest.approx(median, rel=2e-4)
    assert res["mean"][1] < res["mean"][0]  # shorter L pulls the distance in
    assert res["mean"][2] < res["mean"][0]  # zp < 0 means a larger true parallax


def test_edsd_limits():
    # high SNR: the posterior collapses onto 1/ϖ; tiny SNR: the prior, Gamma(3, L) (mean 3L, mode 2L)
    length = 1000.0
    res = edsd_distances(np.array([10.0, 2.0, 0.0, 0.3]), np.array([0.001, 0.0005, 1e4, 3e3]), length_scale=length)
    assert res["mean"][:2] == pytest.approx([100.0, 500.0], rel=1e-5)
    assert res["mode"][:2] == pytest.approx([100.0, 500.0], rel=1e-5)
    assert res["std"][:2] == pytest.approx([100.0 * 1e-4, 500.0 * 2.5e-4], rel=1e-2)  # σ_d ≈ d σ_ϖ/ϖ
    prior = stats.gamma(3, scale=length)
    assert res["mean"][2:] == pytest.approx([3 * length] * 2, rel=1e-3)
    assert res["std"][2:] == pytest.approx([prior.std()] * 2, rel=1e-3)
    assert res["median"][2:] == pytest.approx([prior.median()] * 2, rel=1e-3)
    assert res["mode"][2:] == pytest.approx([2 * length] * 2, rel=1e-3)


def test_edsd_invalid_rows_are_nan_and_chunks_reassemble():
    rng = np.random.default_rng(3)
    n = 300
    plx = rng.normal(0.5, 0.5, n)
    err = rng.uniform(0.05, 1.0, n)
    plx[[2, 9]] = np.nan
    err[5] = 0.0
    err[11] = -1.0
    err[270] = np.inf
    bad = [2, 5, 9, 11, 270]
    good = np.setdiff1d(np.arange(n), bad)
    res = edsd_distances(plx, err, chunk_size=256)  # two chunks, the second padded
    head = edsd_distances(plx[:256], err[:256])
    tail = edsd_distances(plx[256:], err[256:])
    for k in ("mean", "median", "std", "mode"):
        assert np.all(np.isnan(res[k][bad]))
        assert np.all(np.isfinite(res[k][good]))
        np.testing.assert_allclose(res[k], np.concatenate([head[k], tail[k]]), rtol=1e-5)
    assert edsd_distances([], [])["mean"].shape == (0,)


def test_edsd_flags_truncation_by_the_distance_range():
    # a star at ~50 kpc with a 20 kpc ceiling: the posterior piles up at d_max
    res = edsd_distances([0.02], [0.002], d_max=2e4)
    assert res["edge_mass"][0] > 1e-3
    assert res["mean"][0] <= 2e4


def test_inverse_parallax():
    d = inverse_parallax_distances([2.0, 0.0, -1.0, np.nan, 0.5], zero_point=-0.5)
    np.testing.assert_allclose(d, [400.0, 2000.0, np.nan, np.nan, 1000.0])
    assert np.isnan(inverse_parallax_distances([0.1], zero_point=0.1)[0])


# ------------------------------------------------------------------------------------------------------ Table 1


def test_snr_table_hand_counts():
    plx = np.array([0.05, 0.5, 5.0, 50.0, 500.0, 5000.0, -1.0, np.nan, 1.0, 2.0])
    err = np.ones(10)
    # model SNRs: 20, 2, 20, 0.5, 200, nan (failed), 5, 2, 1e4, 0.05
    dmean = np.array([2000.0, 200.0, 200.0, 5.0, 2e5, np.nan, 5e3, 4e4, 1e4, 0.5])
    dstd = np.array([100.0, 100.0, 10.0, 10.0, 1e3, 1.0, 1e3, 2e4, 1.0, 10.0])
    t = snr_table(plx, err, dmean, dstd)
    assert t["n"] == 10
    assert t["snr_labels"][0] == "(-inf, 0.1]"
    # Gaia SNR: -1, 0.05 → bin 0; 0.5, 1 → (0.1, 1] (bins are closed on the right); 2, 5 → 2; 50 → 3; 500 → 4;
    # 5000 above; nan undefined
    assert t["gaia_snr_fractions"] == pytest.approx([0.2, 0.2, 0.2, 0.1, 0.1])
    assert t["gaia_snr_above"] == pytest.approx(0.1)
    assert t["gaia_snr_undefined"] == pytest.approx(0.1)
    assert t["model_snr_fractions"] == pytest.approx([0.1, 0.1, 0.3, 0.2, 0.1])
    assert t["model_snr_above"] == pytest.approx(0.1)
    assert t["model_snr_undefined"] == pytest.approx(0.1)
    for who in ("gaia", "model"):
        total = sum(t[f"{who}_snr_fractions"]) + t[f"{who}_snr_below"]
        total += t[f"{who}_snr_above"] + t[f"{who}_snr_undefined"]
        assert total == pytest.approx(1.0)
    # distances: 0.5 outside; 5 → (1,10]; 200, 200 → (100,1000]; 2000, 5e3 → (1k,10k]; 1e4 → (1k,10k];
    # 4e4 → (10k,100k]; 2e5 → (100k,1M]; nan undefined
    assert t["distance_fractions"] == pytest.approx([0.1, 0.0, 0.2, 0.3, 0.1, 0.1])
    assert t["distance_outside_fraction"] == pytest.approx(0.1)
    assert t["distance_undefined_fraction"] == pytest.approx(0.1)
    assert sum(t["distance_fractions"]) + t["distance_outside_fraction"] + t["distance_undefined_fraction"] == (
        pytest.approx(1.0)
    )
    assert t["negative_fraction"] == pytest.approx(1 / 9)
    assert t["model_negative_fraction"] == 0.0
    # ϖ > 0 with both SNRs finite: rows 0, 1, 2, 3, 4, 8, 9 (row 5's model failed)
    pos = [0, 1, 2, 3, 4, 8, 9]
    g = plx[pos]
    m = dmean[pos] / dstd[pos]
    assert t["n_positive"] == 7
    assert t["mean_snr_improvement"] == pytest.approx(m.mean() / g.mean() - 1.0)
    assert t["median_snr_ratio"] == pytest.approx(np.median(m / g))
    assert t["n_negative"] == 1
    assert t["mean_model_snr_negative"] == pytest.approx(5.0)
    assert t["mean_distance_negative_pc"] == pytest.approx(5e3)
    assert strict_json(t)["gaia_snr_fractions"] == t["gaia_snr_fractions"]
    assert t["snr_bins"][0] == [None, 0.1]


def test_snr_table_model_improves_a_simulated_catalogue():
    # a "model" that is the truth with 10 % errors beats noisy parallaxes: fractions at low SNR drop
    rng = np.random.default_rng(0)
    d = rng.gamma(3, 1000.0, 5000)
    err = d / 1e4
    plx = 1000.0 / d + err * rng.normal(size=d.size)
    t = snr_table(plx, err, d, 0.1 * d)
    assert t["model_snr_fractions"] == pytest.approx([0, 0, 1, 0, 0])
    assert t["gaia_snr_fractions"][0] > 0.1
    assert t["mean_snr_improvement"] > 0
    assert t["negative_fraction"] == pytest.approx(np.mean(plx < 0))


# ------------------------------------------------------------------------------------------------------ accuracy


def test_accuracy_by_snr_constructed():
    truth = np.full(8, 1000.0)
    snr = np.array([0.5, 0.5, 0.5, 0.5, 2.0, 2.0, 20.0, np.nan])
    est = {
        "a": np.array([1100.0, 800.0, np.nan, 1300.0, 1010.0, 990.0, 1000.0, 1000.0]),
        "b": np.array([np.nan, np.nan, np.nan, 1000.0, 1000.0, 1200.0, np.nan, 500.0]),
    }
    out = accuracy_by_snr(truth, est, snr)
    assert out["methods"] == ["a", "b"]
    assert [r["label"] for r in out["rows"]] == ["(-inf, 1]", "(1, 3]", "(3, 5]", "(5, 10]", "(10, inf]", "all"]
    r0 = out["rows"][0]
    assert r0["n"] == 4
    a = r0["methods"]["a"]
    assert a["n_valid"] == 3 and a["nan_fraction"] == pytest.approx(0.25)
    assert a["median_abs_frac_error"] == pytest.approx(0.2)  # |0.1|, |−0.2|, |0.3|
    assert a["median_frac_bias"] == pytest.approx(0.1)
    assert a["median_abs_frac_error_all"] == pytest.approx(0.25)  # 0.1, 0.2, 0.3, inf
    b = r0["methods"]["b"]
    assert b["nan_fraction"] == pytest.approx(0.75)
    assert b["median_abs_frac_error"] == pytest.approx(0.0)
    assert b["median_abs_frac_error_all"] is None  # most of the bin failed: infinitely wrong
    r1 = out["rows"][1]["methods"]
    assert r1["a"]["median_abs_frac_error"] == pytest.approx(0.01)
    assert r1["a"]["median_frac_bias"] == pytest.approx(0.0, abs=1e-12)
    assert r1["b"]["median_frac_bias"] == pytest.approx(0.1)
    empty = out["rows"][2]
    assert empty["n"] == 0 and empty["methods"]["a"]["median_abs_frac_error"] is None
    assert out["rows"][4]["methods"]["b"]["nan_fraction"] == 1.0
    everything = out["rows"][-1]
    assert everything["n"] == 8  # the NaN-SNR star is only in "all"
    assert everything["methods"]["b"]["n_valid"] == 4
    strict_json(out)


def test_accuracy_by_snr_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        accuracy_by_snr([1.0, 2.0], {"a": [1.0]}, [1.0, 2.0])


# ------------------------------------------------------------------------------------------------------ Table 2


def mixture_loglik(x, fit):
    w, m, s = (np.array(fit[k]) for k in ("weights", "means", "stds"))
    return float(np.sum(np.log(np.sum(w * stats.norm.pdf(x[:, None], m, s), axis=1))))


def test_two_gaussians_recover_cluster_plus_field():
    rng = np.random.default_rng(7)
    # the field is generated first, so sorting by weight must move the cluster to component 0
    x = np.concatenate([rng.normal(1500.0, 400.0, 1500), rng.normal(840.0, 10.0, 3500), [np.nan, np.inf]])
    fit = fit_two_gaussians(x)
    assert fit["n"] == 5000
    assert fit["converged"]
    assert fit["weights"] == pytest.approx([0.7, 0.3], abs=0.02)
    assert fit["means"][0] == pytest.approx(840.0, abs=1.0)
    assert fit["stds"][0] == pytest.approx(10.0, rel=0.06)
    assert fit["means"][1] == pytest.approx(1500.0, abs=40.0)
    assert fit["stds"][1] == pytest.approx(400.0, rel=0.08)
    good = x[np.isfinite(x)]
    assert fit["log_likelihood"] == pytest.approx(mixture_loglik(good, fit), rel=1e-9)
    # a maximum-likelihood fit is at least as likely as the generating parameters
    truth = {"weights": [0.7, 0.3], "means": [840.0, 1500.0], "stds": [10.0, 400.0]}
    assert fit["log_likelihood"] >= mixture_loglik(good, truth) - 1e-6
    strict_json(fit)


def test_two_gaussians_separated_modes_and_determinism():
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(-2.0, 0.5, 4000), rng.normal(3.0, 1.0, 6000)])
    fit = fit_two_gaussians(x, key_or_seed=jax.random.PRNGKey(5))
    assert fit["weights"] == pytest.approx([0.6, 0.4], abs=0.015)
    assert fit["means"] == pytest.approx([3.0, -2.0], abs=0.05)
    assert fit["stds"] == pytest.approx([1.0, 0.5], rel=0.05)
    assert fit_two_gaussians(x, key_or_seed=3) == fit_two_gaussians(x, key_or_seed=3)


def test_two_gaussians_degenerate_inputs():
    for x in ([], [1.0, np.nan], [2.0, 2.0, 2.0, 2.0]):
        fit = fit_two_gaussians(x)
        assert fit["means"] == [None, None] and fit["log_likelihood"] is None
        strict_json(fit)


def test_cluster_distance_table_members_and_cuts():
    rng = np.random.default_rng(2)
    n = 3000
    member = rng.random(n) < 0.5
    snr = rng.uniform(0.0, 60.0, n)
    truth = 840.0
    # method "good": members' estimates scatter 2 % around the truth plus 15 % broad outliers (the second mixture
    # component); "biased": +50 pc; non-members far away (would ruin the fit if used)
    outlier = rng.random(n) < 0.15
    core = truth * (1 + 0.02 * rng.normal(size=n))
    field = rng.normal(3000.0, 1000.0, n)
    good = np.where(member, np.where(outlier, rng.normal(1200.0, 500.0, n), core), field)
    biased = good + np.where(member, 50.0, 0.0)
    low = member & (snr < 15)
    biased[low & (rng.random(n) < 0.2)] = np.nan
    table = cluster_distance_table(member, truth, {"good": good, "biased": biased}, snr)
    assert table["truth"] == truth and table["snr_cuts"] == [15.0, 50.0]
    rows = {(r["method"], r["snr_cut"]): r for r in table["rows"]}
    assert len(rows) == 4
    for cut in (15.0, 50.0):
        r = rows[("good", cut)]
        assert r["n"] == int(np.sum(member & (snr < cut)))
        assert r["n_failed"] == 0
        assert r["abs_error"] < 3.0
        assert r["median_abs_error"] < 3.0
    r = rows[("biased", 15.0)]
    assert r["n_failed"] == int(np.sum(np.isnan(biased[member & (snr < 15)])))
    assert r["n_failed"] > 0
    assert r["abs_error"] == pytest.approx(50.0, abs=5.0)
    assert r["spread"] == pytest.approx(0.02 * truth, rel=0.25)
    assert rows[("biased", 50.0)]["abs_error"] == pytest.approx(50.0, abs=5.0)
    # without a membership mask (a cone, as in the paper) the cluster is the narrow component
    everyone = cluster_distance_table(None, truth, {"good": good}, snr, snr_cuts=(50,), pick="narrow")
    assert everyone["rows"][0]["n"] == int(np.sum(snr < 50))
    assert everyone["rows"][0]["abs_error"] < 5.0
    assert everyone["rows"][0]["spread"] < 50.0
    with pytest.raises(ValueError):
        cluster_distance_table(None, truth, {"good": good}, snr, pick="widest")
    strict_json(table)


# ------------------------------------------------------------------------------------------------------ §4.1 CMD


def test_hellinger_known_values():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(40000, 2))
    b = rng.normal(size=(40000, 2))
    assert cmd_hellinger(a, a) == 0.0
    same = cmd_hellinger(a, b, bins=20)
    assert 0.0 < same < 0.08
    assert cmd_hellinger(a, b + [20.0, 0.0]) == 1.0
    # two cells: all of p in cell 0, half of q in each → H = sqrt(1 − sqrt(1/2))
    p = np.array([[0.25, 0.5]] * 10)
    q = np.array([[0.25, 0.5]] * 5 + [[0.75, 0.5]] * 5)
    assert cmd_hellinger(p, q, bins=[2, 1], ranges=[[0, 1], [0, 1]]) == pytest.approx(np.sqrt(1 - np.sqrt(0.5)))
    # points outside explicit ranges share an overflow cell (not dropped): disjoint from in-range points
    assert cmd_hellinger(p, p + 5.0, bins=4, ranges=[[0, 1], [0, 1]]) == 1.0
    half_out = np.vstack([p[:5], p[:5] + 5.0])
    other_out = np.vstack([p[:5], p[:5] - 7.0])
    assert cmd_hellinger(half_out, other_out, bins=4, ranges=[[0, 1], [0, 1]]) == pytest.approx(0.0, abs=1e-7)
    assert cmd_hellinger(half_out, p, bins=4, ranges=[[0, 1], [0, 1]]) == pytest.approx(np.sqrt(1 - np.sqrt(0.5)))
    # a shifted sample is farther than a resampled one; NaN rows are ignored
    far = cmd_hellinger(a, b + [0.5, 0.0], bins=20)
    assert far > 3 * same
    with_nan = np.vstack([a, [[np.nan, 0.0]]])
    assert cmd_hellinger(with_nan, a) == 0.0
    assert np.isnan(cmd_hellinger(np.empty((0, 2)), a))
    with pytest.raises(ValueError):
        cmd_hellinger(np.zeros((3, 3)), a)


def line_cmd(rng, n):
    """Cranmer §4.1-like truth features (M_G, BP−RP, BP−G): a line plus Gaussian colour scatter."""
    m_g = rng.uniform(3.35, 11.5, n)
    bp_rp = -0.421 + 0.2823 * m_g + 0.1 * rng.normal(size=n)
    bp_g = -0.4207 + 0.1699 * m_g + 0.1 * rng.normal(size=n)
    return np.column_stack([m_g, bp_rp, bp_g])


class TruthFlow:
    """Stands in for a perfectly trained flow: samples the truth distribution in standardised units."""

    def __init__(self, shift, scale, offset=0.0):
        self.shift, self.scale, self.offset = np.asarray(shift), np.asarray(scale), offset

    def sample(self, params, key, shape):
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        f = line_cmd(np.random.default_rng(seed), shape[0])
        f[:, 0] += self.offset
        return (f - self.shift) / self.scale


def test_cmd_recovery_orders_recovered_noisy_and_floor():
    rng = np.random.default_rng(5)
    truth = line_cmd(rng, 20000)
    noisy = truth.copy()
    noisy[:, 0] += 5.0 * np.log10(np.abs(1.0 + 0.5 * rng.normal(size=truth.shape[0])))  # 1/ϖ-like M_G noise
    noisy[::10, 0] = np.nan  # "negative parallaxes"
    shift, scale = truth.mean(axis=0), truth.std(axis=0)
    good = SimpleNamespace(flow=TruthFlow(shift, scale), shift=tuple(shift), scale=tuple(scale))
    res = cmd_recovery(good, None, truth, noisy, key=0, bins=40)
    assert res["n_reference"] == res["n_floor"] == res["n_flow"] == 10000
    assert res["n_noisy_dropped"] == pytest.approx(1000, rel=0.1)
    assert res["hellinger_noisy"] > 3 * res["hellinger_recovered"]
    assert res["recovered_over_floor"] < 1.3
    assert 0 < res["hellinger_floor"] < 0.2
    # a flow that learned the wrong CMD (M_G off by 1 mag) is far from the truth
    bad = SimpleNamespace(flow=TruthFlow(shift, scale, offset=1.0), shift=tuple(shift), scale=tuple(scale))
    wrong = cmd_recovery(bad, None, truth, noisy, key=0, bins=40)
    assert wrong["hellinger_recovered"] > 3 * res["hellinger_recovered"]
    assert cmd_recovery(good, None, truth, noisy, key=0, bins=40) == res
    strict_json(res)


def test_cmd_recovery_with_a_real_cmd_model():
    # an identity flow samples N(0, 1) in standardised units, i.e. N(shift, scale²) in magnitudes: against a
    # Gaussian truth with those moments it must sit at the floor, against the line CMD it must be far off
    from jaxstars.flows import Flow, Permute
    from jaxstars.models.cmd import CMDModel, gaia_cmd_features

    shift, scale = (7.0, 1.6, 0.8), (2.0, 0.6, 0.4)
    model = CMDModel(gaia_cmd_features(), Flow(Permute(dim=3, permutation=(0, 1, 2))), shift, scale)
    params = model.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(6)
    gaussian = np.asarray(shift) + np.asarray(scale) * rng.normal(size=(8000, 3))
    res = cmd_recovery(model, params, gaussian, gaussian[::-1], key=jax.random.PRNGKey(1), bins=30)
    assert res["n_flow"] == 4000 and res["n_flow_dropped"] == 0
    assert res["n_noisy"] == 4000 and res["n_noisy_dropped"] == 0
    assert res["hellinger_recovered"] < 1.3 * res["hellinger_floor"]
    assert res["hellinger_noisy"] < 1.3 * res["hellinger_floor"]  # the "noisy" set is the truth, reordered
    line = line_cmd(rng, 8000)
    off = cmd_recovery(model, params, line, line, key=1, n_samples=3000, bins=30)
    assert off["n_flow"] == 3000
    assert off["hellinger_recovered"] > 3 * off["hellinger_floor"]
    assert off["hellinger_noisy"] == off["hellinger_floor"]  # row-aligned: noisy rows of half A == truth half A
    strict_json(res)


def test_cmd_features_from_catalog():
    from astropy.table import Table

    t = Table(
        {
            "true_absmag_G": [5.0, 6.0],
            "true_absmag_BP": [5.5, 6.8],
            "true_absmag_RP": [4.4, 5.3],
            "mag_G": [15.0, 16.0],
            "mag_BP": [15.6, 16.9],
            "mag_RP": [14.3, 15.2],
            "parallax": [1.0, -0.5],
        }
    )
    truth = cmd_features_from_catalog(t)
    np.testing.assert_allclose(truth, [[5.0, 1.1, 0.5], [6.0, 1.5, 0.8]])
    noisy = cmd_features_from_catalog(t, "noisy")
    np.testing.assert_allclose(noisy[0], [15.0 - 5.0 * np.log10(100.0), 1.3, 0.6])
    assert np.isnan(noisy[1, 0]) and noisy[1, 1] == pytest.approx(1.7)
    with pytest.raises(ValueError):
        cmd_features_from_catalog(t, "other")


# ------------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_cranmer_simulation_end_to_end():
    """Train a small model on the §4.1 simulation; it must beat the EDSD and 1/ϖ baselines and recover the CMD."""
    from jaxstars.astro.simulate import simulate
    from jaxstars.models.cmd import default_flow, distance_posteriors, prepare_stars, train_cmd

    cat = simulate(22000, mode="cranmer", key=0)
    train, test = cat[:20000], cat[20000:]
    tr = train_cmd(
        train, epochs=15, batch_size=1024, key=0, progress=False, flow=default_flow(3, n_blocks=5, hidden=64)
    )
    stars = prepare_stars(tr.model.features, test)
    res = distance_posteriors(tr.model, tr.params, stars, key=0)
    plx, err = np.asarray(test["parallax"]), np.asarray(test["parallax_error"])
    truth = np.asarray(test["true_distance"])
    edsd = edsd_distances(plx, err, length_scale=1000.0)
    acc = accuracy_by_snr(
        truth,
        {"model": res["distance_mean"], "edsd": edsd["mean"], "inverse": inverse_parallax_distances(plx)},
        plx / err,
    )
    low = acc["rows"][0]["methods"]  # SNR <= 1
    assert low["model"]["median_abs_frac_error"] < low["edsd"]["median_abs_frac_error"]
    assert low["model"]["median_abs_frac_error"] < low["inverse"]["median_abs_frac_error_all"] or (
        low["inverse"]["median_abs_frac_error_all"] is None
    )
    table = snr_table(plx, err, res["distance_mean"], res["distance_std"])
    assert table["mean_snr_improvement"] > 0
    rec = cmd_recovery(
        tr.model,
        tr.params,
        cmd_features_from_catalog(train),
        cmd_features_from_catalog(train, "noisy"),
        key=0,
        bins=40,
    )
    # measured (5x64 MAF, 15 epochs, 40 bins): recovered 0.26, noisy 0.53, floor 0.11
    assert rec["hellinger_floor"] < rec["hellinger_recovered"] < 0.7 * rec["hellinger_noisy"]
    json.dumps({"accuracy": acc, "table": table, "recovery": rec}, allow_nan=False)
