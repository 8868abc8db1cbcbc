"""GalaxyFlow (Lim et al., paper 004): the phase-space density ``f(r, v) = p(r) p(v | r)`` (Eq. 4) of star particles.

Two flows on preprocessed coordinates (:mod:`.preprocessing`): ``p(u_r)`` and ``p(u_v | u_r)`` — continuous
normalising flows (§3.2: MLP 4 × 32 GELU field, RK4 with 20 steps, exact trace; :func:`jaxstars.flows.cnf`) or, for
the Appendix A comparison, masked autoregressive flows (:func:`jaxstars.flows.maf`).  An ensemble of ``M`` members
(§3.3: 10 seeds) is stored as parameters with a leading member axis; the ensemble density is the mixture
``f = (1/M) Σ_m p_m(r) p_m(v | r)`` and sampling draws each point from one member (equal shares), which samples that
mixture exactly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxstars.flows import Flow, cnf, load_flow, maf, save_flow
from jaxstars.flows.io import FlowFileError

from .preprocessing import PositionPreprocessor, VelocityPreprocessor

FORMAT = "jaxstars-galaxyflow"
FORMAT_VERSION = 1
KINDS = ("cnf", "maf")


@dataclass(frozen=True)
class FlowOptions:
    """Architecture of both flows.

    ``kind="cnf"``: ``hidden`` widths of the vector-field MLP (paper: 4 × 32), ``n_steps`` RK4 steps (20), ``trace``.
    ``kind="maf"``: ``maf_blocks`` MADE blocks with two hidden layers of ``maf_hidden`` units, BatchNorm and
    reverse permutations (Appendix A uses "the architecture of Buckley et al. 2022"; the paper does not give it, so
    these sizes are our choice and options).
    """

    kind: str = "cnf"
    hidden: tuple = (32, 32, 32, 32)
    n_steps: int = 20
    activation: str = "gelu"
    trace: str = "exact"
    maf_blocks: int = 5
    maf_hidden: int = 64

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"flow kind must be one of {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    def build(self, context_dim: int) -> Flow:
        if self.kind == "cnf":
            return Flow(
                cnf(
                    3,
                    context_dim,
                    hidden=self.hidden,
                    n_steps=self.n_steps,
                    activation=self.activation,
                    trace=self.trace,
                )
            )
        return Flow(maf(3, n_blocks=self.maf_blocks, hidden=self.maf_hidden, context_dim=context_dim))

    def to_dict(self) -> dict:
        return {**self.__dict__, "hidden": list(self.hidden)}


@dataclass
class GalaxyFlow:
    """A trained (or initialised) GalaxyFlow ensemble.

    Attributes
    ----------
    position_flow, velocity_flow : ``p(u_r)`` and ``p(u_v | u_r)``.
    position_params, velocity_params : parameter pytrees with a leading member axis (``n_members``).
    position_prep, velocity_prep : the §3.3 preprocessing.
    v_max : the training sample's maximum speed (km/s), used to reject upsampled outliers (§3.3 step iv).
    sun_velocity : Solar velocity (km/s) in the same frame (for ICRS output).
    options : the :class:`FlowOptions` both flows were built from.
    info : training history and settings (JSON-able).
    """

    position_flow: Flow
    velocity_flow: Flow
    position_params: object
    velocity_params: object
    position_prep: PositionPreprocessor
    velocity_prep: VelocityPreprocessor
    v_max: float
    sun_velocity: tuple
    options: FlowOptions = field(default_factory=FlowOptions)
    info: dict = field(default_factory=dict)

    @property
    def n_members(self) -> int:
        return int(jax.tree.leaves(self.position_params)[0].shape[0])

    @property
    def sun_position(self) -> np.ndarray:
        return np.asarray(self.position_prep.centre)

    @property
    def r_max(self) -> float:
        return self.position_prep.r_max

    # -- densities (Eq. 4) ----------------------------------------------------------------------------------------
    def member_log_prob(self, positions, velocities):
        """``log p_m(r) + log p_m(v | r)`` in physical units (kpc⁻³ (km/s)⁻³), shape ``(n_members, n)``.

        ``-inf`` outside the selection sphere.
        """
        return _member_log_prob(
            self.position_flow,
            self.velocity_flow,
            self.position_params,
            self.velocity_params,
            self.position_prep,
            self.velocity_prep,
            jnp.asarray(positions, jnp.float32),
            jnp.asarray(velocities, jnp.float32),
        )

    def log_prob(self, positions, velocities):
        """Ensemble phase-space log density ``log f(r, v)`` (mixture over members), shape ``(n,)``."""
        lp = self.member_log_prob(positions, velocities)
        return jax.scipy.special.logsumexp(lp, axis=0) - math.log(self.n_members)

    def position_log_prob(self, positions):
        """Ensemble ``log p(r)`` in kpc⁻³ (mixture over members)."""
        u, log_det = self.position_prep.forward(jnp.asarray(positions, jnp.float32))
        lp = jax.vmap(lambda p: self.position_flow.log_prob(p, u))(self.position_params) + log_det
        lp = jnp.where(jnp.isfinite(log_det), lp, -jnp.inf)
        return jax.scipy.special.logsumexp(lp, axis=0) - math.log(self.n_members)

    # -- sampling --------------------------------------------------------------------------------------------------
    def sample(self, key: jax.Array, n: int, *, chunk: int = 65536):
        """``n`` draws ``(positions, velocities)`` from the ensemble mixture, *before* the §3.3 (iv) outlier cut.

        Member ``m`` draws ``n // M`` points (the first ``n % M`` members one more); rows are shuffled.
        """
        members = self.n_members
        per = np.full(members, n // members)
        per[: n % members] += 1
        pos_out, vel_out = [], []
        for m in range(members):
            pp = jax.tree.map(lambda a, m=m: a[m], self.position_params)
            vp = jax.tree.map(lambda a, m=m: a[m], self.velocity_params)
            for start in range(0, int(per[m]), chunk):
                size = min(chunk, int(per[m]) - start)
                k = jax.random.fold_in(jax.random.fold_in(key, m), start)
                r, v = _sample_member(
                    self.position_flow, self.velocity_flow, pp, vp, self.position_prep, self.velocity_prep, k, size
                )
                pos_out.append(np.asarray(r))
                vel_out.append(np.asarray(v))
        pos, vel = np.concatenate(pos_out), np.concatenate(vel_out)
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 10**7), n))
        return pos[order].astype(np.float64), vel[order].astype(np.float64)

    # -- I/O -------------------------------------------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write ``DIR/galaxyflow.json`` (preprocessing, options, info) and ``DIR/{position,velocity}_flow.npz``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        members = self.n_members
        save_flow(directory / "position_flow.npz", self.position_flow, self.position_params, members=members)
        save_flow(directory / "velocity_flow.npz", self.velocity_flow, self.velocity_params, members=members)
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "position_prep": self.position_prep.to_dict(),
            "velocity_prep": self.velocity_prep.to_dict(),
            "v_max": self.v_max,
            "sun_velocity": list(self.sun_velocity),
            "options": self.options.to_dict(),
            "info": self.info,
        }
        (directory / "galaxyflow.json").write_text(json.dumps(header, indent=1))
        return directory

    @classmethod
    def load(cls, directory) -> GalaxyFlow:
        """Read a model written by :meth:`save`; missing/corrupt/incompatible files raise ``FileNotFoundError`` or
        :class:`~jaxstars.flows.FlowFileError`."""
        directory = Path(directory)
        header_path = directory / "galaxyflow.json"
        if not header_path.exists():
            raise FileNotFoundError(f"no GalaxyFlow model in {os.fspath(directory)!r} (missing galaxyflow.json)")
        try:
            header = json.loads(header_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise FlowFileError(f"{header_path}: corrupt model header: {err}") from err
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise FlowFileError(f"{header_path} is not a GalaxyFlow model header")
        if header.get("version") != FORMAT_VERSION:
            raise FlowFileError(
                f"{header_path}: format version {header.get('version')}, this jaxstars reads {FORMAT_VERSION}"
            )
        pos_flow, pos_params, _ = load_flow(directory / "position_flow.npz")
        vel_flow, vel_params, _ = load_flow(directory / "velocity_flow.npz")
        try:
            options = header["options"]
            return cls(
                pos_flow,
                vel_flow,
                pos_params,
                vel_params,
                PositionPreprocessor.from_dict(header["position_prep"]),
                VelocityPreprocessor.from_dict(header["velocity_prep"]),
                float(header["v_max"]),
                tuple(header["sun_velocity"]),
                FlowOptions(**{**options, "hidden": tuple(options["hidden"])}),
                header.get("info", {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise FlowFileError(f"{header_path}: incomplete model header: {err!r}") from err


def _member_log_prob_impl(pos_flow, vel_flow, pos_params, vel_params, pos_prep, vel_prep, r, v):
    u_r, ld_r = pos_prep.forward(r)
    u_v, ld_v = vel_prep.forward(v)

    def one(pp, vp):
        return pos_flow.log_prob(pp, u_r) + vel_flow.log_prob(vp, u_v, u_r)

    lp = jax.vmap(one)(pos_params, vel_params) + ld_r + ld_v
    return jnp.where(jnp.isfinite(ld_r), lp, -jnp.inf)


_member_log_prob_jit = jax.jit(_member_log_prob_impl, static_argnums=(0, 1, 4, 5))


def _member_log_prob(pos_flow, vel_flow, pos_params, vel_params, pos_prep, vel_prep, r, v, chunk=16384):
    """Chunked :func:`_member_log_prob_impl` (bounded memory for large inputs)."""
    out = [
        _member_log_prob_jit(
            pos_flow, vel_flow, pos_params, vel_params, pos_prep, vel_prep, r[i : i + chunk], v[i : i + chunk]
        )
        for i in range(0, r.shape[0], chunk)
    ]
    return jnp.concatenate(out, axis=1) if out else jnp.zeros((jax.tree.leaves(pos_params)[0].shape[0], 0))


def _sample_member(pos_flow, vel_flow, pp, vp, pos_prep, vel_prep, key, n):
    return _sample_member_jit(pos_flow, vel_flow, pp, vp, pos_prep, vel_prep, key, n)


def _sample_impl(pos_flow, vel_flow, pp, vp, pos_prep, vel_prep, key, n):
    k_r, k_v = jax.random.split(key)
    u_r = pos_flow.sample(pp, k_r, (n,))
    u_v = vel_flow.sample(vp, k_v, (), u_r)
    return pos_prep.inverse(u_r), vel_prep.inverse(u_v)


_sample_member_jit = jax.jit(_sample_impl, static_argnums=(0, 1, 4, 5, 7))
