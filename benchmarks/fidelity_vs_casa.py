"""Fidelity of the fast backend against CASA (simobserve + tclean niter=0) on the same sky model.

    python benchmarks/fidelity_vs_casa.py                # 360 x 360 x 8 channels at 230 GHz
    python benchmarks/fidelity_vs_casa.py --size 128 --channels 4
    python benchmarks/fidelity_vs_casa.py --size 96 --channels 8 --white-share 0.5
    python benchmarks/fidelity_vs_casa.py --product clean --size 360 --channels 16

Set-up: alma.cycle9.3, 0.1" pixels, 10 s x 2400 s, dec -35 deg, pwv 0.8 mm (the paper's Table 2).
Prints, for both backends, the PSF's Gaussian-fit FWHM (the same fitter on both), the header
beam, the largest sidelobe, the correlation of the two PSFs (and of the mirrored fast PSF, for
scale), the correlation of the two noiseless dirty cubes of a Table-1 sky model, and the thermal
noise rms on an empty sky. Requirements from the issue are shown next to each figure.

Then the paper's noise (`noise.mode: paper`, sec. 3) on the same sky, both backends as `generate`
runs them: the target SNR is set so that white noise makes up `--white-share` of the noise
variance, and the noise (noisy minus noiseless cube) is checked for its total rms against the
target, its white share (from the autocorrelation: 1 - ACF(1 px) / the thermal noise's own) and
ACF(1 px) / ACF(0) against the beam's value at 1 px.

With ``--product clean``, instead: the held-out CASA set's cleaned kind (eval_casa/clean.yaml:
Hogbom to 4 sigma, Briggs 0.5, PB-corrected, NaN below PB 0.2, thermal noise) on the same sky
with both backends as `generate` makes it (the fast one through `sim.clean`): restoring beams,
primary beams and their blanking, the noise off the sources, each source's peak and integrated
line flux, and the wall time of each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from sim import sky
from sim.casa import observe_casa
from sim.config import SimConfig
from sim.generate import observe_with_casa, simulate_cube
from sim.instrument import build_instrument, fit_beam
from sim.observe import observe


def sidelobe(psf: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Largest PSF value outside the main lobe (the region above zero connected to the peak)."""
    c = psf.shape[0] // 2
    labels, _ = ndimage.label(psf > 0)
    outside = np.where(labels == labels[c, c], -np.inf, psf)
    idx = np.unravel_index(np.argmax(outside), psf.shape)
    return float(psf[idx]), (int(idx[1]), int(idx[0]))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def acf_ratio(noise: np.ndarray) -> float:
    """Noise autocorrelation at a lag of 1 px along x over its value at lag 0."""
    return float(np.mean(noise[:, :, :-1] * noise[:, :, 1:]) / np.mean(noise**2))


def paper_noise_figures(noise: np.ndarray, thermal: np.ndarray, target_rms: float) -> dict[str, float]:
    """Total rms over the target, the white share of the variance read off the ACF, and ACF(1)/ACF(0)."""
    ratio = acf_ratio(noise)
    return {"rms": float(noise.std()), "rms_ratio": float(noise.std()) / target_rms, "acf": ratio,
            "white_share": 1.0 - ratio / acf_ratio(thermal)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=360)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--white-share", type=float, default=0.5,
                        help="share of the noise variance the paper mode's white noise should make up")
    parser.add_argument("--product", choices=("dirty", "clean"), default="dirty",
                        help="compare the dirty cubes and noise (default) or the cleaned, PB-corrected product")
    parser.add_argument("--cube", type=int, default=0, help="with --product clean: which cube of eval_casa/clean.yaml")
    args = parser.parse_args()
    if not 0.0 < args.white_share < 1.0:
        parser.error("--white-share: must be in (0, 1)")
    if args.product == "clean":
        clean_product(args.size, args.channels, args.cube)
        return

    config = SimConfig().replace(**{"cube.size": args.size, "cube.channels": args.channels})
    obs, n = config.observation, args.size
    freqs = sky.channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, args.channels)
    rng = np.random.default_rng(args.seed)
    model = sky.build_sky(sky.draw_sources(rng, config.sky, n, args.channels, freqs), n, freqs,
                          config.sky.peak_jy_per_px)  # fmt: skip
    instrument = build_instrument(obs, n, freqs)
    ref = args.channels // 2

    t = time.perf_counter()
    casa = observe_casa(model.cube, freqs, obs, thermal_noise=False, want_psf=True)
    casa_noise = observe_casa(np.zeros_like(model.cube), freqs, obs, thermal_noise=True, want_psf=False)
    casa_s = time.perf_counter() - t
    fast_dirty = observe(model.cube, instrument, noise="none").dirty
    compact = build_instrument(obs, n, freqs, sky.support(config.sky, n))  # what `generate` uses
    compact_dirty = observe(model.cube, compact, noise="none").dirty
    fast_noise = observe(np.zeros_like(model.cube), instrument, noise="thermal", seed=args.seed).dirty
    fast_psf = instrument.psf()

    c, h = n // 2, min(n // 2, 32)
    win = lambda p: p[c - h : c + h + 1, c - h : c + h + 1]  # noqa: E731
    fb, cb = fit_beam(win(fast_psf[ref]), obs.cell_arcsec), fit_beam(win(casa.psf[ref]), obs.cell_arcsec)
    fs, fs_at = sidelobe(fast_psf[ref])
    cs, cs_at = sidelobe(casa.psf[ref])
    mirrored = fast_psf[ref][:, ::-1]
    if n % 2 == 0:
        mirrored = np.roll(mirrored, 1, axis=1)  # keep the peak on pixel n // 2
    noise_f, noise_c = float(fast_noise.std()), float(casa_noise.dirty.std())

    print(f"set-up: {obs.antenna_config}, {freqs[ref] / 1e9:.3f} GHz, {n}x{n}x{args.channels}, "
          f"{obs.cell_arcsec}\" pixels, {obs.integration_s:g} s x {obs.total_time_s:g} s, dec {obs.dec_deg:.1f}")  # fmt: skip
    print(f"CASA wall time for the two runs: {casa_s:.0f} s")
    print(f"{'figure':34s} {'fast':>18s} {'CASA':>18s}   requirement")
    print(f"{'PSF Gaussian fit FWHM (arcsec)':34s} {fb[0]:8.3f} x {fb[1]:6.3f} {cb[0]:8.3f} x {cb[1]:6.3f}"
          f"   within 5%: {abs(fb[0] / cb[0] - 1):.1%}, {abs(fb[1] / cb[1] - 1):.1%}")  # fmt: skip
    print(f"{'header beam (arcsec, deg)':34s} {instrument.beams[ref][0]:6.3f}x{instrument.beams[ref][1]:.3f} "
          f"{instrument.beams[ref][2]:5.1f} {casa.beams[ref][0]:6.3f}x{casa.beams[ref][1]:.3f} {casa.beams[ref][2]:5.1f}")  # fmt: skip
    print(f"{'max sidelobe (value at x, y)':34s} {fs:7.3f} at {fs_at!s:9s} {cs:7.3f} at {cs_at!s:9s}"
          f"   within 0.03: {abs(fs - cs):.3f}")  # fmt: skip
    print(f"{'PSF correlation with CASA':34s} {corr(fast_psf, casa.psf):18.4f} {'':18s}   >= 0.99"
          f" (mirrored fast PSF: {corr(mirrored, casa.psf[ref]):.4f})")  # fmt: skip
    print(f"{'dirty cube correlation with CASA':34s} {corr(fast_dirty, casa.dirty):18.4f} {'':18s}   >= 0.95")
    print(f"{'  same, generate padding ' + str(compact.n_pad):34s} {corr(compact_dirty, casa.dirty):18.4f}")
    print(f"{'dirty cube peak (Jy/beam)':34s} {fast_dirty.max():18.5f} {casa.dirty.max():18.5f}")
    print(f"{'thermal noise rms (mJy/beam)':34s} {noise_f * 1e3:18.4f} {noise_c * 1e3:18.4f}"
          f"   within 10%: {abs(noise_f / noise_c - 1):.1%}")  # fmt: skip

    # the paper's noise on the same sky, each backend as `generate` runs it
    thermal = float(compact.thermal_rms.mean())
    snr = float(observe(model.cube, compact, noise="none").signal_peak) * np.sqrt(1 - args.white_share) / thermal
    t = time.perf_counter()
    casa_dirty, casa_rms, casa_white, *_ = observe_with_casa(model.cube, freqs, obs, compact, mode="paper",
                                                            seed=args.seed, target_snr=snr)  # fmt: skip
    casa_s = time.perf_counter() - t
    fast = observe(model.cube, compact, noise="paper", seed=args.seed, target_snr=snr)
    figures = [paper_noise_figures(fast.dirty - compact_dirty, fast_noise, fast.noise_rms),
               paper_noise_figures(casa_dirty - casa.dirty, casa_noise.dirty, casa_rms)]  # fmt: skip
    wanted = [fast.white_rms**2 / fast.noise_rms**2, casa_white**2 / casa_rms**2]
    beam_1px = float(fast_psf[ref, c, c + 1])
    print(f"\nnoise.mode paper, target peak SNR {snr:.1f} (CASA run {casa_s:.0f} s); beam at 1 px {beam_1px:.3f}")
    print(f"{'target total rms (mJy/beam)':34s} {fast.noise_rms * 1e3:18.4f} {casa_rms * 1e3:18.4f}")
    print(f"{'measured total rms (mJy/beam)':34s} {figures[0]['rms'] * 1e3:18.4f} {figures[1]['rms'] * 1e3:18.4f}"
          f"   within 10%: {abs(figures[0]['rms_ratio'] - 1):.1%}, {abs(figures[1]['rms_ratio'] - 1):.1%}")  # fmt: skip
    print(f"{'white share requested':34s} {wanted[0]:18.3f} {wanted[1]:18.3f}")
    print(f"{'white share from the ACF':34s} {figures[0]['white_share']:18.3f} {figures[1]['white_share']:18.3f}"
          f"   within 0.1: {abs(figures[0]['white_share'] - wanted[0]):.3f}, "
          f"{abs(figures[1]['white_share'] - wanted[1]):.3f}")  # fmt: skip
    print(f"{'ACF(1 px) / ACF(0)':34s} {figures[0]['acf']:18.3f} {figures[1]['acf']:18.3f}"
          f"   well below the beam's {beam_1px:.3f} (thermal alone: {acf_ratio(fast_noise):.3f}, "
          f"{acf_ratio(casa_noise.dirty):.3f})")  # fmt: skip


def clean_product(size: int, channels: int, index: int) -> None:
    """Cube `index` of eval_casa/clean.yaml's set-up at `size` x `channels`, made by both backends."""
    import yaml

    from sim.config import from_dict

    with open(Path(__file__).parents[1] / "eval_casa" / "clean.yaml") as f:
        config = from_dict(yaml.safe_load(f)["sim"]).replace(**{"cube.size": size, "cube.channels": channels})
    runs = {}
    for backend in ("fast", "casa"):
        t = time.perf_counter()
        _, image, _, table, extra = simulate_cube(index, config.replace(backend=backend))
        runs[backend] = (image, extra["pb"], extra["beams"], time.perf_counter() - t)
    (fast, fast_pb, fast_beams, fast_s), (casa, casa_pb, casa_beams, casa_s) = runs["fast"], runs["casa"]
    obs, ref = config.observation, channels // 2
    print(f"set-up: eval_casa/clean.yaml cube {index} at {size}x{size}x{channels}: {obs.antenna_config}, "
          f"Briggs {obs.robust}, Hogbom to {obs.nsigma:g} sigma, PB-corrected below {obs.pblimit}; "
          f"{len(table)} sources")  # fmt: skip
    print(f"{'figure':40s} {'fast':>18s} {'CASA':>18s}   requirement")
    print(f"{'wall time (s)':40s} {fast_s:18.1f} {casa_s:18.1f}")
    fb, cb = fast_beams[ref], casa_beams[ref]
    print(f"{'restoring beam (arcsec, deg)':40s} {fb[0]:6.3f}x{fb[1]:.3f} {fb[2]:5.1f} {cb[0]:6.3f}x{cb[1]:.3f} "
          f"{cb[2]:5.1f}   within 5%: {abs(fb[0] / cb[0] - 1):.1%}, {abs(fb[1] / cb[1] - 1):.1%}")  # fmt: skip
    blank_f, blank_c = np.isnan(fast), np.isnan(casa)
    both = ~blank_f & ~blank_c
    print(f"{'blanked (NaN) fraction':40s} {blank_f.mean():18.4f} {blank_c.mean():18.4f}"
          f"   differ on {np.mean(blank_f != blank_c):.2%} of voxels")  # fmt: skip
    print(f"{'primary beam, largest difference':40s} {np.abs(fast_pb[both] - casa_pb[both]).max():18.4f}")
    off = np.ones(fast.shape[1:], bool)
    for row in table:
        off[max(0, int(row["y0"]) - 10) : int(row["y1"]) + 11, max(0, int(row["x0"]) - 10) : int(row["x1"]) + 11] = False
    flat = [float(np.nanstd((img * pb)[:, off])) for img, pb in ((fast, fast_pb), (casa, casa_pb))]
    print(f"{'noise x PB off the sources (mJy/beam)':40s} {flat[0] * 1e3:18.4f} {flat[1] * 1e3:18.4f}"
          f"   within 10%: {abs(flat[0] / flat[1] - 1):.1%}")  # fmt: skip
    print(f"{'image correlation (finite in both)':40s} {corr(fast[both], casa[both]):18.4f}")
    print("\nper source (truth row; peak at the true pixel and line channel; integrated flux over its box"
          " and line, Jy/beam x px / beam area):")
    print(f"{'id':>3s} {'x':>6s} {'y':>6s} {'z':>6s} {'peak fast':>10s} {'peak CASA':>10s} {'ratio':>6s}"
          f" {'flux fast':>10s} {'flux CASA':>10s} {'ratio':>6s}")  # fmt: skip
    beam_px = np.pi / (4 * np.log(2)) * fb[0] * fb[1] / obs.cell_arcsec**2
    ratios = []
    for row in table:
        z, y, x = (int(np.clip(round(float(row[k])), 0, m - 1)) for k, m in (("z", channels), ("y", size), ("x", size)))
        if not 0 <= row["z"] < channels:
            continue
        box = (slice(max(0, int(row["z0"])), int(row["z1"]) + 1), slice(int(row["y0"]), int(row["y1"]) + 1),
               slice(int(row["x0"]), int(row["x1"]) + 1))  # fmt: skip
        peaks = [float(img[z, y, x]) for img in (fast, casa)]
        fluxes = [float(np.nansum(img[box])) / beam_px for img in (fast, casa)]
        ratios.append((peaks[0] / peaks[1], fluxes[0] / fluxes[1]))
        print(f"{row['id']:3d} {row['x']:6.1f} {row['y']:6.1f} {row['z']:6.1f} {peaks[0]:10.5f} {peaks[1]:10.5f} "
              f"{ratios[-1][0]:6.3f} {fluxes[0]:10.5f} {fluxes[1]:10.5f} {ratios[-1][1]:6.3f}")  # fmt: skip
    r = np.array(ratios)
    print(f"median fast / CASA: peak {np.median(r[:, 0]):.3f}, integrated {np.median(r[:, 1]):.3f}"
          f" (requirement: within 10%)")


if __name__ == "__main__":
    main()
