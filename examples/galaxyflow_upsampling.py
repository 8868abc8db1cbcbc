"""GalaxyFlow (Lim et al., paper 004) on mock star particles: CNF vs MAF vs EnBiD upsampling and the classifier test.

Run ``python -m examples.galaxyflow_upsampling`` (default size: about 30 min on 2 unloaded cores by the measured
throughput; the run in the docs used ``--n-train 3000 --max-epochs 150 --refine-epochs 20 --factor 200
--classifier-hidden 512,512,256,128 --classifier-epochs 40`` on a shared machine, ~86 min) or with ``--paper`` for
the paper's settings (all training-half particles, 10 members, patience 50 + refinement, classifier
[2048, 1024, 128, 128]; hours on a GPU).  Steps:

1. generate ``--n-particles`` (200,000) seeded mock star particles in the 3.5 kpc sphere
   (:func:`jaxstars.models.galaxyflow.generate_particles`) and split them 1:1 into an upsampler-training half and a
   reference half (§5.3 i);
2. train the three upsamplers on the same ``--n-train`` particles of the training half (default 5,000; 0 = the whole
   half, as in the paper): the CNF GalaxyFlow (§3), the MAF variant (Appendix A) and the EnBiD kernels (§4);
3. upsample each by ``--factor`` for the classifier and run the multi-model classifier test (§5.3, Table A1):
   EnBiD vs CNF, MAF vs CNF and all three at once, scored on ``--n-reference`` held-out reference particles;
4. upsample by ``--plot-factor`` and draw Figure 3–5 style plots in the (α, δ) = (167.47°, -4.2°), 15° window.

Writes ``docs/results/galaxyflow.json`` and ``docs/figures/galaxyflow_*.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxstars.cli_support import jsonable
from jaxstars.models.galaxyflow import (
    PAPER_CLASSIFIER,
    ClassifierOptions,
    EnbidUpsampler,
    FlowOptions,
    GalaxyFlow,
    TrainOptions,
    generate_particles,
    multi_model_test,
    selection_mask,
    sky_window,
    split_particles,
    to_icrs,
    train_galaxyflow,
    upsample,
)
from jaxstars.models.galaxyflow.particles import COMPONENTS
from jaxstars.models.galaxyflow.plots import corner_figure, proper_motion_figure

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-particles", type=int, default=200_000)
    p.add_argument("--n-train", type=int, default=5000, help="particles of the training half used (0 = all)")
    p.add_argument("--n-reference", type=int, default=20_000, help="reference particles scored (0 = all)")
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--refine-epochs", type=int, default=10)
    p.add_argument("--patience", type=int, default=50)
    p.add_argument("--factor", type=float, default=20.0, help="upsampling factor for the classifier sets")
    p.add_argument("--plot-factor", type=float, default=200.0, help="upsampling factor for the figures")
    p.add_argument("--classifier-epochs", type=int, default=40)
    p.add_argument("--classifier-hidden", type=str, default="256,256,128")
    p.add_argument("--window-radius", type=float, default=40.0, help="sky window radius in deg (paper: 15)")
    p.add_argument("--paper", action="store_true", help="the paper's sizes (overrides the size options)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "galaxyflow.json")
    p.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    p.add_argument("--model-dir", type=Path, default=None, help="also save the trained CNF and MAF models here")
    p.add_argument(
        "--load-models", action="store_true", help="load the CNF and MAF from --model-dir instead of training them"
    )
    args = p.parse_args(argv)
    if args.paper:
        args.n_train, args.n_reference, args.members = 0, 0, 10
        args.max_epochs, args.refine_epochs, args.factor, args.plot_factor = 100_000, 100_000, 200.0, 500.0
        args.window_radius = 15.0
    return args


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    timings = {}
    key = jax.random.key(args.seed)
    particles = generate_particles(args.n_particles, seed=args.seed)
    train_half, reference = split_particles(particles, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    train = (
        train_half
        if args.n_train <= 0
        else train_half.subset(rng.choice(len(train_half), args.n_train, replace=False))
    )
    ref = (
        reference
        if args.n_reference <= 0
        else reference.subset(rng.choice(len(reference), min(args.n_reference, len(reference)), replace=False))
    )
    print(f"{len(particles)} particles; training on {len(train)}, scoring on {len(ref)} reference particles")

    topts = TrainOptions(
        n_members=args.members,
        max_epochs=args.max_epochs,
        refine_epochs=args.refine_epochs,
        patience=args.patience,
    )
    models = {}
    for name, fopts in [("CNF", FlowOptions()), ("MAF", FlowOptions(kind="maf"))]:
        t = time.time()
        if args.load_models:
            models[name] = GalaxyFlow.load(args.model_dir / name.lower())
            continue
        models[name] = train_galaxyflow(
            train, key=jax.random.fold_in(key, len(name)), flow_options=fopts, train_options=topts
        )
        timings[f"train_{name}"] = time.time() - t
        print(f"trained {name} in {timings[f'train_{name}']:.0f} s")
        if args.model_dir is not None:
            models[name].save(args.model_dir / name.lower())
    t = time.time()
    enbid = EnbidUpsampler.fit(train.positions, train.velocities)
    timings["enbid_tree"] = time.time() - t

    v_max = float(np.linalg.norm(train.velocities, axis=1).max())

    def draw(name, factor, k):
        if name == "EnBiD":
            pos, vel = enbid.sample(np.random.default_rng(k), round(factor))
            keep = selection_mask(pos, vel, train.sun_position, train.r_max, v_max)
            return pos[keep], vel[keep]
        pos, vel, _ = upsample(models[name], jax.random.key(k), factor)
        return pos, vel

    t = time.time()
    sets = {
        name: np.concatenate(draw(name, args.factor, 11 + i), axis=1)
        for i, name in enumerate(["EnBiD", "MAF", "CNF"])
    }
    timings["upsample_classifier_sets"] = time.time() - t

    # Held-out log-likelihood per reference particle (kpc^-3 (km/s)^-3), from the exact densities: the flows'
    # ensemble mixtures and EnBiD's kernel mixture; ± standard error of the mean; and per galaxy component.
    held_out_ll = {}
    for name, fn in [("EnBiD", enbid.log_prob)] + [(n, m.log_prob) for n, m in models.items()]:
        values = np.asarray(fn(ref.positions, ref.velocities), np.float64)
        held_out_ll[name] = {
            "mean": float(values.mean()),
            "se": float(values.std(ddof=1) / np.sqrt(len(values))),
            "by_component": {c: float(values[ref.component == i].mean()) for i, c in enumerate(COMPONENTS)},
        }
    print("held-out log-likelihood:", json.dumps(held_out_ll), flush=True)

    hidden = tuple(int(h) for h in args.classifier_hidden.split(","))
    copts = PAPER_CLASSIFIER if args.paper else ClassifierOptions(hidden=hidden, max_epochs=args.classifier_epochs)
    tests = {}
    t = time.time()
    for label, names in [
        ("EnBiD vs CNF", ["EnBiD", "CNF"]),
        ("MAF vs CNF", ["MAF", "CNF"]),
        ("All", ["EnBiD", "MAF", "CNF"]),
    ]:
        result, clf = multi_model_test(
            {n: sets[n] for n in names},
            ref.phase_space,
            key=jax.random.fold_in(key, 100 + len(tests)),
            options=copts,
        )
        # Eq. 12 restricted to the reference particles of each galaxy component (where does each upsampler win?)
        logp = clf.log_proba(ref.phase_space)
        result["scores_by_component"] = {
            c: {n: float(logp[ref.component == i, k].mean()) for k, n in enumerate(clf.names)}
            for i, c in enumerate(COMPONENTS)
        }
        tests[label] = result
        print(
            label,
            json.dumps({n: f"{s['lp']:.4f} ± {s['se']:.4f}" for n, s in result["scores"].items()}),
            result["auc"],
            flush=True,
        )
    timings["classifier_tests"] = time.time() - t

    # Figures 3-5: upsample more, keep the sky window
    t = time.time()
    args.figures.mkdir(parents=True, exist_ok=True)
    icrs_sets = {}
    for i, name in enumerate(["EnBiD", "MAF", "CNF"]):
        pos, vel = draw(name, args.plot_factor, 51 + i)
        icrs = to_icrs(pos, vel, train.sun_position, train.sun_velocity)
        window = sky_window(icrs["ra"], icrs["dec"], radius=args.window_radius)
        icrs_sets[name] = {k: v[window] for k, v in icrs.items()}
    part_icrs = to_icrs(train.positions, train.velocities, train.sun_position, train.sun_velocity)
    part_window = {
        k: v[sky_window(part_icrs["ra"], part_icrs["dec"], radius=args.window_radius)]
        for k, v in part_icrs.items()
    }
    figures = [
        proper_motion_figure(
            {k: icrs_sets[k] for k in ["EnBiD", "CNF"]},
            args.figures / "galaxyflow_proper_motions.png",
            particles=part_window,
            title=f"{args.window_radius:g}° window at (α, δ) = (167.47°, -4.2°), d < 3.5 kpc; "
            "black: the training particles in the window",
        ),
        proper_motion_figure({"MAF": icrs_sets["MAF"]}, args.figures / "galaxyflow_proper_motions_maf.png"),
    ]
    keys = ["ra", "dec", "distance", "pmra", "pmdec", "radial_velocity"]
    common = {
        k: np.percentile(np.concatenate([icrs_sets[n][k] for n in ["EnBiD", "CNF"]]), [0.5, 99.5]) for k in keys
    }
    for name in ["EnBiD", "CNF"]:
        figures.append(
            corner_figure(
                icrs_sets[name],
                args.figures / f"galaxyflow_corner_{name.lower()}.png",
                title=f"upsampled by {name}",
                ranges=common,
            )
        )
    timings["figures"] = time.time() - t

    out = {
        "command": "python -m examples.galaxyflow_upsampling " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": vars(args) | {"classifier": tests["All"]["classifier"]},
        "n_particles": len(particles),
        "n_train": len(train),
        "n_reference": len(ref),
        "n_window_particles": len(part_window["ra"]),
        "n_window_stars": {k: len(v["ra"]) for k, v in icrs_sets.items()},
        "held_out_log_likelihood": held_out_ll,
        "classifier_tests": tests,
        "training": {
            name: {
                "position_epochs": m.info["position_history"]["epochs"],
                "position_refine_epochs": m.info["position_history"].get("refine_epochs"),
                "velocity_epochs": m.info["velocity_history"]["epochs"],
                "velocity_refine_epochs": m.info["velocity_history"].get("refine_epochs"),
            }
            for name, m in models.items()
        },
        "enbid": {"levels": enbid.tree.n_levels, "variance_factor": enbid.variance_factor},
        "timings_s": timings,
        "total_s": time.time() - t_start,
        "figures": [str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f) for f in figures],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(jsonable(out), indent=1))
    print(f"wrote {args.out} in {out['total_s']:.0f} s")


if __name__ == "__main__":
    main()
