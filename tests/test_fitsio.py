import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from sim import fitsio
from sim.config import SimConfig
from sim.sky import channel_frequencies


def _sky_file(path, *, stokes=True, descending=False, spectral=True, celestial=True, n=32, nz=4):
    obs = SimConfig().observation
    freqs = channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, nz)
    if descending:
        freqs = freqs[::-1]
    header = fitsio.celestial_header(obs, n, freqs)
    data = np.zeros((nz, n, n), np.float32)
    data[:, n // 2, n // 2 - 5] = np.linspace(1e-3, 2e-3, nz)
    if not stokes:
        for key in ("NAXIS4", "CTYPE4", "CRPIX4", "CRVAL4", "CDELT4", "CUNIT4"):
            del header[key]
        header["NAXIS"] = 3
        hdu = fits.PrimaryHDU(data, header=header)
    else:
        hdu = fits.PrimaryHDU(data[None], header=header)
    if not spectral:
        hdu = fits.PrimaryHDU(data[0])
        hdu.header.update({k: header[k] for k in header if k[-1] in "12" and k.startswith(("C",))})
    if not celestial:
        hdu.header["CTYPE1"], hdu.header["CTYPE2"] = "X", "Y"
    hdu.header["BUNIT"] = "Jy/pixel"
    hdu.writeto(path)
    return path, data, freqs


def test_read_sky_handles_stokes_and_descending_frequency(tmp_path):
    path, data, freqs = _sky_file(tmp_path / "a.fits", stokes=False, descending=True)
    sky = fitsio.read_sky(path)
    assert sky.cube.shape == (4, 32, 32) and np.array_equal(sky.cube, data)
    assert np.allclose(sky.freqs_hz, freqs) and sky.freqs_hz[0] > sky.freqs_hz[-1]
    assert sky.cell_arcsec == pytest.approx(0.1) and sky.dec_deg == pytest.approx(-34.99986111)


def _observe(*args):
    return subprocess.run([sys.executable, "-m", "sim", "observe", *map(str, args)], capture_output=True, text=True)


def test_observe_cli_on_any_sky_fits_and_frequency_order(tmp_path):
    up, data, freqs = _sky_file(tmp_path / "up.fits")
    down, _, _ = _sky_file(tmp_path / "down.fits", stokes=False, descending=True)
    # same physical sky: the descending file holds the channels in reverse order
    with fits.open(down, mode="update") as h:
        h[0].data = data[::-1].copy()
    for src, out in ((up, "up_d.fits"), (down, "down_d.fits")):
        r = _observe(src, "--out", tmp_path / out, "--noise", "none", "--psf", tmp_path / f"psf_{out}")
        assert r.returncode == 0, r.stderr
    a, b = fits.getdata(tmp_path / "up_d.fits")[0], fits.getdata(tmp_path / "down_d.fits")[0]
    assert np.allclose(a, b[::-1], atol=1e-7)
    assert fits.getheader(tmp_path / "down_d.fits")["CDELT3"] < 0
    psf = fits.getdata(tmp_path / "psf_up_d.fits")[0]
    assert psf[:, 16, 16] == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(a[0].argmax(), a[0].shape) == (16, 11)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("not fits at all"), "not a readable FITS"),
        (lambda p: _sky_file(p, spectral=False), "no FREQ spectral axis"),
        (lambda p: _sky_file(p, celestial=False), "no celestial"),
        (lambda p: None, "no such file"),
    ],
)
def test_observe_cli_bad_input_is_one_line_exit_2_nothing_written(tmp_path, make, message):
    src = tmp_path / "sky.fits"
    make(src)
    r = _observe(src, "--out", tmp_path / "out.fits")
    assert r.returncode == 2 and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.fits").exists() and not list(tmp_path.glob(".*tmp"))


def test_observe_cli_never_overwrites_input_or_existing_output(tmp_path):
    src, _, _ = _sky_file(tmp_path / "sky.fits")
    before = src.read_bytes()
    r = _observe(src, "--out", src)
    assert r.returncode == 2 and "input sky model" in r.stderr and src.read_bytes() == before
    (tmp_path / "exists.fits").write_text("keep me")
    r = _observe(src, "--out", tmp_path / "exists.fits")
    assert r.returncode == 2 and (tmp_path / "exists.fits").read_text() == "keep me"
