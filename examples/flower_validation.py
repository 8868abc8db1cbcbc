"""FLOWER's validation (O'Callaghan et al., paper 002, §5) on simulated and real stars.

Run ``python -m examples.flower_validation [--quick] [--models DIR] [--nuts-stars 100]``.  It

1. trains (or loads from ``--models``) three FLOWER models: Gaia + PS1 and Gaia + PS1 + 2MASS on simulated
   zero-extinction stars, and Gaia + PS1 on the real low-reddening stars of the Green et al. (2021) release
   (``r < 0.02``, 75 % of them; skipped when the data folder is absent);
2. §5.1: reddens held-out zero-extinction stars by E ∈ {0, 0.1, 0.2, 0.3, 0.4} through the law and scores the
   fast-path posteriors (mean residual of the posterior-mean E, mean posterior std, 68 % / 95 % coverage);
3. §5.2: infers E and d for stars on the simulated two-cloud sight line and plots E against d;
4. checks the fast path against NUTS with the paper's settings (4,000 + 10,000, target acceptance 0.9) on
   ``--nuts-stars`` reddened stars;

and writes ``docs/results/flower_validation.json`` and the figures ``docs/figures/flower_*.png`` shown on
``docs/models/flower.md``.

``--models docs/results/flower_reference --skip sim,2mass,green,cloud`` continues the NUTS comparison kept in the
repository: its Gaia + PS1 model and the NUTS stars finished so far (the cache is fingerprinted and refused if the
model, stars or sampler settings differ).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from jaxstars.models.flower import FlowerModel, train_flower
from jaxstars.models.flower.features import GAIA_PS1, GAIA_PS1_2MASS
from jaxstars.models.flower.posterior import PAPER_NUTS, FlowerPosteriorConfig
from jaxstars.models.flower.stars import prepare_flower_stars
from jaxstars.models.flower.validation import (
    SYNTHETIC_EBV,
    fast_vs_nuts,
    green_low_reddening_stars,
    synthetic_reddening_experiment,
    two_cloud_experiment,
    zero_extinction_catalog,
)

SIZES = {
    "full": {
        "n_train": 40_000,
        "epochs": 60,
        "n_val": 1000,
        "green_epochs": 300,
        "n_cloud": 1500,
        "nuts": (100, 4000, 10000),
    },
    "quick": {
        "n_train": 8_000,
        "epochs": 6,
        "n_val": 150,
        "green_epochs": 30,
        "n_cloud": 300,
        "nuts": (8, 500, 1000),
    },
}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if k not in ("results", "fast", "reference")}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _model(directory: Path, name: str, train_fn):
    path = directory / name
    if (path / "flower.npz").exists() or any(path.glob("*.npz")):
        print(f"loading {path}")
        return FlowerModel.load(path)
    start = time.perf_counter()
    tr = train_fn()
    print(f"trained {name} in {time.perf_counter() - start:.0f} s: {tr.model.info['training']}")
    tr.model.save(path, tr.params)
    return tr.model, tr.params


def _plot_synthetic(results: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = results["results"]
    resid = r["ebv_mean"] - r["true_ebv"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    sc = axes[0].scatter(r["bp_rp"], r["mag_G"], c=resid, s=4, cmap="coolwarm", vmin=-0.1, vmax=0.1)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("observed BP − RP (before synthetic reddening)")
    axes[0].set_ylabel("G")
    fig.colorbar(sc, ax=axes[0], label="posterior-mean E − true E")
    for e in np.unique(np.round(r["true_ebv"], 3)):
        sel = np.isclose(r["true_ebv"], e, atol=5e-3)
        axes[1].hist(
            resid[sel] / r["ebv_std"][sel], bins=np.linspace(-4, 4, 41), histtype="step", label=f"E={e:.1f}"
        )
    x = np.linspace(-4, 4, 200)
    axes[1].plot(
        x,
        np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi) * len(resid) / len(np.unique(np.round(r["true_ebv"], 3))) * 0.2,
        "k--",
        lw=1,
        label="N(0, 1)",
    )
    axes[1].set_xlabel("(posterior-mean E − true E) / posterior std")
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_two_cloud(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = res["results"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = np.isfinite(r["ebv_mean"])
    ax.errorbar(r["distance_mean"][ok], r["ebv_mean"][ok], yerr=r["ebv_std"][ok], fmt=".", ms=3, alpha=0.35, lw=0.5,
                label="stars: posterior mean ± std")  # fmt: skip
    order = np.argsort(r["true_distance"])
    ax.plot(r["true_distance"][order], r["true_ebv"][order], "k.", ms=1, alpha=0.4, label="truth (simulated)")
    for b in res["bins"]:
        if b["mean_ebv"] is not None:
            hi = b["d_hi"] if b["d_hi"] is not None else ax.get_xlim()[1]
            ax.hlines(b["mean_ebv"], max(b["d_lo"], 50.0), hi, colors="C3", lw=2)
    for d in res["cloud_distances_pc"]:
        ax.axvline(d, color="grey", ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("posterior-mean distance [pc]")
    ax.set_ylabel("posterior-mean E(B−V)")
    ax.set_title("Two-cloud sight line (l, b) = (104.08°, 22.31°), simulated")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small models and samples (minutes)")
    parser.add_argument("--models", default="flower_models", help="folder to load/save the trained models")
    parser.add_argument(
        "--nuts-stars", type=int, help="stars for the fast-vs-NUTS check (0: skip; default 100, quick 8)"
    )
    parser.add_argument("--nuts-warmup", type=int, help="default: the paper's 4,000 (quick: 500)")
    parser.add_argument("--nuts-samples", type=int, help="default: the paper's 10,000 (quick: 1,000)")
    parser.add_argument(
        "--nuts-cached-only",
        action="store_true",
        help="compare on the stars whose NUTS reference is already in the cache (DIR/nuts_reference_*.npz; every "
        "finished star is cached, and a run without this option completes the rest)",
    )
    parser.add_argument(
        "--importance-draws",
        type=int,
        default=4000,
        help="importance draws per grid node for the sampler-free reference of the fast-vs-NUTS stars (0: skip)",
    )
    parser.add_argument(
        "--epochs", type=int, help="maximum training epochs of the simulated-star models (default 60, quick 6)"
    )
    parser.add_argument("--out", default="docs/results/flower_validation.json")
    parser.add_argument("--figures", default="docs/figures")
    parser.add_argument(
        "--skip",
        default="",
        help="comma list of parts to skip: sim,2mass,green,cloud,nuts (the other parts of an existing --out are kept)",
    )
    args = parser.parse_args(argv)
    size = dict(SIZES["quick" if args.quick else "full"])
    if args.epochs is not None:
        size["epochs"] = args.epochs
    skip = set(filter(None, args.skip.split(",")))
    n_nuts, n_warm, n_keep = size["nuts"]
    args.nuts_stars = n_nuts if args.nuts_stars is None else args.nuts_stars
    args.nuts_warmup = n_warm if args.nuts_warmup is None else args.nuts_warmup
    args.nuts_samples = n_keep if args.nuts_samples is None else args.nuts_samples
    models, figures = Path(args.models), Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    config = FlowerPosteriorConfig()
    report: dict = {}
    if skip and Path(args.out).exists():  # a partial run updates the parts it ran and keeps the others
        report = json.loads(Path(args.out).read_text())
    report.update({"quick": args.quick, "sizes": size, "synthetic_ebv": list(SYNTHETIC_EBV)})

    train_cat = None

    def trained(name, bands):
        def fit():
            nonlocal train_cat
            if train_cat is None:
                train_cat = zero_extinction_catalog(size["n_train"], seed=11)
            return train_flower(train_cat, bands=bands, epochs=size["epochs"], batch_size=2048, patience=15)

        return _model(models, name, fit)

    val_cat = zero_extinction_catalog(size["n_val"], seed=101)
    for name, bands in (("gaia_ps1", GAIA_PS1), ("gaia_ps1_2mass", GAIA_PS1_2MASS)):
        if (name == "gaia_ps1" and "sim" in skip) or (name == "gaia_ps1_2mass" and "2mass" in skip):
            continue
        model, params = trained(name, bands)
        start = time.perf_counter()
        res = synthetic_reddening_experiment(model, params, val_cat, config=config)
        res["seconds"] = time.perf_counter() - start
        report[f"synthetic_{name}"] = res
        print(f"§5.1 {name}: overall {res['overall']}")
        for row in res["per_ebv"]:
            print(
                "   ",
                {
                    k: row[k]
                    for k in (
                        "ebv",
                        "mean_residual",
                        "mean_posterior_std",
                        "coverage_68",
                        "coverage_95",
                        "n_flagged",
                    )
                },
            )
        _plot_synthetic(
            res, f"Synthetic reddening, simulated stars, {name}", figures / f"flower_synthetic_{name}.png"
        )

    if "green" not in skip:
        try:
            g_train, g_val = green_low_reddening_stars()
        except (FileNotFoundError, OSError) as exc:
            print(f"Green et al. data not available ({exc}): skipping the real-photometry check")
        else:

            def fit_green():
                return train_flower(g_train, bands=GAIA_PS1, epochs=size["green_epochs"], batch_size=256,
                                    patience=30, ebv="true_ebv")  # fmt: skip

            model, params = _model(models, "green_gaia_ps1", fit_green)
            res = synthetic_reddening_experiment(model, params, g_val, config=config, parallax_zero_point=0.0)
            res["n_train"] = len(g_train)
            report["synthetic_green_gaia_ps1"] = res
            print(f"§5.1 Green low-reddening stars: overall {res['overall']}")
            _plot_synthetic(
                res,
                "Synthetic reddening, real Green et al. stars (r < 0.02)",
                figures / "flower_synthetic_green.png",
            )

    if "cloud" not in skip:
        model, params = trained("gaia_ps1", GAIA_PS1)
        res = two_cloud_experiment(model, params, size["n_cloud"], config=config)
        report["two_cloud"] = res
        print("§5.2 two clouds: bins", res["bins"], "steps", res["steps"])
        _plot_two_cloud(res, figures / "flower_two_cloud.png")

    if args.nuts_stars and "nuts" not in skip:
        model, params = trained("gaia_ps1", GAIA_PS1)
        from jaxstars.astro.simulate import simulate_galaxy

        table = simulate_galaxy(args.nuts_stars, key=55, fields=[(104.08, 22.31, 5.0)], mag_limit=18.5)
        stars = prepare_flower_stars(model.features, table, parallax_zero_point=-0.017)
        # one star per compiled call: in a vmapped batch every lane waits for the star with the deepest trees
        nuts = dataclasses.replace(
            PAPER_NUTS, num_warmup=args.nuts_warmup, num_samples=args.nuts_samples, batch_size=1
        )
        start = time.perf_counter()
        cache = models / f"nuts_reference_{args.nuts_stars}_{nuts.num_warmup}_{nuts.num_samples}.npz"
        res = fast_vs_nuts(
            model, params, stars, nuts=nuts, config=config, cache=cache, cached_only=args.nuts_cached_only,
            importance_draws=args.importance_draws,
        )  # fmt: skip
        res["seconds"] = time.perf_counter() - start
        res["nuts_settings"] = {"num_warmup": nuts.num_warmup, "num_samples": nuts.num_samples,
                                "target_accept_prob": nuts.target_accept_prob, "dense_mass": nuts.dense_mass}  # fmt: skip
        res["n_compared"] = len(res["rows"])
        report["fast_vs_nuts"] = res
        print(f"fast vs NUTS on {res['n_compared']} stars:", {k: res[k] for k in ("ebv", "distance")})
        if "importance" in res:
            print("fast vs importance-sampled grid:", res["importance"]["fast_path"])
            print("NUTS vs importance-sampled grid:", res["importance"]["nuts"])

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(_jsonable(report), indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
