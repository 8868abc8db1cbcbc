"""Figure 3–5 style views of upsampled stars: proper motions and 6-D ICRS corner plots in a sky window."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ICRS_LABELS = {
    "ra": "α [deg]",
    "dec": "δ [deg]",
    "distance": "d [kpc]",
    "pmra": "µα* [mas/yr]",
    "pmdec": "µδ [mas/yr]",
    "radial_velocity": "v_r [km/s]",
}


def _ranges(sets: dict, keys, q=(0.5, 99.5)):
    out = {}
    for k in keys:
        values = np.concatenate([s[k] for s in sets.values()])
        out[k] = np.percentile(values, q) if len(values) else (0.0, 1.0)
    return out


def proper_motion_figure(sets: dict, path, *, bins: int = 120, particles: dict | None = None, title: str = ""):
    """Side-by-side 2-D histograms of (µα*, µδ) for each upsampled set ``{name: icrs dict}`` (Fig. 3 / A1)."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    rng = _ranges(sets, ["pmra", "pmdec"], q=(1, 99))
    fig = Figure(figsize=(4.2 * len(sets), 4.0))
    for i, (name, icrs) in enumerate(sets.items()):
        ax = fig.add_subplot(1, len(sets), i + 1)
        ax.hist2d(
            icrs["pmra"],
            icrs["pmdec"],
            bins=bins,
            range=[rng["pmra"], rng["pmdec"]],
            norm=LogNorm(),
            cmap="viridis",
        )
        if particles is not None:
            ax.plot(particles["pmra"], particles["pmdec"], ".", color="k", ms=2, alpha=0.7)
        ax.set_xlabel(ICRS_LABELS["pmra"])
        ax.set_ylabel(ICRS_LABELS["pmdec"])
        ax.set_title(f"{name} ({len(icrs['pmra']):,} stars)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    return Path(path)


def corner_figure(icrs: dict, path, *, bins: int = 80, title: str = "", ranges: dict | None = None):
    """6-D corner plot of one set in ICRS (Figs. 4–5): marginals on the diagonal, 2-D histograms below it."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    keys = list(ICRS_LABELS)
    ranges = ranges or _ranges({"x": icrs}, keys)
    n = len(keys)
    fig = Figure(figsize=(2.1 * n, 2.1 * n))
    for i, ki in enumerate(keys):
        for j, kj in enumerate(keys[: i + 1]):
            ax = fig.add_subplot(n, n, i * n + j + 1)
            if i == j:
                ax.hist(icrs[ki], bins=bins, range=ranges[ki], histtype="step", color="C0")
                ax.set_yticks([])
            else:
                ax.hist2d(
                    icrs[kj], icrs[ki], bins=bins, range=[ranges[kj], ranges[ki]], norm=LogNorm(), cmap="viridis"
                )
            if i == n - 1:
                ax.set_xlabel(ICRS_LABELS[kj], fontsize=8)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(ICRS_LABELS[ki], fontsize=8)
            elif j > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=90)
    return Path(path)
