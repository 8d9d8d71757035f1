"""Pipeline step (iii) on hand-made cubes: SNR conditions (Fig. 14 condition 1 and the final cut),
deblending two sources blended in one box, condition 2 and the merging of a split line; the
``lines`` mode (one source per line, duplicates dropped, lines refitted on their own spectra)."""

from __future__ import annotations

import numpy as np
import pytest

from dfjax.input_pipeline.transforms import global_snr
from dfjax.pipeline import (
    Candidate,
    Detection,
    Line,
    PipelineConfig,
    boxes_from_map,
    drop_duplicates,
    focus_candidate,
    focus_candidates,
    grow_region,
    pixel_snr,
    pixel_weighted_centre,
    refit_line,
)
from dfjax.pipeline.config import ConfigError

FWHM_PER_SIGMA = 2.3548200450309493
NZ, NY, NX = 80, 48, 56  # not square: a swapped x/y would move sources off their boxes


def blob_cube(sources, *, noise=0.05, seed=0, shape=(NZ, NY, NX)):
    """Sum of (x, y, fwhm_xy, z, fwhm_z, amplitude) Gaussian sources plus white noise → (nz, ny, nx) f32."""
    nz, ny, nx = shape
    zz, yy, xx = np.arange(nz)[:, None, None], np.arange(ny)[None, :, None], np.arange(nx)[None, None, :]
    cube = np.random.default_rng(seed).normal(0.0, noise, shape)
    for x, y, fwhm, z, fwhm_z, amp in sources:
        s, sz = fwhm / FWHM_PER_SIGMA, fwhm_z / FWHM_PER_SIGMA
        cube += amp * np.exp(-0.5 * (((xx - x) ** 2 + (yy - y) ** 2) / s**2 + (zz - z) ** 2 / sz**2))
    return cube.astype(np.float32)


def line(z, fwhm_z, amplitude=1.0):
    return Line(z=z, fwhm_z=fwhm_z, z0=z - fwhm_z, z1=z + fwhm_z, amplitude=amplitude)


def candidate(box, *lines):
    return Candidate(box=box, lines=tuple(lines), continuum_slope=0.0, continuum_intercept=0.0,
                     needs_deblending=len(lines) > 1, spectrum=np.zeros(NZ), denoised=np.zeros(NZ))  # fmt: skip


def blob_box(sources, threshold=0.15):
    """The box Blobs Finder would draw: the noise-free integrated cube above 0.15 of its peak."""
    image = blob_cube(sources, noise=0.0).sum(axis=0)
    (box,) = boxes_from_map(image / image.max(), threshold=threshold)
    return tuple(int(v) for v in box)


def centre(d: Detection):
    return np.array(pixel_weighted_centre(d.image, d.offset, d.box))


def test_pixel_snr_is_value_over_spread_of_the_whole_image():
    image = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(pixel_snr(image), image / image.std())
    np.testing.assert_allclose(pixel_snr(image, spread="var"), image / image.var())
    assert not pixel_snr(np.ones((3, 3))).any()
    with pytest.raises(ValueError):
        pixel_snr(image, spread="mad")


@pytest.mark.parametrize("seed", range(3))
def test_two_sources_at_different_frequencies_in_one_box_are_deblended(seed):
    sources = [(20, 24, 6, 20, 6, 1.0), (30, 24, 6, 60, 6, 0.8)]  # 10 px apart, lines at z = 20 and 60
    box = blob_box(sources)  # one blob around both
    assert box[0] < 20 and box[2] > 31
    dets = focus_candidate(blob_cube(sources, seed=seed), candidate(box, line(20, 6, 1.0), line(60, 6, 0.8)))
    assert len(dets) == 2
    primary, secondary = dets
    assert primary.flags == {"blended"} and secondary.flags == {"deblended"}
    assert (primary.z0, primary.z1, primary.z) == (14, 26, 20)
    assert (secondary.z0, secondary.z1, secondary.z) == (54, 66, 60)
    np.testing.assert_allclose(centre(primary), (20, 24), atol=1.0)
    np.testing.assert_allclose(centre(secondary), (30, 24), atol=1.0)
    for d, x in ((primary, 20), (secondary, 30)):  # each grown box holds its own source only
        x0, y0, x1, y1 = d.box
        assert x0 <= x < x1 and y0 <= 24 < y1 and x1 - x0 < 16
        assert d.image.shape == (64, 64) and d.snr >= 1
        np.testing.assert_array_equal(d.offset, ((x0 + x1) // 2 - 32, (y0 + y1) // 2 - 32))  # re-focused
    assert primary.box[2] <= 30 and secondary.box[0] > 20


def test_grow_region_box_around_a_blob_and_stops_in_the_noise():
    cube = blob_cube([(30, 24, 4, 10, 4, 1.0)], shape=(20, NY, NX))
    image = cube[5:16].sum(axis=0)
    x0, y0, x1, y1 = grow_region(image, (30, 24))
    assert x0 <= 28 and x1 >= 33 and y0 <= 22 and y1 >= 27  # at least ± FWHM/2
    assert x1 - x0 < 16 and y1 - y0 < 16  # did not wander off into the noise


@pytest.mark.parametrize("seed", range(4))
def test_a_line_on_pure_noise_is_removed(seed):
    cube = blob_cube([], seed=seed)
    assert focus_candidate(cube, candidate((20, 20, 28, 28), line(30, 4))) == []


def test_a_bright_source_is_kept_with_global_snr_above_6():
    sources = [(30, 20, 3, 40, 6, 1.0)]
    box = blob_box(sources)
    (d,) = focus_candidates(blob_cube(sources), [candidate(box, line(40, 6))])
    assert d.snr > 6 and d.flags == frozenset() and d.box == box
    wbox = (box[0] - d.offset[0], box[1] - d.offset[1], box[2] - d.offset[0], box[3] - d.offset[1])
    assert d.snr == pytest.approx(global_snr(d.image, wbox))
    np.testing.assert_allclose(centre(d), (30, 20), atol=0.5)


def test_condition_1_drops_a_faint_line_whose_focusing_lowers_the_snr():
    cube = blob_cube([(30, 20, 5, z, 4, 0.2) for z in range(0, NZ, 4)], seed=1)  # emission in every channel
    cand = candidate((26, 16, 35, 25), line(40, 2))
    config = PipelineConfig().replace(**{"focus.bright_snr": 1e6})  # never "bright": focusing must help
    assert focus_candidate(cube, cand, config) == []  # 5 channels hold less S/N than 80
    bright = PipelineConfig().replace(**{"focus.bright_snr": 0.5})
    assert len(focus_candidate(cube, cand, bright)) == 1  # bright on the integrated cube: kept


def test_condition_2_drops_an_overlapping_secondary_at_the_same_pixel():
    cube = blob_cube([(30, 20, 5, 40, 8, 1.0)])
    cand = candidate((26, 16, 35, 25), line(40, 8, 1.0), line(44, 4, 0.5))
    (d,) = focus_candidate(cube, cand)
    assert d.flags == frozenset() and (d.z0, d.z1) == (32, 48)


def test_a_split_line_at_the_same_pixel_is_merged_when_that_raises_the_snr():
    cube = blob_cube([(30, 20, 5, 40, 16, 1.0)])  # one broad line, found as two narrow peaks
    cand = candidate((26, 16, 35, 25), line(34, 4, 1.0), line(46, 4, 0.9))
    (d,) = focus_candidate(cube, cand)
    assert (d.z0, d.z1) == (30, 50) and d.z == 40 and d.fwhm_z == 10
    cube = blob_cube([(30, 20, 5, 40, 6, 1.0)])
    far = candidate((26, 16, 35, 25), line(40, 6, 1.0), line(70, 3, 0.9))  # a noise "line": not merged
    (d,) = focus_candidate(cube, far)
    assert (d.z0, d.z1) == (34, 46) and d.flags == frozenset()


LINES = PipelineConfig().replace(**{"focus.mode": "lines"})


@pytest.mark.parametrize("seed", range(3))
def test_lines_mode_keeps_two_sources_at_one_place_and_different_frequencies(seed):
    sources = [(30, 24, 5, 20, 6, 1.0), (31, 24, 5, 60, 6, 0.8)]  # one pixel apart, lines far apart
    box = blob_box(sources)
    cube = blob_cube(sources, seed=seed)
    cand = candidate(box, line(20, 6, 1.0), line(60, 6, 0.8))
    assert len(focus_candidate(cube, cand)) == 1  # Fig. 14: the same place, so one source with both lines
    dets = focus_candidates(cube, [cand], LINES)
    assert [(d.z0, d.z1) for d in dets] == [(14, 26), (54, 66)]
    assert all(d.flags == {"deblended"} for d in dets)
    for d, x in zip(dets, (30, 31)):
        np.testing.assert_allclose(centre(d), (x, 24), atol=1.0)


@pytest.mark.parametrize("seed", range(3))
def test_lines_mode_places_each_line_at_its_own_source(seed):
    sources = [(20, 24, 6, 20, 6, 1.0), (30, 24, 6, 60, 6, 0.8)]
    box = blob_box(sources)  # one blob around both
    dets = focus_candidates(blob_cube(sources, seed=seed), [candidate(box, line(20, 6, 1.0), line(60, 6, 0.8))],
                            LINES)  # fmt: skip
    assert len(dets) == 2
    for d, x in zip(dets, (20, 30)):
        np.testing.assert_allclose(centre(d), (x, 24), atol=1.0)
        assert d.box[0] <= x < d.box[2] and d.box[2] - d.box[0] < 16


def test_seed_on_line_places_a_line_by_its_emission_not_a_neighbours_continuum():
    sources = [(20, 24, 6, 40, 1e4, 1.0), (30, 24, 6, 60, 6, 0.5)]  # continuum only; a fainter line source
    box = (14, 18, 37, 31)  # one Blobs Finder box around both
    cube = blob_cube(sources, seed=4)
    cand = candidate(box, line(60, 6, 1.0))
    (d,) = focus_candidates(cube, [cand], LINES)
    np.testing.assert_allclose(centre(d)[0], 20, atol=2.0)  # the focused image's peak: the continuum
    (d,) = focus_candidates(cube, [cand], LINES.replace(**{"focus.seed_on_line": True}))
    np.testing.assert_allclose(centre(d), (30, 24), atol=1.0)


def test_lines_mode_drops_noise_lines_under_min_snr():
    cube = blob_cube([(30, 20, 4, 40, 6, 1.0)], seed=2)
    cand = candidate((26, 16, 35, 25), line(40, 6, 1.0), line(70, 3, 0.3))  # the second: noise only
    dets = focus_candidates(cube, [cand], LINES.replace(**{"focus.min_snr": 3.0}))
    assert [(d.z0, d.z1) for d in dets] == [(34, 46)]


def test_drop_duplicates_keeps_the_higher_snr_of_one_place_and_range():
    def det(box, z0, z1, snr):
        return Detection(box=box, z0=z0, z1=z1, z=(z0 + z1) / 2, fwhm_z=(z1 - z0) / 2, image=np.zeros((4, 4)),
                         offset=np.zeros(2, np.int64), snr=snr)  # fmt: skip

    a = det((10, 10, 18, 18), 20, 30, 5.0)
    again = det((11, 10, 19, 18), 25, 35, 7.0)  # same place, overlapping channels: a repeat of `a`
    other_z = det((10, 10, 18, 18), 40, 50, 3.0)  # same place, other channels: another source
    other_xy = det((30, 10, 38, 18), 20, 30, 2.0)  # same channels, elsewhere: another source
    wide = det((2, 2, 26, 26), 22, 28, 1.0)  # centres 1 px apart, boxes not alike: still the same place
    assert drop_duplicates([a, again, other_z, other_xy, wide]) == [again, other_z, other_xy]
    big = det((10, 10, 30, 30), 20, 30, 4.0)
    shifted = det((14, 10, 34, 30), 20, 30, 9.0)  # centres 4 px apart (> 3) but IoU 0.67: the same place
    apart = det((17, 10, 37, 30), 20, 30, 9.0)  # centres 7 px apart, IoU 0.48: another source
    assert drop_duplicates([big, shifted]) == [shifted]
    assert drop_duplicates([big, apart]) == [big, apart]
    assert drop_duplicates([a, other_xy]) == [a, other_xy]  # order kept


@pytest.mark.parametrize("seed", range(3))
def test_refit_line_corrects_a_guess_on_the_sources_own_spectrum(seed):
    z = np.arange(NZ, dtype=np.float64)
    rng = np.random.default_rng(seed)
    spectrum = 2.0 + 0.01 * z + 5.0 * np.exp(-0.5 * ((z - 40.0) / (8.0 / FWHM_PER_SIGMA)) ** 2)
    spectrum += rng.normal(0.0, 0.3, NZ)
    fitted = refit_line(spectrum, line(42.5, 5.0))  # off by 2.5 channels, too narrow
    assert fitted.z == pytest.approx(40.0, abs=0.5) and fitted.fwhm_z == pytest.approx(8.0, rel=0.15)
    assert (fitted.z0, fitted.z1) == pytest.approx((fitted.z - fitted.fwhm_z, fitted.z + fitted.fwhm_z))
    guess = line(10.0, 3.0)  # on noise alone: whatever the fit does, the line stays near its guess
    for _ in range(5):
        out = refit_line(rng.normal(0.0, 0.3, NZ), guess)
        assert abs(out.z - 10.0) <= 3.0 and 3.0 / 2.5 <= out.fwhm_z <= 3.0 * 2.5


def test_unknown_focus_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="focus.mode"):
        PipelineConfig().replace(**{"focus.mode": "fig14"})
