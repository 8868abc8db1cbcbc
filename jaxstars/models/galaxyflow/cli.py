"""``jaxstars galaxyflow``: mock star particles, GalaxyFlow training, upsampling and the classifier comparison.

Examples::

    jaxstars galaxyflow particles --out particles.npz --n 200000 --split      # + particles_{train,reference}.npz
    jaxstars galaxyflow train --particles particles_train.npz --out gf_cnf
    jaxstars galaxyflow train --particles particles_train.npz --out gf_maf --kind maf
    jaxstars galaxyflow upsample --model gf_cnf --factor 100 --out stars.npz --icrs
    jaxstars galaxyflow compare --reference particles_reference.npz --model CNF=gf_cnf --model MAF=gf_maf \\
        --enbid particles_train.npz --factor 10                                # prints the LP table as JSON

Particle files are ``.npz`` with ``positions`` (n, 3) kpc and ``velocities`` (n, 3) km/s in the Galactocentric
frame of :mod:`jaxstars.models.galaxyflow.particles` (optional ``sun_position``, ``sun_velocity``, ``r_max``).
``upsample`` writes ``.npz`` (``positions``, ``velocities`` and, with ``--icrs``, ``ra``, ``dec``, ``distance``,
``pmra``, ``pmdec``, ``radial_velocity``) or, for other suffixes (``.fits``, ``.parquet``, ``.csv``, ``.ecsv``), an
astropy table with columns ``x, y, z, v_x, v_y, v_z`` (+ ICRS).  Input errors end with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jaxstars.cli_support import CommandError, command_group, guarded, jsonable, require_file


def add_galaxyflow_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``galaxyflow`` (``particles``, ``train``, ``upsample``, ``compare``) to the ``jaxstars`` sub-commands."""
    gf, sub = command_group(
        subparsers,
        "galaxyflow",
        help="GalaxyFlow (Lim et al.): upsample star particles with CNFs; EnBiD/MAF baselines; classifier test",
        description="GalaxyFlow: phase-space density f(r, v) = p(r) p(v|r) of star particles with continuous "
        "normalising flows, upsampling, and the multi-model classifier test (Lim et al.).",
    )

    part = sub.add_parser("particles", help="write seeded mock star particles (3.5 kpc around the Sun)")
    part.add_argument("--out", required=True, help="output .npz file")
    part.add_argument("--n", type=int, default=200_000, help="number of particles (default: %(default)s)")
    part.add_argument("--seed", type=int, default=0)
    part.add_argument("--split", action="store_true", help="also write OUT_train.npz and OUT_reference.npz (1:1)")
    part.add_argument("--overwrite", action="store_true")
    part.set_defaults(func=lambda args: guarded("jaxstars galaxyflow particles", _particles, args))

    train = sub.add_parser("train", help="train a GalaxyFlow (CNF, or MAF for comparison) on star particles")
    train.add_argument("--particles", required=True, help="particle .npz file")
    train.add_argument("--out", required=True, help="output model folder")
    train.add_argument("--kind", choices=("cnf", "maf"), default="cnf")
    train.add_argument("--members", type=int, default=10, help="ensemble size (default: %(default)s, the paper's)")
    train.add_argument("--max-epochs", type=int, default=1000)
    train.add_argument("--refine-epochs", type=int, default=1000, help="epochs at lr 1e-4 (0: no refinement)")
    train.add_argument("--patience", type=int, default=50)
    train.add_argument("--hidden", default="32,32,32,32", help="CNF field MLP widths (default: %(default)s)")
    train.add_argument("--n-steps", type=int, default=20, help="RK4 steps (default: %(default)s)")
    train.add_argument("--maf-blocks", type=int, default=5)
    train.add_argument("--maf-hidden", type=int, default=64)
    train.add_argument(
        "--n-train", type=int, default=0, help="use a random subset of this many particles (0: all)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--progress", action="store_true")
    train.set_defaults(func=lambda args: guarded("jaxstars galaxyflow train", _train, args))

    up = sub.add_parser("upsample", help="draw stars from a trained model (outlier cut of §3.3 applied)")
    up.add_argument("--model", required=True, help="model folder written by `galaxyflow train`")
    up.add_argument("--factor", type=float, required=True, help="stars per training particle")
    up.add_argument("--out", required=True, help="output file (.npz, or .fits/.parquet/.csv/.ecsv)")
    up.add_argument("--icrs", action="store_true", help="add ICRS ra, dec, distance, pmra, pmdec, radial_velocity")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--overwrite", action="store_true")
    up.set_defaults(func=lambda args: guarded("jaxstars galaxyflow upsample", _upsample, args))

    cmp_ = sub.add_parser("compare", help="multi-model classifier test: LP scores (Eq. 12) as JSON")
    cmp_.add_argument("--reference", required=True, help="held-out reference particles (.npz)")
    cmp_.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="a trained model (repeat)")
    cmp_.add_argument(
        "--enbid", metavar="FILE", help="also compare EnBiD kernels built on these training particles"
    )
    cmp_.add_argument("--factor", type=float, default=10.0, help="upsampling factor per training particle")
    cmp_.add_argument("--hidden", default="128,128,64", help="classifier hidden widths (default: %(default)s)")
    cmp_.add_argument(
        "--paper-classifier", action="store_true", help="the paper's [2048, 1024, 128, 128], patience 100"
    )
    cmp_.add_argument("--max-epochs", type=int, default=30)
    cmp_.add_argument("--seed", type=int, default=0)
    cmp_.set_defaults(func=lambda args: guarded("jaxstars galaxyflow compare", _compare, args))
    return gf


def _check_out(path: Path, overwrite: bool):
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")


def _load_particles(path):
    from .particles import Particles

    return Particles.load(require_file(path, "particle file"))


def _particles(args) -> int:
    from .classifier import split_particles
    from .particles import generate_particles

    out = Path(args.out)
    if out.suffix != ".npz":
        raise CommandError("--out must end in .npz")
    paths = [out] + (
        [out.with_name(out.stem + "_train.npz"), out.with_name(out.stem + "_reference.npz")] if args.split else []
    )
    for p in paths:
        _check_out(p, args.overwrite)
    particles = generate_particles(args.n, seed=args.seed)
    particles.save(out)
    if args.split:
        for p, part in zip(paths[1:], split_particles(particles, seed=args.seed)):
            part.save(p)
    print(json.dumps({"written": [str(p) for p in paths], "n": len(particles)}))
    return 0


def _widths(text: str, what: str) -> tuple:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise CommandError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise CommandError(f"{what} must be positive integers, got {text!r}")
    return widths


def _train(args) -> int:
    import jax

    from .model import FlowOptions
    from .training import TrainOptions, train_galaxyflow

    particles = _load_particles(args.particles)
    if args.n_train and args.n_train < len(particles):
        particles = particles.subset(
            np.sort(np.random.default_rng(args.seed).choice(len(particles), args.n_train, replace=False))
        )
    d = np.linalg.norm(particles.positions - particles.sun_position, axis=1)
    if np.any(d > particles.r_max):
        raise CommandError(
            f"{int(np.sum(d > particles.r_max))} particles lie outside r_max = {particles.r_max} kpc"
        )
    fopts = FlowOptions(
        kind=args.kind,
        hidden=_widths(args.hidden, "--hidden"),
        n_steps=args.n_steps,
        maf_blocks=args.maf_blocks,
        maf_hidden=args.maf_hidden,
    )
    topts = TrainOptions(
        n_members=args.members,
        max_epochs=args.max_epochs,
        refine_epochs=args.refine_epochs,
        patience=args.patience,
        progress=args.progress,
    )
    model = train_galaxyflow(particles, key=jax.random.key(args.seed), flow_options=fopts, train_options=topts)
    model.save(args.out)
    summary = {
        "model": str(args.out),
        "n_particles": len(particles),
        "members": model.n_members,
        "position_epochs": model.info["position_history"]["epochs"],
        "velocity_epochs": model.info["velocity_history"]["epochs"],
        "position_val_loss": model.info["position_history"].get(
            "refine_val_loss", model.info["position_history"]["val_loss"]
        )[-1],
        "velocity_val_loss": model.info["velocity_history"].get(
            "refine_val_loss", model.info["velocity_history"]["val_loss"]
        )[-1],
    }
    print(json.dumps(jsonable(summary)))
    return 0


def _upsample(args) -> int:
    import jax

    from .model import GalaxyFlow
    from .upsample import to_icrs, upsample

    out = Path(args.out)
    _check_out(out, args.overwrite)
    if args.factor <= 0:
        raise CommandError(f"--factor must be positive, got {args.factor}")
    model = GalaxyFlow.load(require_file(args.model, "model folder"))
    pos, vel, acceptance = upsample(model, jax.random.key(args.seed), args.factor)
    columns = {"positions": pos, "velocities": vel}
    icrs = to_icrs(pos, vel, model.sun_position, model.sun_velocity) if args.icrs else {}
    if out.suffix == ".npz":
        np.savez(
            out,
            **columns,
            **icrs,
            sun_position=model.sun_position,
            sun_velocity=np.asarray(model.sun_velocity),
            r_max=np.array(model.r_max),
        )
    else:
        from astropy.table import Table

        table = Table(
            {n: c for n, c in zip(["x", "y", "z"], pos.T)}
            | {n: c for n, c in zip(["v_x", "v_y", "v_z"], vel.T)}
            | icrs
        )
        table.write(out, overwrite=args.overwrite)
    print(json.dumps({"out": str(out), "n_stars": len(pos), "acceptance": acceptance}))
    return 0


def _compare(args) -> int:
    import jax

    from .classifier import PAPER_CLASSIFIER, ClassifierOptions, multi_model_test
    from .enbid import EnbidUpsampler
    from .model import GalaxyFlow
    from .upsample import selection_mask, upsample

    reference = _load_particles(args.reference)
    sets = {}
    for i, item in enumerate(args.model):
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise CommandError(f"--model takes NAME=DIR, got {item!r}")
        model = GalaxyFlow.load(require_file(folder, "model folder"))
        pos, vel, _ = upsample(model, jax.random.key(args.seed + 1 + i), args.factor)
        sets[name] = np.concatenate([pos, vel], axis=1)
    if args.enbid:
        train = _load_particles(args.enbid)
        enbid = EnbidUpsampler.fit(train.positions, train.velocities)
        pos, vel = enbid.sample(np.random.default_rng(args.seed), max(1, round(args.factor)))
        v_max = float(np.linalg.norm(train.velocities, axis=1).max())
        keep = selection_mask(pos, vel, train.sun_position, train.r_max, v_max)
        sets = {"EnBiD": np.concatenate([pos[keep], vel[keep]], axis=1)} | sets
    if len(sets) < 2:
        raise CommandError("compare needs at least two upsamplers (--model NAME=DIR and/or --enbid FILE)")
    options = (
        PAPER_CLASSIFIER
        if args.paper_classifier
        else ClassifierOptions(hidden=_widths(args.hidden, "--hidden"), max_epochs=args.max_epochs)
    )
    result, _ = multi_model_test(sets, reference.phase_space, key=jax.random.key(args.seed), options=options)
    json.dump(jsonable(result), sys.stdout, indent=1)
    print()
    return 0
