"""Mock star particles with structure, sampled in a sphere around the Sun (a stand-in for an N-body snapshot).

No N-body snapshot (Auriga 6, h277) is available offline, so GalaxyFlow is exercised on particles drawn from a
documented analytic galaxy, cut to the paper's selection (Lim et al. §2.1: particles within ``r_max = 3.5 kpc`` of
the Sun).  Frame and units follow the paper's Auriga convention: Galactocentric Cartesian ``(x, y, z)`` in kpc with
the disk in the ``xy`` plane, the Sun on the ``-x`` axis at ``(-8.0, 0, 0.02)`` kpc, ``z`` out of the disk and disk
stars near the Sun moving in ``+y``; velocities in km/s.  This is also astropy's ``Galactocentric`` orientation.

Components (fractions are of the particles *inside the sphere*):

* **thin disk** (78 %): ``ρ ∝ exp(-R/2.6 kpc) exp(-|z|/0.3 kpc)``; velocities Gaussian in cylindrical
  ``(v_R, v_φ, v_z)`` with dispersions ``(35, 25, 20) km/s × exp(-(R - R☉)/(2 R_d))`` (``σ² ∝ Σ`` for a constant
  scale height), rotation ``v_c = 230 km/s`` minus the asymmetric drift ``σ_R²/80 km/s`` (Strömberg relation);
* **thick disk** (15 %): scale length 2.0 kpc, height 0.9 kpc, dispersions ``(60, 45, 40) km/s``, same profile;
* **stellar halo** (4 %): ``ρ ∝ r^-3.5`` (Galactocentric radius), no net rotation, radially anisotropic Gaussian
  velocities with ``(σ_r, σ_θ, σ_φ) = (160, 100, 100) km/s``;
* **cold stream** (2 %): a tube of width 0.12 kpc along a straight track through the volume, particles moving along
  the track at 300 km/s with a 6 km/s dispersion (a kinematically cold, Helmi-stream-like feature);
* **satellite** (1 %): a Plummer sphere (scale 0.15 kpc) 2 kpc from the Sun with bulk velocity
  ``(-60, 80, 210) km/s`` and an isotropic 8 km/s dispersion.

The cold components are what an upsampler can smear (EnBiD) or lose (a flow); the disk's exponential profiles and
the halo's broad velocities give the smooth bulk and the long tails.  Every draw is seeded (``numpy`` Generator):
the same ``seed`` gives identical particles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUN_POSITION = np.array([-8.0, 0.0, 0.02])  # kpc, Aurigaia's default Solar location (Lim et al. §2.1)
SUN_VELOCITY = np.array(
    [11.1, 242.0, 7.25]
)  # km/s in the same frame: v_c = 230 km/s plus Schönrich (2010) peculiar
R_MAX = 3.5  # kpc, radius of the selection sphere around the Sun
COMPONENTS = ("thin_disk", "thick_disk", "halo", "stream", "satellite")
FRACTIONS = (0.78, 0.15, 0.04, 0.02, 0.01)
V_CIRC = 230.0  # km/s


@dataclass(frozen=True)
class Particles:
    """Star particles: ``positions`` (n, 3) kpc and ``velocities`` (n, 3) km/s (Galactocentric), ``component`` (n,)
    an index into :data:`COMPONENTS`, plus the Solar position/velocity and selection radius they were drawn with."""

    positions: np.ndarray
    velocities: np.ndarray
    component: np.ndarray
    sun_position: np.ndarray
    sun_velocity: np.ndarray
    r_max: float

    def __len__(self) -> int:
        return len(self.positions)

    def subset(self, index) -> Particles:
        return Particles(
            self.positions[index],
            self.velocities[index],
            self.component[index],
            self.sun_position,
            self.sun_velocity,
            self.r_max,
        )

    @property
    def phase_space(self) -> np.ndarray:
        """``(n, 6)`` array ``[x, y, z, v_x, v_y, v_z]``."""
        return np.concatenate([self.positions, self.velocities], axis=1)

    def save(self, path) -> None:
        """Write an ``.npz`` file (plain arrays, no pickle) readable by :meth:`load`."""
        np.savez(
            path,
            positions=self.positions,
            velocities=self.velocities,
            component=self.component,
            sun_position=self.sun_position,
            sun_velocity=self.sun_velocity,
            r_max=np.array(self.r_max),
        )

    @classmethod
    def load(cls, path) -> Particles:
        """Read particles written by :meth:`save`; ``sun_*``/``r_max`` default to the module constants if absent.

        Raises ``ValueError`` for a file without ``positions``/``velocities`` of shape (n, 3) or with non-finite
        values.
        """
        with np.load(path, allow_pickle=False) as npz:
            if "positions" not in npz.files or "velocities" not in npz.files:
                raise ValueError(f"{path}: a particle file needs 'positions' and 'velocities' arrays")
            pos, vel = np.asarray(npz["positions"], float), np.asarray(npz["velocities"], float)
            comp = np.asarray(npz["component"]) if "component" in npz.files else np.zeros(len(pos), int)
            sun_pos = np.asarray(npz["sun_position"], float) if "sun_position" in npz.files else SUN_POSITION
            sun_vel = np.asarray(npz["sun_velocity"], float) if "sun_velocity" in npz.files else SUN_VELOCITY
            r_max = float(npz["r_max"]) if "r_max" in npz.files else R_MAX
        if pos.ndim != 2 or pos.shape[1] != 3 or vel.shape != pos.shape:
            raise ValueError(
                f"{path}: positions and velocities must both have shape (n, 3), got {pos.shape}, {vel.shape}"
            )
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(vel))):
            raise ValueError(f"{path}: positions/velocities contain NaN or inf values")
        return cls(pos, vel, comp, sun_pos, sun_vel, r_max)


def _in_sphere(rng, n, centre, radius):
    """``n`` points uniform in a ball."""
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return centre + direction * radius * rng.uniform(size=(n, 1)) ** (1.0 / 3.0)


def _rejection(rng, n, log_density, log_max, centre, radius):
    """``n`` positions in the ball with density ``∝ exp(log_density)`` (rejection from uniform; ``log_max`` bound)."""
    out, have = [], 0
    while have < n:
        trial = _in_sphere(rng, max(4 * (n - have), 10_000), centre, radius)
        keep = np.log(rng.uniform(size=len(trial))) < log_density(trial) - log_max
        out.append(trial[keep])
        have += int(keep.sum())
    return np.concatenate(out)[:n]


def _disk(rng, n, centre, radius, scale_length, scale_height, sigma0):
    r_min = max(np.hypot(centre[0], centre[1]) - radius, 0.0)

    def log_density(p):
        return -np.hypot(p[:, 0], p[:, 1]) / scale_length - np.abs(p[:, 2]) / scale_height

    pos = _rejection(rng, n, log_density, -r_min / scale_length, centre, radius)
    R = np.hypot(pos[:, 0], pos[:, 1])
    R0 = np.hypot(centre[0], centre[1])
    sig = np.asarray(sigma0)[None, :] * np.exp(-(R - R0) / (2.0 * scale_length))[:, None]
    v_R, v_phi, v_z = (rng.normal(size=(n, 3)) * sig).T
    v_t = V_CIRC - sig[:, 0] ** 2 / 80.0 + v_phi  # asymmetric drift (Strömberg): v_a ≈ σ_R² / 80 km/s
    phi = np.arctan2(pos[:, 1], pos[:, 0])
    e_R = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    e_t = np.stack([np.sin(phi), -np.cos(phi)], axis=1)  # rotation sense: +y at the Sun (x < 0)
    vel = np.empty((n, 3))
    vel[:, :2] = v_R[:, None] * e_R + v_t[:, None] * e_t
    vel[:, 2] = v_z
    return pos, vel


def _halo(rng, n, centre, radius):
    r_min = max(np.linalg.norm(centre) - radius, 0.1)
    pos = _rejection(
        rng, n, lambda p: -3.5 * np.log(np.linalg.norm(p, axis=1)), -3.5 * np.log(r_min), centre, radius
    )
    r_hat = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    e1 = np.cross(r_hat, [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(r_hat, e1)
    v = rng.normal(size=(n, 3)) * np.array([160.0, 100.0, 100.0])
    return pos, v[:, :1] * r_hat + v[:, 1:2] * e1 + v[:, 2:3] * e2


def _stream(rng, n, centre, radius):
    direction = np.array([0.55, -0.35, 0.76])
    direction /= np.linalg.norm(direction)
    offset = np.array([0.6, 0.9, -0.3])  # closest approach of the track to the Sun, kpc
    offset -= direction * offset.dot(direction)
    half = np.sqrt(radius**2 - offset.dot(offset))
    out, have = [], 0
    while have < n:
        m = 2 * (n - have) + 100
        s = rng.uniform(-half, half, size=(m, 1))
        p = centre + offset + s * direction + 0.12 * rng.normal(size=(m, 3))
        p = p[np.linalg.norm(p - centre, axis=1) < radius]
        out.append(p)
        have += len(p)
    pos = np.concatenate(out)[:n]
    vel = 300.0 * direction + 6.0 * rng.normal(size=(n, 3))
    return pos, vel


def _satellite(rng, n, centre, radius):
    host = centre + np.array([1.2, -0.9, 1.3])
    out, have = [], 0
    while have < n:
        m = 2 * (n - have) + 100
        u = rng.uniform(size=m)
        r = 0.15 / np.sqrt(u ** (-2.0 / 3.0) - 1.0)  # Plummer radius by inverse CDF
        d = rng.normal(size=(m, 3))
        p = host + d / np.linalg.norm(d, axis=1, keepdims=True) * r[:, None]
        p = p[np.linalg.norm(p - centre, axis=1) < radius]
        out.append(p)
        have += len(p)
    pos = np.concatenate(out)[:n]
    vel = np.array([-60.0, 80.0, 210.0]) + 8.0 * rng.normal(size=(n, 3))
    return pos, vel


def generate_particles(
    n: int = 200_000,
    *,
    seed: int = 0,
    sun_position=SUN_POSITION,
    sun_velocity=SUN_VELOCITY,
    r_max: float = R_MAX,
    fractions=FRACTIONS,
) -> Particles:
    """Draw ``n`` star particles inside the sphere of radius ``r_max`` kpc around ``sun_position``.

    Parameters
    ----------
    n : number of particles (the paper's Auriga 6 selection has 482,412; h277 153,724).
    seed : seed of the ``numpy`` generator; identical seeds give identical particles.
    sun_position, sun_velocity : Solar position (kpc) and velocity (km/s) in the Galactocentric frame.
    r_max : selection radius in kpc.
    fractions : fractions of (thin disk, thick disk, halo, stream, satellite), normalised to 1.

    Returns
    -------
    Particles, shuffled (components interleaved).
    """
    if n < len(COMPONENTS):
        raise ValueError(f"need n >= {len(COMPONENTS)} particles, got {n}")
    rng = np.random.default_rng(seed)
    centre = np.asarray(sun_position, float)
    frac = np.asarray(fractions, float)
    counts = np.floor(frac / frac.sum() * n).astype(int)
    counts[0] += n - counts.sum()
    parts = [
        _disk(rng, counts[0], centre, r_max, 2.6, 0.3, (35.0, 25.0, 20.0)),
        _disk(rng, counts[1], centre, r_max, 2.0, 0.9, (60.0, 45.0, 40.0)),
        _halo(rng, counts[2], centre, r_max),
        _stream(rng, counts[3], centre, r_max),
        _satellite(rng, counts[4], centre, r_max),
    ]
    pos = np.concatenate([p for p, _ in parts])
    vel = np.concatenate([v for _, v in parts])
    comp = np.repeat(np.arange(len(COMPONENTS)), counts)
    order = rng.permutation(n)
    return Particles(
        pos[order], vel[order], comp[order], centre.copy(), np.asarray(sun_velocity, float), float(r_max)
    )
