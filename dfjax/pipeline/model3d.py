"""Step (v), the 3-D source model and its segmentation mask (Sec. 4.4 v; Fig. 9 step 12).

The 2-D Gaussian of step (iv) (x, y, FWHM_x, FWHM_y, pa; the rotation of
``sim.sky.spatial_profile``: x' = dx cos pa − dy sin pa, y' = dx sin pa + dy cos pa)
times the 1-D Gaussian of step (ii) (z, FWHM_z) is a unit-peak 3-D profile;
voxels where it is ≥ ``model3d.mask_fraction`` form the segmentation mask.
The mask is dilated by ``model3d.dilation`` (1.5) to hold the emission the
dirty beam spreads: the spatial FWHMs are multiplied by it before
thresholding, so every spatial extent of the mask grows by that factor
(not along z: the beam acts in the image plane only).
"""

from __future__ import annotations

import numpy as np

from dfjax.maths import gaussian_1d, gaussian_2d
from dfjax.pipeline.config import PipelineConfig

__all__ = ["gaussian_1d", "gaussian_2d", "segmentation_mask", "source_model"]

_DEFAULTS = PipelineConfig()


def source_model(shape: tuple[int, int, int], *, x: float, y: float, z: float, fwhm_x: float, fwhm_y: float,
                 pa: float, fwhm_z: float) -> np.ndarray:  # fmt: skip
    """Unit-peak 3-D profile g(x, y)·l(z) (FWHMs in pixels / channels, pa in degrees) → (nz, ny, nx) float32."""
    nz, ny, nx = shape
    return (gaussian_1d(nz, z, fwhm_z)[:, None, None] * gaussian_2d((ny, nx), x, y, fwhm_x, fwhm_y, pa)
            ).astype(np.float32)  # fmt: skip


def segmentation_mask(shape: tuple[int, int, int], *, x: float, y: float, z: float, fwhm_x: float,
                      fwhm_y: float, pa: float, fwhm_z: float, config: PipelineConfig = _DEFAULTS
                      ) -> np.ndarray:  # fmt: skip
    """Dilated 3-D segmentation mask (step v) → (nz, ny, nx) bool.

    True where the unit-peak model with spatial FWHMs ×``dilation``, every FWHM
    first clipped to ≥ ``min_fwhm_px``, is ≥ ``mask_fraction``. The voxel nearest (x, y, z), when on the grid, is always in.
    """
    m = config.model3d
    if len(shape) != 3:
        raise ValueError(f"expected a cube shape (nz, ny, nx), got {shape}")
    nz, ny, nx = shape
    fx, fy, fz = (max(float(v), m.min_fwhm_px) for v in (fwhm_x, fwhm_y, fwhm_z))
    spatial = gaussian_2d((ny, nx), x, y, fx * m.dilation, fy * m.dilation, pa)
    spectral = gaussian_1d(nz, z, fz)
    mask = spectral[:, None, None] * spatial[None] >= m.mask_fraction
    iz, iy, ix = int(np.rint(z)), int(np.rint(y)), int(np.rint(x))
    if 0 <= iz < nz and 0 <= iy < ny and 0 <= ix < nx:
        mask[iz, iy, ix] = True
    return mask
