"""Figures people would rather look at than read (matplotlib, Agg backend, written to files)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np


def plot_density_comparison(
    data: np.ndarray,
    samples: np.ndarray,
    log_density: Callable,
    path: str | Path,
    labels: tuple[str, str] = ("x", "y"),
    invert_y: bool = False,
    grid_size: int = 200,
) -> Path:
    """Three panels: training data, the flow's density on a grid, and samples drawn from the flow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo = np.percentile(data, 0.5, axis=0)
    hi = np.percentile(data, 99.5, axis=0)
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    gx, gy = np.linspace(lo[0], hi[0], grid_size), np.linspace(lo[1], hi[1], grid_size)
    xx, yy = np.meshgrid(gx, gy)
    dens = np.exp(np.asarray(log_density(np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32))))
    dens = dens.reshape(xx.shape)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True, sharey=True)
    hist_kw = dict(bins=120, range=[[lo[0], hi[0]], [lo[1], hi[1]]], cmap="viridis", norm="log", cmin=1)
    axes[0].hist2d(data[:, 0], data[:, 1], **hist_kw)
    axes[0].set_title("training data")
    axes[1].pcolormesh(gx, gy, np.log10(np.maximum(dens, dens.max() * 1e-5)), cmap="viridis", shading="auto")
    axes[1].set_title("flow density (log)")
    axes[2].hist2d(samples[:, 0], samples[:, 1], **hist_kw)
    axes[2].set_title("flow samples")
    for ax in axes:
        ax.set_xlabel(labels[0])
    axes[0].set_ylabel(labels[1])
    if invert_y:
        axes[0].invert_yaxis()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- colour–magnitude figures

CMD_XLABEL = "BP − RP [mag]"
CMD_YLABEL = "M_G [mag]"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite_rows(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2) = (colour, magnitude), got {p.shape}")
    return p[np.all(np.isfinite(p), axis=1)]


def _cmd_limits(point_sets, xlim, ylim) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits: given ones, else the 0.5–99.5 % range of all finite points, padded by 5 %."""
    if xlim is not None and ylim is not None:
        return tuple(xlim), tuple(ylim)
    sets = [s for s in point_sets if s.size]
    if not sets:
        raise ValueError("no finite points and no explicit limits")
    allp = np.concatenate(sets)
    lo, hi = np.percentile(allp, 0.5, axis=0), np.percentile(allp, 99.5, axis=0)
    pad = 0.05 * np.maximum(hi - lo, 1e-3)
    auto = [(float(lo[j] - pad[j]), float(hi[j] + pad[j])) for j in range(2)]
    return (tuple(xlim) if xlim is not None else auto[0]), (tuple(ylim) if ylim is not None else auto[1])


def _density_histogram(points: np.ndarray, xlim, ylim, bins) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D histogram as a number density [mag⁻²] normalised to the number of points given (not only those shown)."""
    nx, ny = (bins, bins) if np.ndim(bins) == 0 else bins
    h, xe, ye = np.histogram2d(points[:, 0], points[:, 1], bins=[nx, ny], range=[xlim, ylim])
    area = (xe[1] - xe[0]) * (ye[1] - ye[0])
    return xe, ye, h.T / (max(points.shape[0], 1) * area)


def plot_cmd_density(
    panels,
    path: str | Path,
    *,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    xlabel: str = CMD_XLABEL,
    ylabel: str = CMD_YLABEL,
    ncols: int | None = None,
    bins: int = 120,
    dynamic_range: float = 1e-3,
    shared_scale: bool = True,
    suptitle: str | None = None,
    panel_size: tuple[float, float] = (4.3, 4.0),
    dpi: int = 100,
) -> Path:
    """Colour–magnitude panels drawn as densities on one colour scale (Cranmer et al. Figs. 2 and 3).

    Each panel is a dict with a ``"title"`` and exactly one of

    * ``"points"``: ``(n, 2)`` array of (colour, magnitude) — drawn as a 2-D histogram converted to a number
      density per mag² normalised to ``n`` (so it is directly comparable with a normalised density);
    * ``"grid"``: ``(x, y, density)`` with ``x (nx,)``, ``y (ny,)`` cell centres and ``density (ny, nx)`` in
      mag⁻² (e.g. a flow's marginal density on a grid);
    * ``"hist"``: 1-D values drawn as a histogram (e.g. parallaxes), with optional ``"hist_xlabel"``,
      ``"hist_range"``, ``"hist_bins"``, ``"hist_label"``, ``"hist_reference"`` (a second set of values drawn as
      an outline) and ``"hist_reference_label"``.

    Optional per-panel ``"log"`` (default True) selects a logarithmic colour scale; ``"bins"`` overrides ``bins``
    for a ``points`` panel. With ``shared_scale`` all density panels of the same ``log`` setting share ``vmax``
    (the largest density among them) and, when logarithmic, ``vmin = dynamic_range · vmax``: equal colours mean
    equal densities across panels. Rows with a non-finite coordinate are not drawn; the number drawn is in the
    title. The magnitude axis is inverted (bright at the top).

    Returns the path written.
    """
    from matplotlib.colors import LogNorm, Normalize

    plt = _pyplot()
    panels = list(panels)
    if not panels:
        raise ValueError("need at least one panel")
    prepared, point_sets = [], []
    for panel in panels:
        kinds = [k for k in ("points", "grid", "hist") if k in panel]
        if len(kinds) != 1:
            raise ValueError(f"each panel needs exactly one of points/grid/hist, got {kinds}")
        p = dict(panel)
        if "points" in p:
            p["points"] = _finite_rows(p["points"])
            point_sets.append(p["points"])
        prepared.append(p)
    if not any(ps.size for ps in point_sets):  # only grids (or histograms): their extents set the limits
        for p in prepared:
            if "grid" in p:
                gx, gy = np.asarray(p["grid"][0], dtype=np.float64), np.asarray(p["grid"][1], dtype=np.float64)
                point_sets.append(np.array([[gx.min(), gy.min()], [gx.max(), gy.max()]]))
                break
    xlim, ylim = _cmd_limits(point_sets, xlim, ylim)

    images = []  # (panel index, x edges or centres, y, density, log)
    for i, p in enumerate(prepared):
        log = bool(p.get("log", True))
        if "points" in p:
            xe, ye, dens = _density_histogram(p["points"], xlim, ylim, p.get("bins", bins))
            images.append((i, xe, ye, dens, log))
        elif "grid" in p:
            x, y, dens = (np.asarray(a, dtype=np.float64) for a in p["grid"])
            if dens.shape != (y.size, x.size):
                raise ValueError(f"grid density must have shape (ny, nx) = {(y.size, x.size)}, got {dens.shape}")
            images.append((i, x, y, dens, log))
    scale: dict[bool, float] = {}
    for _, _, _, dens, log in images:
        top = float(np.nanmax(dens)) if dens.size else 0.0
        scale[log] = max(scale.get(log, 0.0), top) if shared_scale else top

    ncols = min(len(prepared), 4) if ncols is None else ncols
    nrows = int(np.ceil(len(prepared) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False)
    for ax in axes.ravel()[len(prepared) :]:
        ax.set_visible(False)
    for i, x, y, dens, log in images:
        ax = axes.ravel()[i]
        vmax = scale[log] if shared_scale else float(np.nanmax(dens))
        vmax = vmax if vmax > 0 else 1.0
        norm = LogNorm(vmin=vmax * dynamic_range, vmax=vmax) if log else Normalize(vmin=0.0, vmax=vmax)
        shown = np.where(dens >= vmax * dynamic_range, dens, np.nan) if log else dens
        mesh = ax.pcolormesh(x, y, shown, norm=norm, cmap="viridis", shading="auto", rasterized=True)
        label = "density [mag⁻²]"
        fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.03).set_label(label + (" (log scale)" if log else ""))
        ax.set_xlim(xlim)
        ax.set_ylim(ylim[1], ylim[0])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        title = prepared[i].get("title", "")
        if "points" in prepared[i]:
            title = f"{title}\n(n = {prepared[i]['points'].shape[0]:,})"
        ax.set_title(title, fontsize=10)
    for i, p in enumerate(prepared):
        if "hist" not in p:
            continue
        ax = axes.ravel()[i]
        values = np.asarray(p["hist"], dtype=np.float64)
        values = values[np.isfinite(values)]
        hist_range = p.get("hist_range") or (float(np.percentile(values, 0.5)), float(np.percentile(values, 99.5)))
        hist_bins = p.get("hist_bins", 100)
        ax.hist(
            values, bins=hist_bins, range=hist_range, histtype="stepfilled", alpha=0.6, label=p.get("hist_label")
        )
        if "hist_reference" in p:
            ref = np.asarray(p["hist_reference"], dtype=np.float64)
            ax.hist(
                ref[np.isfinite(ref)],
                bins=hist_bins,
                range=hist_range,
                histtype="step",
                color="k",
                lw=1.2,
                label=p.get("hist_reference_label"),
            )
        if p.get("hist_label") or p.get("hist_reference_label"):
            ax.legend(fontsize=8)
        ax.set_xlabel(p.get("hist_xlabel", ""))
        ax.set_ylabel("stars per bin")
        ax.set_title(p.get("title", ""), fontsize=10)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_cmd_before_after(
    before,
    after,
    path: str | Path,
    *,
    truth=None,
    rows=None,
    titles: tuple[str, ...] = ("inverse parallax", "model (posterior mean distance)", "truth"),
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    xlabel: str = CMD_XLABEL,
    ylabel: str = CMD_YLABEL,
    bins: int = 100,
    dynamic_range: float = 1e-3,
    panel_size: tuple[float, float] = (4.3, 4.0),
    dpi: int = 100,
) -> Path:
    """The CMD with naive distances next to the CMD with model distances (Cranmer et al. Fig. 4, "tightening").

    Parameters
    ----------
    before, after : array_like, shape (n, 2)
        (colour, absolute magnitude) of the same ``n`` stars with the naive distance (e.g. ``1/ϖ``; NaN where the
        parallax is not positive) and with the model's distance. Rows with a non-finite entry are not drawn.
    path : output PNG.
    truth : array_like, shape (n, 2), optional
        The true (colour, absolute magnitude), drawn as a third column when given (simulations).
    rows : sequence of (label, boolean mask of length n), optional
        One figure row per selection (e.g. parallax-SNR cuts as in Fig. 4 b–c); default one row of all stars.
    titles : column titles (before, after[, truth]).
    xlim, ylim : axis limits (default: from the ``after``/``truth`` points, 0.5–99.5 %).
    bins, dynamic_range : histogram bins per axis; log colour range (``vmin = dynamic_range · vmax``).

    The colour is the log of the number density normalised to the stars drawn in that panel (per mag²); all
    panels share one colour scale. Returns the path written.
    """
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    cols = [np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)]
    if truth is not None:
        cols.append(np.asarray(truth, dtype=np.float64))
    n = cols[0].shape[0]
    for c in cols:
        if c.shape != (n, 2):
            raise ValueError(f"before/after/truth must all have shape ({n}, 2), got {c.shape}")
    rows = (
        [("all stars", np.ones(n, dtype=bool))]
        if rows is None
        else [(lab, np.asarray(m, bool)) for lab, m in rows]
    )
    ref = [_finite_rows(c) for c in cols[1:]]
    xlim, ylim = _cmd_limits(ref, xlim, ylim)

    hists = []
    for _, mask in rows:
        for c in cols:
            pts = _finite_rows(c[mask])
            xe, ye, dens = _density_histogram(pts, xlim, ylim, bins)
            hists.append((xe, ye, dens, pts.shape[0]))
    vmax = max(float(h[2].max()) for h in hists if h[2].size) or 1.0
    norm = LogNorm(vmin=vmax * dynamic_range, vmax=vmax)
    ncols = len(cols)
    fig, axes = plt.subplots(
        len(rows),
        ncols,
        figsize=(panel_size[0] * ncols + 0.8, panel_size[1] * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    mesh = None
    for r, (label, _) in enumerate(rows):
        for j in range(ncols):
            xe, ye, dens, count = hists[r * ncols + j]
            ax = axes[r, j]
            shown = np.where(dens >= vmax * dynamic_range, dens, np.nan)
            mesh = ax.pcolormesh(xe, ye, shown, norm=norm, cmap="viridis", rasterized=True)
            ax.set_xlim(xlim)
            ax.set_ylim(ylim[1], ylim[0])
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(f"{titles[j] if j < len(titles) else ''} — {label}\n(n = {count:,})", fontsize=9)
    if mesh is not None:
        fig.colorbar(mesh, ax=axes.ravel().tolist(), fraction=0.03, pad=0.01).set_label(
            "normalised number density [mag⁻²]"
        )
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_cmd_recovery(
    true_distance,
    estimates,
    parallax_snr,
    path: str | Path,
    *,
    errors=None,
    snr_bins=None,
    dpi: int = 100,
) -> Path:
    """How well distance estimates recover the truth as the parallax gets noisier (simulations).

    Three panels: (a) median fractional error ``(d̂ − d)/d`` with its 16–84 % band per parallax-SNR bin, (b) the
    median absolute fractional error per bin (log scale), (c) for estimates with an uncertainty, the histogram of
    ``z = (d̂ − d)/σ`` against a unit normal.

    Parameters
    ----------
    true_distance : array_like, shape (n,)
    estimates : mapping of name to array_like (n,)
        Distance estimates [pc]; NaN where a method gives none (e.g. ``1/ϖ`` for ``ϖ <= 0``: such stars are
        left out of that method's curve, and the fraction left out is in the legend).
    parallax_snr : array_like (n,)
        ``ϖ / σ_ϖ`` per star, the binning variable.
    path : output PNG.
    errors : mapping of name to array_like (n,), optional
        1-σ uncertainties for the z-score panel.
    snr_bins : bin edges (default: logarithmic from 0.3 to the 99th percentile, plus one bin for SNR ≤ 0.3).

    Returns the path written.
    """
    plt = _pyplot()
    d = np.asarray(true_distance, dtype=np.float64)
    snr = np.asarray(parallax_snr, dtype=np.float64)
    if snr_bins is None:
        top = max(float(np.nanpercentile(snr, 99)), 1.0)
        snr_bins = np.concatenate([[-np.inf], np.geomspace(0.3, top, 12)])
    edges = np.asarray(snr_bins, dtype=np.float64)
    # plotting position of each bin: geometric centre; an open or non-positive lower edge sits at half the upper
    centres = np.array(
        [np.sqrt(a * b) if np.isfinite(a) and a > 0 else 0.5 * b for a, b in itertools.pairwise(edges)]
    )
    fig, axes = plt.subplots(1, 3 if errors else 2, figsize=(15 if errors else 10, 4.2))
    for name, est in estimates.items():
        est = np.asarray(est, dtype=np.float64)
        frac = (est - d) / d
        med, lo, hi, mae = [], [], [], []
        for a, b in itertools.pairwise(edges):
            m = (snr > a) & (snr <= b) & np.isfinite(frac)
            if m.sum() < 5:
                med.append(np.nan), lo.append(np.nan), hi.append(np.nan), mae.append(np.nan)
                continue
            q = np.percentile(frac[m], [16, 50, 84])
            lo.append(q[0]), med.append(q[1]), hi.append(q[2]), mae.append(np.median(np.abs(frac[m])))
        missing = np.mean(~np.isfinite(est))
        label = f"{name}" + (f" ({100 * missing:.0f}% undefined)" if missing > 0 else "")
        line = axes[0].plot(centres, med, marker="o", ms=3, label=label)[0]
        axes[0].fill_between(centres, lo, hi, color=line.get_color(), alpha=0.2)
        axes[1].plot(centres, mae, marker="o", ms=3, color=line.get_color(), label=label)
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_xlabel("parallax SNR ϖ/σ_ϖ (bin centre; first bin: SNR ≤ 0.3)")
        ax.legend(fontsize=8)
    axes[0].axhline(0.0, color="k", lw=0.8)
    axes[0].set_ylim(-1.0, 2.0)
    axes[0].set_ylabel("(d̂ − d_true) / d_true: median and 16–84 %")
    axes[0].set_title("(a) fractional error vs parallax SNR", fontsize=10)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("median |d̂ − d_true| / d_true")
    axes[1].set_title("(b) median absolute fractional error", fontsize=10)
    if errors:
        ax = axes[2]
        grid = np.linspace(-5, 5, 201)
        for name, err in errors.items():
            z = (np.asarray(estimates[name], dtype=np.float64) - d) / np.asarray(err, dtype=np.float64)
            z = z[np.isfinite(z)]
            inside = np.mean(np.abs(z) < 1.0) if z.size else np.nan
            ax.hist(
                np.clip(z, -5, 5),
                bins=80,
                range=(-5, 5),
                density=True,
                histtype="step",
                lw=1.4,
                label=f"{name}: |z| < 1 for {100 * inside:.1f}%",
            )
        ax.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), "k--", lw=1, label="unit normal (68.3%)")
        ax.set_xlabel("z = (d̂ − d_true) / σ  (clipped to ±5)")
        ax.set_ylabel("density")
        ax.set_title("(c) calibration of the uncertainties", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
