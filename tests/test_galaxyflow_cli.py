"""Tests of the ``jaxstars galaxyflow`` command line (particles, upsample, compare; train behind ``slow``)."""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
import pytest

from jaxstars.models.galaxyflow import (
    SUN_POSITION,
    SUN_VELOCITY,
    FlowOptions,
    GalaxyFlow,
    Particles,
    PositionPreprocessor,
    VelocityPreprocessor,
)
from jaxstars.models.galaxyflow.cli import add_galaxyflow_arguments


def run(argv):
    parser = argparse.ArgumentParser(prog="jaxstars")
    add_galaxyflow_arguments(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gf")
    assert run(["galaxyflow", "particles", "--out", str(root / "p.npz"), "--n", "1200", "--split"]) == 0
    # a small untrained 1-member model (no training needed to exercise upsample/compare)
    train = Particles.load(root / "p_train.npz")
    opts = FlowOptions(hidden=(8,), n_steps=3)
    pos_flow, vel_flow = opts.build(0), opts.build(3)
    key = jax.random.split(jax.random.key(0), 1)
    GalaxyFlow(
        pos_flow,
        vel_flow,
        jax.vmap(pos_flow.init)(key),
        jax.vmap(vel_flow.init)(key),
        PositionPreprocessor.fit(train.positions, SUN_POSITION, 3.5),
        VelocityPreprocessor.fit(train.velocities),
        v_max=float(np.linalg.norm(train.velocities, axis=1).max()),
        sun_velocity=tuple(SUN_VELOCITY),
        options=opts,
        info={"n_particles": len(train)},
    ).save(root / "model")
    return root


def test_particles_command_writes_split_files(files, capsys):
    full = Particles.load(files / "p.npz")
    train, ref = Particles.load(files / "p_train.npz"), Particles.load(files / "p_reference.npz")
    assert len(full) == 1200 and len(train) == len(ref) == 600
    # exists without --overwrite: one-line error, exit code 2
    assert run(["galaxyflow", "particles", "--out", str(files / "p.npz"), "--n", "100"]) == 2
    assert "exists" in capsys.readouterr().err


def test_upsample_command(files, capsys):
    out = files / "stars.npz"
    assert (
        run(
            [
                "galaxyflow",
                "upsample",
                "--model",
                str(files / "model"),
                "--factor",
                "2",
                "--out",
                str(out),
                "--icrs",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    with np.load(out) as npz:
        pos, dist = npz["positions"], npz["distance"]
    assert summary["n_stars"] == len(pos) > 1000
    np.testing.assert_allclose(dist, np.linalg.norm(pos - SUN_POSITION, axis=1), rtol=1e-6)
    assert dist.max() <= 3.5
    assert (
        run(
            [
                "galaxyflow",
                "upsample",
                "--model",
                str(files / "nope"),
                "--factor",
                "2",
                "--out",
                str(files / "x.npz"),
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err


def test_compare_command_prints_lp_table(files, capsys):
    argv = [
        "galaxyflow",
        "compare",
        "--reference",
        str(files / "p_reference.npz"),
        "--model",
        f"CNF={files / 'model'}",
    ]
    argv += ["--enbid", str(files / "p_train.npz"), "--factor", "4", "--hidden", "16", "--max-epochs", "3"]
    assert run(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["scores"]) == {"EnBiD", "CNF"}
    for score in result["scores"].values():
        assert score["lp"] < 0 and score["se"] > 0
    assert 0 <= result["auc"]["EnBiD vs CNF"] <= 1 and result["n_reference"] == 600
    assert run(["galaxyflow", "compare", "--reference", str(files / "p_reference.npz"), "--model", "bad"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_train_command(files, capsys):
    out = files / "trained"
    argv = ["galaxyflow", "train", "--particles", str(files / "p_train.npz"), "--out", str(out), "--members", "2"]
    argv += ["--max-epochs", "3", "--refine-epochs", "1", "--hidden", "8", "--n-steps", "2"]
    assert run(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["members"] == 2 and summary["position_epochs"] == 3
    assert GalaxyFlow.load(out).n_members == 2
