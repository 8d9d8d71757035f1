"""``python -m sim``: bad input is one line on stderr and exit status 2, no traceback, no file written;
the shared flags (--version, --quiet and its --no-progress alias, --config FILE) behave as in dfjax."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits

from sim.__main__ import main
from sim.cli import parse_sets, read_yaml
from sim.config import SimConfig
from sim.generate import generate

SMALL = ["--size", "32", "--channels", "4"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """One generated 32 x 32 x 4 cube, with the config the CLI builds from SMALL."""
    out = tmp_path_factory.mktemp("sim")
    generate(out, 1, SimConfig().replace(**{"cube.size": 32, "cube.channels": 4}), progress=False)
    return out


def _cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def assert_one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("python -m sim: error: ") and all(w in lines[0] for w in words), r.stderr


def test_generate_out_is_an_existing_file(tmp_path):
    target = tmp_path / "notadir"
    target.write_text("keep me")
    assert_one_line_error(_cli("generate", "--out", target, "--n", "1", *SMALL), str(target), "not a directory")
    assert target.read_text() == "keep me" and sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("command", ["generate", "observe"])
def test_config_that_is_a_directory(tmp_path, made, command):
    args = ["--out", tmp_path / "o", "--n", "1"] if command == "generate" else [made / "sky_00000.fits", "--out",
                                                                                  tmp_path / "o.fits"]  # fmt: skip
    assert_one_line_error(_cli(command, *args, "--config", tmp_path), "--config", "is a directory")
    assert list(tmp_path.iterdir()) == []


def test_config_holding_a_list_and_without_a_sim_section(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "nosim.yaml").write_text("data: {n_cubes: 3}\n")
    assert_one_line_error(_cli("generate", "--out", tmp_path / "o", "--n", "1", "--config", tmp_path / "list.yaml"),
                          "expected a mapping")
    assert_one_line_error(_cli("generate", "--out", tmp_path / "o", "--n", "1", "--config", tmp_path / "nosim.yaml"),
                          "no `sim` section")
    assert not (tmp_path / "o").exists()


def test_observe_out_is_a_directory_even_with_overwrite(tmp_path, made):
    (tmp_path / "d").mkdir()
    r = _cli("observe", made / "sky_00000.fits", "--out", tmp_path / "d", "--overwrite")
    assert_one_line_error(r, "is a directory")
    assert list((tmp_path / "d").iterdir()) == []


def test_observe_refuses_a_per_beam_sky_model(tmp_path, made):
    r = _cli("observe", made / "cube_00000.fits", "--out", tmp_path / "o.fits")  # the dirty cube: Jy/beam
    assert_one_line_error(r, "cube_00000.fits", "Jy/beam", "Jy/pixel")
    assert list(tmp_path.iterdir()) == []


def test_preview_into_a_missing_directory(tmp_path, made):
    assert_one_line_error(_cli("preview", made, "--out", "/nonexistent/dir/p.png"), "/nonexistent/dir")


def test_preview_out_directory_writes_into_it(tmp_path, made):
    assert main(["preview", str(made), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "preview_00000.png").read_bytes()[:4] == b"\x89PNG"


def test_generate_says_what_it_reused(tmp_path, made, capsys):
    assert main(["generate", "--out", str(made), "--n", "1", *SMALL, "--no-progress"]) == 0
    assert "reused 1, wrote 0 cubes" in capsys.readouterr().out


def test_observe_records_the_weighting(tmp_path, made):
    out = tmp_path / "dirty.fits"
    assert main(["observe", str(made / "sky_00000.fits"), "--out", str(out), "--noise", "none",
                 "--weighting", "briggs", "--robust", "-0.5"]) == 0  # fmt: skip
    header = fits.getheader(out)
    assert header["WEIGHT"] == "briggs" and header["ROBUST"] == -0.5 and header["BUNIT"] == "Jy/beam"


def test_version_and_help_show_defaults():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("python -m sim ")
    r = _cli("generate", "--help")
    assert "(default: sim.cube.size, 360)" in r.stdout and "examples:" in r.stdout


def test_set_reads_exponent_numbers_as_numbers(tmp_path):
    # PyYAML (YAML 1.1) reads `1e-9` as a string; a user writing --set sky.amplitude=[1e-9,1e-9] means numbers
    pairs = dict(parse_sets(["sky.amplitude=[1e-9, 2E+3]", "x=.5e1", "name=e5", "n=12"]))
    assert pairs == {"sky.amplitude": [1e-9, 2000.0], "x": 5.0, "name": "e5", "n": 12}
    path = tmp_path / "c.yaml"
    path.write_text("sim:\n  sky:\n    amplitude: [1e-9, 1e-8]\n")
    assert read_yaml(path)["sim"]["sky"]["amplitude"] == [1e-9, 1e-8]


def test_psf_writes_what_generate_writes_and_refuses_to_overwrite(tmp_path, made):
    generate(made, 1, SimConfig().replace(**{"cube.size": 32, "cube.channels": 4}), progress=False, psf=True)
    out = tmp_path / "psf.fits"
    assert main(["psf", *SMALL, "--out", str(out)]) == 0
    assert (fits.getdata(out) == fits.getdata(made / "psf.fits")).all()
    before = out.read_bytes()
    assert_one_line_error(_cli("psf", *SMALL, "--out", out), "exists", "--overwrite")
    assert_one_line_error(_cli("psf", *SMALL, "--out", tmp_path), "is a directory")
    assert out.read_bytes() == before


REGIMES = """\
sim:
  seed: 5
  cube: {size: 32, channels: 4}
  noise: {mode: snr}
regimes:
  small_beam:
    n_cubes: 1
    sim: {seed: 6, noise: {paper_fraction: 1.0}, observation: {antenna_config: alma.cycle9.5}}
  same_seed:
    sim: {seed: 5, sky: {size_reading: fwhm}}
"""


def test_a_regime_is_the_sim_section_with_its_own_settings_merged_in(tmp_path):
    from sim.__main__ import load_config

    (tmp_path / "p.yaml").write_text(REGIMES)
    config = load_config(tmp_path / "p.yaml", [], {}, regime="small_beam")
    assert config.seed == 6 and config.cube.size == 32 and config.cube.channels == 4  # kept from sim:
    assert config.observation.antenna_config == "alma.cycle9.5" and config.noise.paper_fraction == 1.0
    assert config.noise.mode == "snr"  # merged key by key, not replaced
    assert main(["generate", "--config", str(tmp_path / "p.yaml"), "--regime", "small_beam", "--out",
                 str(tmp_path / "o"), "--n", "1", "--quiet"]) == 0  # fmt: skip
    header = fits.getheader(tmp_path / "o" / "cube_00000.fits")
    assert (header["SEED"], header["ANTCFG"], header["NOISE"]) == (6, "alma.cycle9.5", "paper")


@pytest.mark.parametrize(("regime", "config", "words"), [
    ("nope", True, ("--regime nope", "known: small_beam, same_seed")),
    ("same_seed", True, ("regimes.same_seed.sim.seed", "differ from sim.seed")),
    ("small_beam", False, ("--regime small_beam", "needs --config")),
])  # fmt: skip
def test_a_bad_regime_is_one_line_exit_2(tmp_path, regime, config, words):
    (tmp_path / "p.yaml").write_text(REGIMES)
    args = ["--config", tmp_path / "p.yaml"] if config else []
    assert_one_line_error(_cli("generate", *args, "--regime", regime, "--out", tmp_path / "o", "--n", "1"), *words)
    assert not (tmp_path / "o").exists()
