import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from sim.generate import generate
from sim.sky import CATALOGUE_COLUMNS


def _data(path):
    return fits.getdata(path)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from sim.config import SimConfig

    config = SimConfig().replace(**{"cube.size": 48, "cube.channels": 16, "seed": 3})
    out = tmp_path_factory.mktemp("sim")
    generate(out, 3, config, progress=False)
    return out, config


def test_outputs_and_catalogue_columns(made):
    out, _ = made
    names = sorted(p.name for p in out.iterdir())
    assert names == ["catalogue.csv", "config.yaml"] + [f"cube_{i:05d}.fits" for i in range(3)] + [
        f"sky_{i:05d}.fits" for i in range(3)]  # fmt: skip
    cat = Table.read(out / "catalogue.csv")
    assert tuple(cat.colnames) == CATALOGUE_COLUMNS
    for i in range(3):
        rows = cat[cat["cube"] == i]
        assert 3 <= len(rows) <= 6 and list(rows["id"]) == list(range(len(rows)))
    h = fits.getheader(out / "cube_00000.fits")
    assert (h["CTYPE1"], h["CTYPE2"], h["CTYPE3"], h["CTYPE4"]) == ("RA---SIN", "DEC--SIN", "FREQ", "STOKES")
    assert h["CRPIX1"] == 48 / 2 + 1 and h["BUNIT"] == "Jy/beam" and h["CDELT1"] < 0
    assert 0.7 / 3600 < h["BMAJ"] < 1.0 / 3600 and h["BMIN"] <= h["BMAJ"]
    assert fits.getheader(out / "sky_00000.fits")["BUNIT"] == "Jy/pixel"
    assert h["NOISE"] == "snr" and "WHITERMS" not in h  # the default writes simulator 1.0.0's cards
    assert len(fits.open(out / "cube_00000.fits")["BEAMS"].data) == 16


def test_pixel_conventions_x_column_y_row_z_channel(made):
    """x indexes NAXIS1, y NAXIS2, z the stored spectral axis; all 0-based; WCS agrees."""
    out, _ = made
    cat = Table.read(out / "catalogue.csv")
    wcs = WCS(fits.getheader(out / "sky_00001.fits"))
    for row in cat[cat["cube"] == 1]:
        world = wcs.wcs_pix2world([[row["x"], row["y"], row["z"], 0]], 0)[0]
        assert world[0] == pytest.approx(row["ra"], abs=1e-9)
        assert world[1] == pytest.approx(row["dec"], abs=1e-9)
        assert world[2] == pytest.approx(row["freq"], rel=1e-12)


def test_a_lone_source_peaks_at_its_catalogue_pixel_and_channel(made, tmp_path):
    _, config = made
    config = config.replace(**{"sky.n_serendipitous": [0, 0], "sky.spectral_index": [0, 0], "noise.mode": "none"})
    generate(tmp_path, 1, config, progress=False)
    row = Table.read(tmp_path / "catalogue.csv")[0]
    for name in ("sky", "cube"):
        data = _data(tmp_path / f"{name}_00000.fits")[0]
        z, y, x = np.unravel_index(np.argmax(data), data.shape)
        assert (x, y) == (round(row["x"]), round(row["y"])) and abs(z - row["z"]) <= 0.5
    integrated = _data(tmp_path / "sky_00000.fits")[0].sum(axis=0)
    rows, cols = np.nonzero(integrated >= 0.15 * integrated.max())  # half-open box, numpy-slice style
    assert (row["x0"], row["y0"], row["x1"], row["y1"]) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_central_source_reaches_the_target_snr(made):
    out, _ = made
    cat = Table.read(out / "catalogue.csv")
    for i in range(3):
        target = fits.getheader(out / f"cube_{i:05d}.fits")["TARGSNR"]
        central = cat[(cat["cube"] == i) & (cat["id"] == 0)][0]
        assert central["peak_snr"] == pytest.approx(target, rel=0.25)
        assert np.all(cat[cat["cube"] == i]["blendness"] >= 0)


def test_same_seed_same_cubes_and_resume_rebuilds_only_missing(made, tmp_path):
    out, config = made
    again = tmp_path / "again"
    generate(again, 2, config, progress=False)
    assert np.array_equal(_data(again / "cube_00001.fits"), _data(out / "cube_00001.fits"))
    before = (again / "cube_00000.fits").stat().st_mtime_ns
    (again / "cube_00001.fits").unlink()
    (again / ".cube_00001.fits.abc.tmp").write_text("half-written")
    generate(again, 3, config, progress=False)
    assert (again / "cube_00000.fits").stat().st_mtime_ns == before
    assert not list(again.glob(".*.tmp"))
    for i in (1, 2):
        assert np.array_equal(_data(again / f"cube_{i:05d}.fits"), _data(out / f"cube_{i:05d}.fits"))
    other = tmp_path / "other"
    generate(other, 1, config.replace(seed=4), progress=False)
    assert not np.array_equal(_data(other / "cube_00000.fits"), _data(out / "cube_00000.fits"))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_rejects_bad_config_with_one_line_and_writes_nothing(tmp_path):
    for args, field in [
        (["--set", "sky.fwhm_px=[8,2]"], "sim.sky.fwhm_px"),
        (["--size", "-5"], "sim.cube.size"),
        (["--channels", "0"], "sim.cube.channels"),
        (["--antenna-config", "alma.cycle99.1"], "sim.observation.antenna_config"),
        (["--set", "sky.colour=1"], "sim.sky.colour"),
    ]:
        r = _cli("generate", "--out", str(tmp_path / "out"), "--n", "1", *args)
        assert r.returncode == 2, r.stderr
        assert field in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()


def test_cli_refuses_to_mix_configurations_in_one_directory(tmp_path):
    out = str(tmp_path / "o")
    assert _cli("generate", "--out", out, "--n", "1", "--size", "32", "--channels", "4", "--quiet", "--psf").returncode == 0
    psf = fits.getdata(tmp_path / "o" / "psf.fits")[0]
    assert psf.shape == (4, 32, 32) and np.allclose(psf[:, 16, 16], 1.0, atol=1e-5)
    r = _cli("generate", "--out", out, "--n", "1", "--size", "40", "--channels", "4", "--quiet")
    assert r.returncode == 2 and "sim.cube.size" in r.stderr
    r = _cli("generate", "--out", out, "--n", "1", "--size", "40", "--channels", "4", "--quiet", "--overwrite")
    assert r.returncode == 0 and fits.getdata(tmp_path / "o" / "cube_00000.fits").shape == (1, 4, 40, 40)
    assert not (tmp_path / "o" / "psf.fits").exists()  # --overwrite removed the old set's beam


@pytest.mark.slow
def test_dask_workers_give_the_same_cubes(made, tmp_path):
    out, config = made
    generate(tmp_path / "dask", 2, config, workers=2, progress=False)
    for i in range(2):
        assert np.array_equal(_data(tmp_path / "dask" / f"cube_{i:05d}.fits"), _data(out / f"cube_{i:05d}.fits"))


@pytest.mark.slow
def test_an_existing_dask_cluster_by_address(made, tmp_path):
    from dask.distributed import LocalCluster

    out, config = made
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        generate(tmp_path / "remote", 3, config, dask_scheduler=cluster.scheduler_address, progress=False)
        assert len(cluster.scheduler.workers) == 1  # the cluster outlives the run: not ours to close
    assert np.array_equal(_data(tmp_path / "remote" / "cube_00002.fits"), _data(out / "cube_00002.fits"))
    remote, local = (Table.read(d / "catalogue.csv") for d in (tmp_path / "remote", out))
    assert all(np.array_equal(remote[c], local[c]) for c in local.colnames)


def test_preview_writes_a_png(made, tmp_path):
    out, _ = made
    r = _cli("preview", str(out), "--cube", "2", "--out", str(tmp_path / "p.png"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = _cli("preview", str(out), "--cube", "7")
    assert r.returncode == 2 and "cube_00007.fits: no such file" in r.stderr


@pytest.fixture(scope="module")
def paper_made(tmp_path_factory):
    """Two 48x48x8 cubes in the paper noise mode, and the same seed mixed into snr at fraction 1."""
    from sim.config import SimConfig

    config = SimConfig().replace(**{"cube.size": 48, "cube.channels": 8, "seed": 3, "noise.mode": "paper"})
    out = tmp_path_factory.mktemp("paper")
    generate(out / "paper", 2, config, progress=False)
    generate(out / "mix1", 2, config.replace(**{"noise.mode": "snr", "noise.paper_fraction": 1.0}), progress=False)
    return out, config


def test_paper_mode_headers_and_the_catalogues_peak_snr(paper_made):
    from sim.instrument import build_instrument
    from sim.sky import channel_frequencies, support

    out, config = paper_made
    cat = Table.read(out / "paper" / "catalogue.csv")
    obs = config.observation
    freqs = channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, 8)
    thermal = build_instrument(obs, 48, freqs, support(config.sky, 48)).thermal_rms.mean()
    for i in range(2):
        h = fits.getheader(out / "paper" / f"cube_{i:05d}.fits")
        assert (h["NOISE"], h["PAPERFRC"]) == ("paper", 1.0) and 10.0 <= h["TARGSNR"] <= 50.0
        assert h["WHITERMS"] > thermal and h["NOISERMS"] == pytest.approx(np.hypot(thermal, h["WHITERMS"]), rel=0.05)
        central = cat[(cat["cube"] == i) & (cat["id"] == 0)][0]
        assert central["peak_snr"] == pytest.approx(h["TARGSNR"], rel=0.25)  # noisy peak over the total rms


def test_paper_mode_same_seed_same_cubes_and_fraction_1_is_all_paper(paper_made):
    from sim.generate import simulate_cube

    out, config = paper_made
    for i in range(2):
        cube = _data(out / "paper" / f"cube_{i:05d}.fits")
        assert np.array_equal(cube[0], simulate_cube(i, config)[1])
        assert np.array_equal(cube, _data(out / "mix1" / f"cube_{i:05d}.fits"))  # snr + paper_fraction 1 = paper
        assert fits.getheader(out / "mix1" / f"cube_{i:05d}.fits")["NOISE"] == "paper"


def test_paper_fraction_mixes_the_modes_per_cube_from_the_cubes_seed():
    from sim.config import SimConfig
    from sim.generate import cube_noise_mode, cube_rng

    def modes(fraction, mode="snr"):
        config = SimConfig().replace(**{"noise.mode": mode, "noise.paper_fraction": fraction})
        return [cube_noise_mode(cube_rng(0, i), config) for i in range(400)]

    assert set(modes(0.0)) == {"snr"} and set(modes(1.0)) == {"paper"} and set(modes(0.0, "paper")) == {"paper"}
    mixed = modes(0.3)
    assert mixed == modes(0.3) and 0.25 < mixed.count("paper") / 400 < 0.35
