"""Green et al. (2021) reproduced on the release's 8,000-star sample: train, validate, compare, infer.

Run: ``python -m examples.green_stellar [--quick] [--coverage-stars 200] [--real-stars 100]``; the two halves can
run as two processes (``--skip-coverage`` and ``--coverage-only``): each merges its keys into the same JSON file.

Writes ``docs/results/stellar.json`` and ``docs/figures/stellar_*.png``:

* training on a fixed 70/20/10 split (§4): train vs validation loss per iteration, test-set ⟨χ²/dof⟩ with χ²/dof > 5
  excluded (paper: 0.87), the same metrics for the released network on the same test stars;
* residual-score percentiles per colour vs Teff, logg, [Fe/H] and E (Eq. 18, Fig. 12);
* ΔR/R vs Teff (Eq. 17, Fig. 10) for the trained and the released networks;
* RMS difference per colour between the trained and released networks over the test stars' θ;
* photometric posteriors (Eq. 19): 68 % / 95 % coverage on stars simulated from the model with known truth, and
  Teff / logg recovered for real test stars from their photometry + parallax vs the spectroscopic labels.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxstars.cli_support import jsonable
from jaxstars.data import data_file
from jaxstars.inference import NUTS_FLAGS
from jaxstars.models.stellar import (
    StellarPrior,
    StellarTrainConfig,
    colour_names,
    delta_r_over_r,
    draw_log_density,
    evaluate_stellar,
    fit_theta_mixture,
    model_difference,
    posterior_data,
    prepare_stars,
    prune_chains,
    read_release_catalog,
    released_model,
    scores,
    simulate_photometry,
    stellar_posteriors,
    summarise_posteriors,
    train_stellar,
)
from jaxstars.models.stellar.posterior import DEFAULT_NUTS, PRUNE_THRESHOLD

ROOT = Path(__file__).resolve().parents[1]
FIGS = ROOT / "docs" / "figures"
RESULT = ROOT / "docs" / "results" / "stellar.json"
FIG12_COLOURS = ("g-G_DR2", "r-G_DR2", "J-G_DR2", "W1-G_DR2")


def binned_percentiles(x, z, bins):
    """16/50/84th percentiles of ``z`` in bins of ``x`` (≥ 10 stars per bin)."""
    out = []
    for lo, hi in itertools.pairwise(bins):
        sel = (x >= lo) & (x < hi) & np.isfinite(z)
        if sel.sum() >= 10:
            out.append([0.5 * (lo + hi), *np.percentile(z[sel], [16, 50, 84]).tolist(), int(sel.sum())])
    return out


def figure_scores(path, theta, E, score, names):
    from matplotlib.figure import Figure

    axes_x = [("Teff [K]", theta[:, 0], np.linspace(3800, 8000, 15)), ("logg", theta[:, 1], np.linspace(0.5, 5, 12)),
              ("[Fe/H]", theta[:, 2], np.linspace(-2, 0.6, 12)), ("E", E, np.linspace(0, 1.2, 12))]  # fmt: skip
    fig = Figure(figsize=(12, 2.4 * len(FIG12_COLOURS)))
    table = {}
    for i, colour in enumerate(FIG12_COLOURS):
        j = names.index(colour)
        table[colour] = {}
        for k, (label, x, bins) in enumerate(axes_x):
            ax = fig.add_subplot(len(FIG12_COLOURS), 4, 4 * i + k + 1)
            z = score[:, j]
            ok = np.isfinite(z)
            ax.scatter(x[ok], z[ok], s=1, c="0.6", rasterized=True)
            rows = np.array(binned_percentiles(x, z, bins))
            table[colour][label] = rows.tolist()
            if len(rows):
                for q in (1, 2, 3):
                    ax.plot(rows[:, 0], rows[:, q], "b-" if q == 2 else "b--")
            ax.axhline(0, color="k", lw=0.5)
            ax.set_ylim(-4, 4)
            if k == 0:
                ax.set_ylabel(f"Δ({colour})/σ")
            if i == len(FIG12_COLOURS) - 1:
                ax.set_xlabel(label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return table


def figure_delta_r(path, theta, dr_trained, dr_released, bands):
    from matplotlib.figure import Figure

    show = ["G_DR2", "BP_DR2", "RP_DR2", "g", "r", "i", "z", "J"]
    fig = Figure(figsize=(12, 5))
    for k, band in enumerate(show):
        j = bands.index(band)
        ax = fig.add_subplot(2, 4, k + 1)
        sc = ax.scatter(theta[:, 0], dr_trained[:, j], s=2, c=theta[:, 1], cmap="viridis", vmin=1, vmax=5)
        ax.scatter(theta[:, 0], dr_released[:, j], s=1, c="r", alpha=0.3, label="released")
        ax.set_title(band)
        ax.set_xlabel("Teff [K]")
        if k % 4 == 0:
            ax.set_ylabel("ΔR/R")
    fig.colorbar(sc, ax=fig.axes, label="logg")
    fig.savefig(path, dpi=100)


def figure_loss(path, history):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    it = [h["iteration"] for h in history]
    ax.semilogy(it, [h["train_loss"] for h in history], "o-", label="training")
    ax.semilogy(it, [h["val_loss"] for h in history], "s-", label="validation")
    ax.set_xlabel("iteration (25 epochs each)")
    ax.set_ylabel("loss (Eq. 15)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def coverage(summary, truth):
    out = {}
    for name, x in truth.items():
        in68 = (x > summary[f"{name}_q16"]) & (x < summary[f"{name}_q84"])
        in95 = (x > summary[f"{name}_q2_5"]) & (x < summary[f"{name}_q97_5"])
        out[name] = {"68": float(np.mean(in68)), "95": float(np.mean(in95))}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 iterations × 5 epochs, 24 posterior stars")
    parser.add_argument("--coverage-stars", type=int, default=200)
    parser.add_argument("--real-stars", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out-model", default=None, help="also save the trained model to this folder")
    parser.add_argument("--skip-coverage", action="store_true", help="skip the simulated-star coverage part")
    parser.add_argument("--coverage-only", action="store_true", help="only the simulated-star coverage part")
    args = parser.parse_args(argv)
    if args.coverage_only:
        out = {"simulated_posteriors": simulated_coverage(args), "command_coverage": _command(argv)}
        _merge_write(out)
        print(json.dumps(jsonable(out["simulated_posteriors"]["coverage"]), indent=1))
        return
    FIGS.mkdir(parents=True, exist_ok=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)

    table = read_release_catalog(data_file("green2020", "green2020_sample.h5"))
    stars = prepare_stars(table)
    released = released_model()
    config = StellarTrainConfig(
        n_iterations=3 if args.quick else 20, epochs=5 if args.quick else 25, batch_size=args.batch_size
    )
    t0 = time.perf_counter()
    result = train_stellar(
        stars,
        config,
        progress=lambda h: print(f"iter {h['iteration']}: {h['train_loss']:.3f} / {h['val_loss']:.3f}"),
    )
    train_seconds = time.perf_counter() - t0
    model = result.model
    if args.out_model:
        model.save(args.out_model)
    test = result.split["test"]
    metrics = evaluate_stellar(model, stars, test)
    metrics_released = evaluate_stellar(released, stars, test)
    sub = stars.subset(test)
    sc = scores(model, sub)
    names = colour_names(stars.bands)
    valid = sub.valid & (sc["chi2"] / np.maximum(sc["dof"], 1) <= 5)
    fig12 = figure_scores(FIGS / "stellar_scores.png", sub.theta[valid], sc["E"][valid], sc["score"][valid], names)
    dr_t = delta_r_over_r(model, sub.theta[sub.valid])
    dr_r = delta_r_over_r(released, sub.theta[sub.valid], theta_ref=model.network.theta_median)
    figure_delta_r(FIGS / "stellar_delta_r.png", sub.theta[sub.valid], dr_t, dr_r, list(stars.bands))
    figure_loss(FIGS / "stellar_loss.png", result.history)
    diff = model_difference(model, released, sub.theta[sub.valid])
    dr_summary = {
        b: {"p16": float(np.percentile(dr_t[:, j], 16)), "p84": float(np.percentile(dr_t[:, j], 84)),
            "released_p16": float(np.percentile(dr_r[:, j], 16)), "released_p84": float(np.percentile(dr_r[:, j], 84))}
        for j, b in enumerate(stars.bands)
    }  # fmt: skip

    # real stars: μ over the whole default range (nearby stars have μ < 6), E with the star's own estimate as prior
    prior = StellarPrior(theta_mixture=fit_theta_mixture(table["theta"], 6), E_max=3.0)
    nuts = dataclasses.replace(DEFAULT_NUTS, batch_size=args.batch_size)

    # --- inference: real held-out stars vs spectroscopic labels ----------------------------------------------
    n_real = 24 if args.quick else args.real_stars
    rows = test[sub.valid][:n_real]
    real = stars.subset(rows)
    real_res = {}
    for label, m in (("released", released), ("trained", model)):
        r = stellar_posteriors(m, real, 3, prior=prior, config=nuts, use_E_prior=True)
        s = summarise_posteriors(r, m)
        ok = (r.flags & 1 == 0) & np.isfinite(s["teff_q50"])
        d_teff = s["teff_q50"][ok] - real.theta[ok, 0]
        d_logg = s["logg_q50"][ok] - real.theta[ok, 1]
        d_feh = s["feh_q50"][ok] - real.theta[ok, 2]

        def robust(x):
            return float(1.4826 * np.median(np.abs(x - np.median(x))))

        real_res[label] = {
            "n": int(ok.sum()),
            "teff_bias": float(np.median(d_teff)), "teff_scatter_mad": robust(d_teff),
            "teff_rms": float(np.sqrt(np.mean(d_teff**2))),
            "logg_bias": float(np.median(d_logg)), "logg_scatter_mad": robust(d_logg),
            "logg_rms": float(np.sqrt(np.mean(d_logg**2))),
            "feh_bias": float(np.median(d_feh)), "feh_scatter_mad": robust(d_feh),
            "flagged": int(np.sum(r.flags != 0)),
            "init_failed": int(np.sum(r.flags & 1 != 0)),
            "flag_counts": {name: int(np.sum(r.flags & bit != 0)) for name, bit in NUTS_FLAGS.items()},
            "nuts": nuts.__dict__,
        }  # fmt: skip

    out = {
        "command": _command(argv),
        "config": config.__dict__,
        "training_seconds": train_seconds,
        "split": {k: len(v) for k, v in result.split.items()},
        "history": [{k: v for k, v in h.items() if not k.startswith("epoch_")} for h in result.history],
        "test_metrics": metrics,
        "test_metrics_released": metrics_released,
        "paper": {"mean_chi2_dof_test": 0.87, "train_loss": 0.501, "val_loss": 0.502},
        "trained_vs_released": diff,
        "delta_r_over_r": dr_summary,
        "fig12_percentiles": fig12,
        "real_posteriors": real_res,
    }
    if not args.skip_coverage:
        out["simulated_posteriors"] = simulated_coverage(args)
    _merge_write(out)
    print(json.dumps(jsonable({"test": metrics["mean_chi2_dof"], "released": metrics_released["mean_chi2_dof"],
                               "coverage": out.get("simulated_posteriors", {}).get("coverage"),
                               "real": real_res}), indent=1))  # fmt: skip


def _command(argv):
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python -m examples.green_stellar", *args])


def _merge_write(out):
    """Update ``RESULT`` with the keys of ``out`` (the two halves of a split run write the same file)."""
    old = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    old.update(jsonable(out))
    RESULT.write_text(json.dumps(old, indent=1))


def simulated_coverage(args) -> dict:
    """68 % / 95 % coverage of the Eq. 19 posteriors on stars simulated from the released network with truths
    drawn from exactly the inference prior (θ mixture, uniform μ and E) and the likelihood's noise model."""
    released = released_model()
    table = read_release_catalog(data_file("green2020", "green2020_sample.h5"))
    n_sim = 24 if args.quick else args.coverage_stars
    prior = StellarPrior(theta_mixture=fit_theta_mixture(table["theta"], 6), mu_low=6.0, mu_high=13.0, E_max=1.5)
    keys = jax.random.split(jax.random.PRNGKey(11), 4)
    theta_sim = np.asarray(
        released.network.denormalise(prior.theta_distribution(released.network).sample(keys[0], (n_sim,)))
    )
    mu_sim = np.asarray(jax.random.uniform(keys[1], (n_sim,), minval=prior.mu_low, maxval=prior.mu_high))
    E_sim = np.asarray(jax.random.uniform(keys[2], (n_sim,), minval=0.0, maxval=prior.E_max))
    sim = simulate_photometry(released, theta_sim, mu_sim, E_sim, keys[3], mag_err=0.03, parallax_err=0.05,
                              missing_fraction=0.1)  # fmt: skip
    stars = prepare_stars(sim, floors="none")
    nuts = dataclasses.replace(DEFAULT_NUTS, batch_size=args.batch_size)
    t0 = time.perf_counter()
    res = stellar_posteriors(released, stars, 0, prior=prior, config=nuts, prune_threshold=None)
    sim_seconds = time.perf_counter() - t0
    truth = {"teff": theta_sim[:, 0], "logg": theta_sim[:, 1], "feh": theta_sim[:, 2], "mu": mu_sim, "E": E_sim}
    data, _ = posterior_data(stars)
    lp = draw_log_density(released, prior, data, res)
    pruned = prune_chains(res, lp, PRUNE_THRESHOLD)
    single = dataclasses.replace(res, samples={k: v[:, :1] for k, v in res.samples.items()})
    return {
        "n_stars": n_sim,
        "nuts": nuts.__dict__,
        "prune_threshold": PRUNE_THRESHOLD,
        "coverage": coverage(summarise_posteriors(pruned), truth),
        "coverage_all_chains": coverage(summarise_posteriors(res), truth),
        "coverage_first_chain_only": coverage(summarise_posteriors(single), truth),
        "chains_kept_histogram": np.bincount(pruned.diagnostics["chains_kept"], minlength=nuts.num_chains + 1),
        "rhat_above_1_05_fraction": float(np.mean(res.diagnostics["rhat"] > 1.05)),
        "median_leapfrog_steps": float(np.nanmedian(res.diagnostics["num_steps"])),
        "seconds": sim_seconds,
        "flagged": int(np.sum(res.flags != 0)),
        "flag_counts": {name: int(np.sum(res.flags & bit != 0)) for name, bit in NUTS_FLAGS.items()},
    }


if __name__ == "__main__":
    main()
