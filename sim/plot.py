"""Quick-look figure of a simulated cube: integrated sky model and dirty image with the truth
boxes (as in the paper's Fig. 1), and each source's spectrum in both."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table


def preview(cube_path: str | os.PathLike, sky_path: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Write a PNG for one cube of a `generate` directory; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    with fits.open(cube_path) as hdul:
        dirty = np.asarray(hdul[0].data[0], np.float64)
        header = hdul[0].header
        sources = Table(hdul["SOURCES"].data)
    sky = np.asarray(fits.getdata(sky_path)[0], np.float64)
    fig = plt.figure(figsize=(13, 8), layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=(3, 2))
    images = [("sky model, integrated (Jy/pixel)", sky.sum(axis=0)), ("dirty cube, integrated (Jy/beam)", dirty.sum(axis=0))]
    for k, (title, image) in enumerate(images):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(image, origin="lower", cmap="inferno")
        for row in sources:
            ax.add_patch(Rectangle((row["x0"] - 0.5, row["y0"] - 0.5), row["x1"] - row["x0"], row["y1"] - row["y0"],
                                   fill=False, color="cyan", lw=1))  # fmt: skip
            ax.text(row["x1"], row["y1"], str(row["id"]), color="cyan", fontsize=8)
        ax.set(title=title, xlabel="x (pixel, RA increases to the left)", ylabel="y (pixel)")
    ax = fig.add_subplot(grid[0, 2])
    ax.axis("off")
    lines = [f"{header.get('ANTCFG', '')}  noise={header.get('NOISE', '')}  rms={header.get('NOISERMS', 0) * 1e3:.3f} mJy/beam",
             f"beam {header['BMAJ'] * 3600:.3f}\" x {header['BMIN'] * 3600:.3f}\"  pa {header['BPA']:.1f} deg", "",
             " id      x      y      z  fwhm_z  peak_snr  blend"]  # fmt: skip
    lines += [f"{r['id']:3d} {r['x']:6.1f} {r['y']:6.1f} {r['z']:6.1f} {r['fwhm_z']:6.1f} {r['peak_snr']:9.1f} {r['blendness']:6.2f}"
              for r in sources]  # fmt: skip
    ax.text(0, 1, "\n".join(lines), family="monospace", fontsize=9, va="top")
    ax = fig.add_subplot(grid[1, :])
    for row in sources:
        y, x = int(round(row["y"])), int(round(row["x"]))
        line = ax.plot(dirty[:, y, x], lw=1, label=f"{row['id']} dirty")[0]
        scale = dirty[:, y, x].max() / max(sky[:, y, x].max(), 1e-30)
        ax.plot(sky[:, y, x] * scale, lw=1, ls="--", color=line.get_color(), label=f"{row['id']} sky (scaled)")
        ax.axvspan(row["z0"], row["z1"], color=line.get_color(), alpha=0.08)
    ax.set(xlabel="z (channel)", ylabel="Jy/beam at the source centre", title="spectra (shaded: z0..z1)")
    ax.legend(ncol=6, fontsize=7)
    out = Path(out_png)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
