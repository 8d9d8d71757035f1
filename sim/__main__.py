"""Command line: ``python -m sim generate|observe|configs``.

Examples::

    python -m sim generate --out data/sim --n 100 --seed 0 --size 128
    python -m sim observe sky.fits --out dirty.fits --psf psf.fits --noise thermal
    python -m sim generate --out data/sim --n 5000 --dask-scheduler tcp://head:8786
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

from sim.config import ConfigError, SimConfig, from_dict
from sim.casa import CasaUnavailableError
from sim.fitsio import FitsInputError


def load_config(path: str | None, sets: list[str], flags: dict) -> SimConfig:
    """Defaults <- the `sim:` section of a YAML file <- --set KEY=VALUE <- explicit flags."""
    data: dict = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"--config: {path}: no such file") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config: {path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict) or not isinstance(loaded.get("sim"), dict):
            raise ConfigError(f"--config: {path}: expected a top-level 'sim:' mapping")
        data = loaded["sim"]
    config = from_dict(data)
    overrides = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        key = key.removeprefix("sim.")
        overrides[key] = yaml.safe_load(value)
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return config.replace(**overrides) if overrides else config


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with a 'sim:' section (e.g. params.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set sky.fwhm_px=[2,4] (repeatable)")  # fmt: skip
    p.add_argument("--backend", choices=("fast", "casa"))
    p.add_argument("--antenna-config", help="e.g. alma.cycle9.3 (see `python -m sim configs`)")
    p.add_argument("--seed", type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description="ALMA observation simulator")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="simulate a set of sky models and dirty cubes")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--n", type=int, required=True, help="number of cubes")
    g.add_argument("--size", type=int, help="field size in pixels (default 360)")
    g.add_argument("--channels", type=int, help="number of channels (default 128)")
    g.add_argument("--noise", choices=("none", "thermal", "snr"))
    g.add_argument("--workers", type=int, default=1, help="local worker processes (Dask LocalCluster)")
    g.add_argument("--dask-scheduler", metavar="ADDRESS", help="run on an existing Dask cluster")
    g.add_argument("--psf", action="store_true", help="also write the set-up's dirty beam to OUT/psf.fits")
    g.add_argument("--overwrite", action="store_true", help="discard existing cubes in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(g)

    o = sub.add_parser("observe", help="observe one sky-model FITS cube (Jy/pixel)")
    o.add_argument("sky", help="sky-model FITS cube with RA/Dec/FREQ axes")
    o.add_argument("--out", required=True, help="dirty cube to write")
    o.add_argument("--psf", help="also write the PSF cube here")
    o.add_argument("--noise", choices=("none", "thermal", "snr"), default="thermal")
    o.add_argument("--snr", type=float, help="target peak SNR of the brightest source (--noise snr)")
    o.add_argument("--integration", type=float, help="integration time per visibility, s")
    o.add_argument("--total-time", type=float, help="total time on source, s")
    o.add_argument("--pwv", type=float, help="precipitable water vapour, mm")
    o.add_argument("--weighting", choices=("natural", "uniform", "briggs"))
    o.add_argument("--robust", type=float)
    o.add_argument("--overwrite", action="store_true", help="replace an existing --out/--psf")
    _common(o)

    v = sub.add_parser("preview", help="PNG quick-look of one generated cube")
    v.add_argument("dir", help="a generate output directory")
    v.add_argument("--cube", type=int, default=0, help="cube index")
    v.add_argument("--out", help="PNG path (default DIR/preview_NNNNN.png)")

    sub.add_parser("configs", help="list the bundled antenna configurations")
    return parser


def run_generate(args: argparse.Namespace) -> None:
    from sim.generate import generate

    config = load_config(args.config, args.set, {
        "cube.size": args.size, "cube.channels": args.channels, "noise.mode": args.noise,
        "backend": args.backend, "observation.antenna_config": args.antenna_config, "seed": args.seed,
    })  # fmt: skip
    path = generate(args.out, args.n, config, workers=args.workers, overwrite=args.overwrite,
                    dask_scheduler=args.dask_scheduler, progress=not args.quiet, psf=args.psf)  # fmt: skip
    print(f"wrote {args.n} cubes and {path}")


def run_observe(args: argparse.Namespace) -> None:
    from sim import fitsio
    from sim.instrument import build_instrument
    from sim.observe import observe

    config = load_config(args.config, args.set, {
        "observation.antenna_config": args.antenna_config, "observation.integration_s": args.integration,
        "observation.total_time_s": args.total_time, "observation.pwv_mm": args.pwv,
        "observation.weighting": args.weighting, "observation.robust": args.robust, "backend": args.backend,
    })  # fmt: skip
    out, psf_out, src = Path(args.out), Path(args.psf) if args.psf else None, Path(args.sky)
    for target in filter(None, (out, psf_out)):
        if target.resolve() == src.resolve():
            raise ConfigError(f"--out/--psf: {target} is the input sky model; refusing to overwrite it")
        if target.exists() and not args.overwrite:
            raise ConfigError(f"{target} exists; use --overwrite to replace it")
        if not target.parent.is_dir():
            raise ConfigError(f"{target.parent}: no such directory")
    if args.noise == "snr" and (args.snr is None or args.snr <= 0):
        raise ConfigError("--snr: a positive target SNR is needed with --noise snr")
    skyf = fitsio.read_sky(src)
    nz, n, _ = skyf.cube.shape
    dnu = float(skyf.freqs_hz[1] - skyf.freqs_hz[0]) if nz > 1 else config.observation.channel_width_hz
    config = config.replace(**{
        "observation.cell_arcsec": skyf.cell_arcsec, "observation.ra_deg": skyf.ra_deg,
        "observation.dec_deg": skyf.dec_deg, "observation.centre_freq_hz": float(skyf.freqs_hz[nz // 2]),
        "observation.channel_width_hz": abs(dnu), "cube.size": n, "cube.channels": nz,
    })  # fmt: skip
    obs = config.observation
    instrument = build_instrument(obs, n, skyf.freqs_hz)
    seed = config.seed
    if config.backend == "casa":
        from sim.casa import observe_casa

        if args.noise == "snr":
            raise ConfigError("--noise snr is only available with the fast backend in `observe`")
        flip = nz > 1 and skyf.freqs_hz[1] < skyf.freqs_hz[0]  # CASA wants increasing frequency
        order = slice(None, None, -1 if flip else 1)
        result = observe_casa(skyf.cube[order], skyf.freqs_hz[order], obs, thermal_noise=args.noise == "thermal",
                              want_psf=psf_out is not None, seed=seed)  # fmt: skip
        dirty, beams, rms = result.dirty[order], result.beams[order], None
        psf = result.psf[order] if result.psf is not None else None
    else:
        ref = np.unravel_index(np.argmax(skyf.cube.max(axis=0)), (n, n))
        result = observe(skyf.cube, instrument, noise=args.noise, seed=seed, target_snr=args.snr, ref_pixel=ref)
        dirty, beams, rms = result.dirty, instrument.beams, result.noise_rms
        psf = instrument.psf() if psf_out else None
    header = fitsio.celestial_header(obs, n, skyf.freqs_hz)
    cards = {"ORIGIN": "dfjax.sim", "SIMBACK": config.backend, "ANTCFG": obs.antenna_config,
             "NOISE": args.noise, "SEED": seed}  # fmt: skip
    if rms is not None:
        cards["NOISERMS"] = (rms, "[Jy/beam] rms of the added noise")
    fitsio.write_atomic(out, fitsio.cube_hdus(dirty, header, bunit="Jy/beam", beams=beams, cards=cards))
    if psf_out is not None:
        fitsio.write_atomic(psf_out, fitsio.cube_hdus(psf, header, bunit="", beams=beams, cards=cards))
    print(f"wrote {out}" + (f" and {psf_out}" if psf_out else ""))


def run_preview(args: argparse.Namespace) -> None:
    from sim.generate import CUBE_PATTERN, SKY_PATTERN
    from sim.plot import preview

    directory = Path(args.dir)
    cube, sky_file = directory / CUBE_PATTERN.format(args.cube), directory / SKY_PATTERN.format(args.cube)
    for path in (cube, sky_file):
        if not path.is_file():
            raise ConfigError(f"{path}: no such file (is {directory} a generate output directory?)")
    out = Path(args.out) if args.out else directory / f"preview_{args.cube:05d}.png"
    print(f"wrote {preview(cube, sky_file, out)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "configs":
            from sim.array import available_configurations

            print("\n".join(available_configurations()))
        elif args.command == "generate":
            run_generate(args)
        elif args.command == "preview":
            run_preview(args)
        else:
            run_observe(args)
    except (ConfigError, FitsInputError, CasaUnavailableError) as exc:
        print(f"python -m sim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("python -m sim: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
