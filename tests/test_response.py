"""dfjax.response: a PB-corrected cube is run with the flat noise the models were trained on."""

import numpy as np
import pytest
from scipy import ndimage

from dfjax.response import NOISE_VARIES, field_response, local_noise, noise_follows_pb

N, NZ = 256, 48


def _beam_noise(seed: int) -> np.ndarray:
    """Unit-rms noise (NZ, N, N) correlated over a few pixels, like a dirty image's."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(NZ, N, N)), (0, 2.5, 2.5))
    return (noise / noise.std()).astype(np.float32)


def _primary_beam() -> np.ndarray:
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    # ALMA's at 230 GHz and 0.1"/px: 0.19 in the corners
    return np.exp(-0.5 * (xx**2 + yy**2) / 100.0**2).astype(np.float32)


def test_flat_noise_needs_nothing_and_a_pb_corrected_cube_gets_the_pb_its_noise_implies():
    flat = _beam_noise(0)
    assert field_response(flat) is None
    pb = _primary_beam()
    corrected = np.where(pb > 0.2, flat / pb, np.nan)  # what tclean's .image.pbcor holds: NaN below pblimit
    response = field_response(corrected)
    assert response.kind == "noise" and response.pb_corrected
    inside = pb > 0.25
    ratio = response.weight[inside] / pb[inside]
    assert np.percentile(ratio, 2) > 0.85 and np.percentile(ratio, 98) < 1.2
    assert np.isnan(response.weight[pb < 0.2]).all() and np.isnan(response.data[:, pb < 0.2]).all()
    edge, centre = response.data[:, inside & (pb < 0.4)], response.data[:, pb > 0.9]
    assert np.std(edge) / np.std(centre) == pytest.approx(1.0, abs=0.2)  # flat noise again
    assert np.nanstd(corrected[:, inside & (pb < 0.4)]) / np.std(centre) > NOISE_VARIES


def test_with_a_pb_the_noise_says_whether_the_cube_was_divided_by_it():
    flat, pb = _beam_noise(1), _primary_beam()
    corrected = np.where(pb > 0.2, flat / pb, np.nan)
    assert not noise_follows_pb(local_noise(flat), pb)
    assert noise_follows_pb(local_noise(corrected), pb)
    plain = field_response(flat, pb)
    assert plain.kind == "pb" and not plain.pb_corrected
    np.testing.assert_array_equal(plain.data, flat)  # the image is run as it is; only the fluxes are divided
    divided = field_response(corrected, pb)
    assert divided.pb_corrected
    np.testing.assert_allclose(divided.data[:, pb > 0.2], flat[:, pb > 0.2], rtol=1e-5, atol=1e-6)
    told = field_response(flat, pb, pb_corrected=True)  # the header's PBCOR wins over the measurement
    assert told.pb_corrected


def test_local_noise_ignores_a_bright_line_and_refuses_a_blank_cube():
    cube = _beam_noise(2)
    cube[20:26, 110:142, 110:142] += 30.0  # a bright line: 6 of 48 channels
    noise = local_noise(cube)
    assert noise.shape == (N, N) and np.nanmax(noise) / np.nanmin(noise) < 1.35
    assert field_response(cube) is None
    with pytest.raises(ValueError, match="enough finite channels"):
        local_noise(np.full((4, 16, 16), np.nan, np.float32))
