"""Command line: ``python -m sim generate|observe|psf|preview|configs`` (console script ``dfjax-sim``).

Examples::

    python -m sim generate --out data/sim --n 100 --seed 0 --size 128
    python -m sim observe sky.fits --out dirty.fits --psf psf.fits --noise thermal
    python -m sim generate --out data/sim --n 5000 --dask-scheduler tcp://head:8786

Flags shared with the ``dfjax`` commands (:mod:`sim.cli`): ``--config FILE`` (YAML, its ``sim:``
section), ``--set KEY=VALUE``, ``--quiet``, ``--version``; bad input is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sim.casa import CasaUnavailableError
from sim.cli import CliError, add_config, add_quiet, add_subcommand, make_parser, merge, parse_sets, read_yaml, section
from sim.config import NOISE_MODES, ConfigError, SimConfig, from_dict
from sim.fitsio import FitsInputError

PROG = "python -m sim"


def load_config(path: str | Path | None, sets: list[str], flags: dict, regime: str | None = None) -> SimConfig:
    """Defaults <- the `sim:` section of a YAML file (<- its `regimes.REGIME.sim`) <- --set KEY=VALUE
    <- explicit flags."""
    try:
        content = read_yaml(path) if path else {}
        data = section(content, "sim", path=path, required=True) if path else {}
        if regime is not None:
            data = regime_section(content, regime, data, path)
        overrides = dict(parse_sets(sets, prefix="sim"))
    except CliError as exc:
        raise ConfigError(str(exc)) from None
    config = from_dict(data)
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return config.replace(**overrides) if overrides else config


def _default(dotted: str) -> str:
    """``(default: sim.KEY, VALUE)`` for help texts, read from SimConfig: the defaults live there only."""
    value = SimConfig().to_dict()
    for key in dotted.split("."):
        value = value[key]
    return f"(default: sim.{dotted}, {value})"


def regime_section(content: dict, name: str, base: dict, path) -> dict:
    """`base` (a `sim:` section) with `regimes.NAME.sim` merged in key by key: a set of extra
    training cubes in another regime (params.yaml's `regimes`), drawn from its own seed."""
    if not path:
        raise CliError(f"--regime {name}: needs --config (the file whose `regimes.{name}` it names)")
    regimes = section(content, "regimes", path=path)
    if name not in regimes:
        raise CliError(f"--regime {name}: {path} has no `regimes.{name}` (known: {', '.join(regimes) or 'none'})")
    over = section(content, f"regimes.{name}.sim", path=path, required=True)
    if over.get("seed", base.get("seed", 0)) == base.get("seed", 0):
        raise CliError(f"{path}: regimes.{name}.sim.seed must differ from sim.seed "
                       "(the same seed draws the same skies as the main set)")  # fmt: skip
    return merge(base, over)


def _common(p: argparse.ArgumentParser) -> None:
    add_config(p, "its `sim:` section (e.g. params.yaml)", example="sky.fwhm_px=[2,4]")
    p.add_argument("--backend", choices=("fast", "casa"), help=f"observation backend {_default('backend')}")
    p.add_argument("--antenna-config",
                   help=f"antenna configuration, see `python -m sim configs` {_default('observation.antenna_config')}")
    p.add_argument("--seed", type=int, help=f"random seed {_default('seed')}")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, "ALMA observation simulator", [
        "python -m sim generate --config params.yaml --out data/sim --n 20",
        "python -m sim observe sky.fits --out dirty.fits --psf psf.fits --noise thermal",
        "python -m sim preview data/sim --cube 3 --out previews/",
        "python -m sim configs"])  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = add_subcommand(sub, "generate", "simulate a set of sky models and dirty cubes", [
        "python -m sim generate --out data/sim --n 100 --seed 0 --size 128",
        "python -m sim generate --config params.yaml --set sky.fwhm_px=[2,4] --out data/sim --n 20",
        "python -m sim generate --out data/sim --n 5000 --dask-scheduler tcp://head:8786"])  # fmt: skip
    g.add_argument("--out", required=True, help="output directory (resumed if it holds cubes of the same config)")
    g.add_argument("--regime", metavar="NAME",
                   help="merge --config's `regimes.NAME.sim` over its `sim:` (extra training cubes, params.yaml)")
    g.add_argument("--n", type=int, required=True, help="number of cubes")
    g.add_argument("--size", type=int, help=f"field size in pixels {_default('cube.size')}")
    g.add_argument("--channels", type=int, help=f"number of channels {_default('cube.channels')}")
    g.add_argument("--noise", choices=NOISE_MODES, help=f"noise model {_default('noise.mode')}")
    g.add_argument("--workers", type=int, default=1, help="local worker processes (Dask LocalCluster)")
    g.add_argument("--dask-scheduler", metavar="ADDRESS", help="run on an existing Dask cluster")
    g.add_argument("--psf", action="store_true", help="also write the set-up's dirty beam to OUT/psf.fits")
    g.add_argument("--overwrite", action="store_true", help="discard existing cubes in --out")
    add_quiet(g)
    _common(g)

    o = add_subcommand(sub, "observe", "observe one sky-model FITS cube (Jy/pixel)", [
        "python -m sim observe sky.fits --out dirty.fits --psf psf.fits --noise thermal",
        "python -m sim observe sky.fits --out dirty.fits --noise snr --snr 20 --weighting briggs --robust 0.5"])
    o.add_argument("sky", help="sky-model FITS cube with RA/Dec/FREQ axes, BUNIT Jy/pixel")
    o.add_argument("--out", required=True, help="dirty cube to write")
    o.add_argument("--psf", help="also write the PSF cube here")
    o.add_argument("--noise", choices=NOISE_MODES, default="thermal", help="noise model")
    o.add_argument("--snr", type=float, help="target peak SNR of the brightest source (--noise snr or paper)")
    o.add_argument("--integration", type=float,
                   help=f"integration time per visibility, s {_default('observation.integration_s')}")
    o.add_argument("--total-time", type=float, help=f"total time on source, s {_default('observation.total_time_s')}")
    o.add_argument("--pwv", type=float, help=f"precipitable water vapour, mm {_default('observation.pwv_mm')}")
    o.add_argument("--weighting", choices=("natural", "uniform", "briggs"),
                   help=f"visibility weighting {_default('observation.weighting')}")
    o.add_argument("--robust", type=float, help=f"Briggs robustness, -2..2 {_default('observation.robust')}")
    o.add_argument("--overwrite", action="store_true", help="replace an existing --out/--psf")
    _common(o)

    b = add_subcommand(sub, "psf", "write the set-up's dirty beam (the fast backend's, one plane per channel)", [
        "python -m sim psf --config params.yaml --out data/psf.fits --pb data/pb.fits",
        "python -m sim psf --size 360 --antenna-config alma.cycle9.5 --out psf_c95.fits"])  # fmt: skip
    b.add_argument("--out", required=True, help="PSF cube to write (FITS; what `generate --psf` writes as psf.fits)")
    b.add_argument("--pb", help="also write the primary beam (peak 1) the dirty cubes are multiplied by here")
    b.add_argument("--size", type=int, help=f"field size in pixels {_default('cube.size')}")
    b.add_argument("--channels", type=int, help=f"number of channels {_default('cube.channels')}")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _common(b)

    v = add_subcommand(sub, "preview", "PNG quick-look of one generated cube", [
        "python -m sim preview data/sim --cube 3",
        "python -m sim preview data/sim --cube 3 --out previews/"])  # fmt: skip
    v.add_argument("dir", help="a generate output directory")
    v.add_argument("--cube", type=int, default=0, help="cube index")
    v.add_argument("--out", help="PNG path, or an existing directory to write preview_NNNNN.png in "
                                 "(default: DIR/preview_NNNNN.png)")

    add_subcommand(sub, "configs", "list the bundled antenna configurations", ["python -m sim configs"])
    return parser


def run_generate(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.sets, {
        "cube.size": args.size, "cube.channels": args.channels, "noise.mode": args.noise,
        "backend": args.backend, "observation.antenna_config": args.antenna_config, "seed": args.seed,
    }, regime=args.regime)  # fmt: skip
    from sim.generate import finished, generate  # imported late: bad flags fail before JAX loads

    reused = 0 if args.overwrite else len(finished(args.out, args.n))
    path = generate(args.out, args.n, config, workers=args.workers, overwrite=args.overwrite,
                    dask_scheduler=args.dask_scheduler, progress=not args.quiet, psf=args.psf)  # fmt: skip
    print(f"{args.out}: reused {reused}, wrote {args.n - reused} cubes; catalogue {path}")


def _check_targets(targets: dict[str, Path], overwrite: bool) -> None:
    """ConfigError naming the flag unless each FITS file to write is new (or ``overwrite``) in an existing directory."""
    for flag, path in targets.items():
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: is a directory; name the FITS file to write")
        if path.exists() and not overwrite:
            raise ConfigError(f"{flag} {path}: exists; use --overwrite to replace it")
        if not path.parent.is_dir():
            raise ConfigError(f"{flag} {path}: no such directory {path.parent}")


def run_observe(args: argparse.Namespace) -> None:
    from sim import fitsio

    config = load_config(args.config, args.sets, {
        "observation.antenna_config": args.antenna_config, "observation.integration_s": args.integration,
        "observation.total_time_s": args.total_time, "observation.pwv_mm": args.pwv,
        "observation.weighting": args.weighting, "observation.robust": args.robust, "backend": args.backend,
        "noise.mode": args.noise,  # checked against the product (a PB-corrected cube takes thermal noise only)
    })  # fmt: skip
    out, psf_out, src = Path(args.out), Path(args.psf) if args.psf else None, Path(args.sky)
    for flag, target in (("--out", out), ("--psf", psf_out)):
        if target is not None and target.resolve() == src.resolve():
            raise ConfigError(f"{flag} {target}: is the input sky model; refusing to overwrite it")
    _check_targets({"--out": out} | ({"--psf": psf_out} if psf_out else {}), args.overwrite)
    if args.noise in ("snr", "paper") and (args.snr is None or args.snr <= 0):
        raise ConfigError(f"--snr: a positive target SNR is needed with --noise {args.noise}")
    skyf = fitsio.read_sky(src)
    from sim.instrument import build_instrument  # imported late: bad input fails before JAX loads
    from sim.observe import observe

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

        if args.noise in ("snr", "paper"):
            raise ConfigError(f"--noise {args.noise} is only available with the fast backend in `observe`")
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
             "NOISE": args.noise, "SEED": seed, "WEIGHT": obs.weighting}  # fmt: skip
    if obs.weighting == "briggs":
        cards["ROBUST"] = (obs.robust, "Briggs robustness")
    if rms is not None:
        cards["NOISERMS"] = (rms, "[Jy/beam] rms of the added noise")
    if args.noise == "paper":
        cards["WHITERMS"] = (result.white_rms, "[Jy/beam] rms of the image-domain white noise")
    fitsio.write_atomic(out, fitsio.cube_hdus(dirty, header, bunit="Jy/beam", beams=beams, cards=cards))
    if psf_out is not None:
        fitsio.write_atomic(psf_out, fitsio.cube_hdus(psf, header, bunit="", beams=beams, cards=cards))
    print(f"wrote {out}" + (f" and {psf_out}" if psf_out else ""))


def run_psf(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.sets, {
        "cube.size": args.size, "cube.channels": args.channels, "observation.antenna_config": args.antenna_config,
    })  # fmt: skip
    targets = {"--out": Path(args.out)} | ({"--pb": Path(args.pb)} if args.pb else {})
    _check_targets(targets, args.overwrite)
    from sim.beams import write_pb  # imported late: bad flags fail before JAX loads
    from sim.generate import write_psf

    write_psf(targets["--out"], config)
    if "--pb" in targets:
        write_pb(targets["--pb"], config)
    print("wrote " + " and ".join(map(str, targets.values())))


def run_preview(args: argparse.Namespace) -> None:
    from sim.generate import CUBE_PATTERN, SKY_PATTERN
    from sim.plot import preview

    directory = Path(args.dir)
    cube, sky_file = directory / CUBE_PATTERN.format(args.cube), directory / SKY_PATTERN.format(args.cube)
    for path in (cube, sky_file):
        if not path.is_file():
            raise ConfigError(f"{path}: no such file (is {directory} a generate output directory?)")
    name = f"preview_{args.cube:05d}.png"
    out = Path(args.out) if args.out else directory / name
    if out.is_dir():
        out = out / name
    elif not out.parent.is_dir():
        raise ConfigError(f"--out {out}: no such directory {out.parent}")
    print(f"wrote {preview(cube, sky_file, out)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_errors = (ConfigError, FitsInputError, CasaUnavailableError, CliError)
    try:
        if args.command == "configs":
            from sim.array import available_configurations

            print("\n".join(available_configurations()))
        elif args.command == "generate":
            run_generate(args)
        elif args.command == "preview":
            run_preview(args)
        elif args.command == "psf":
            run_psf(args)
        else:
            run_observe(args)
    except quiet_errors as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable or vanished path: name it, no traceback
        print(f"{PROG}: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
