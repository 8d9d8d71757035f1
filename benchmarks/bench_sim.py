"""Speed of the fast backend on a paper-size cube (360 x 360 x 128), and its ratio to CASA.

    python benchmarks/bench_sim.py                 # fast backend + one CASA run on the same sky
    python benchmarks/bench_sim.py --no-casa       # fast backend only
    python benchmarks/bench_sim.py --size 128      # the CPU-sized default

Prints seconds per cube for: the one-off instrument set-up (cached per configuration), the
observation alone, and a whole cube (draw + observe + catalogue + both FITS files); with CASA,
simobserve + tclean on the same sky model and the ratio CASA / fast. On a GPU it also prints
cubes/s for batched observation.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from sim import sky
from sim.config import SimConfig
from sim.generate import simulate_cube, write_cube
from sim.instrument import build_instrument
from sim.observe import observe, observe_batch


def _timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=360)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-casa", action="store_true", help="skip the CASA reference run")
    parser.add_argument("--batch", type=int, default=8, help="batch size for the GPU figure")
    args = parser.parse_args()

    config = SimConfig().replace(**{"cube.size": args.size, "cube.channels": args.channels})
    obs = config.observation
    freqs = sky.channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, args.channels)
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), {len(jax.devices())} device(s); "
          f"cube {args.size}x{args.size}x{args.channels}, {obs.antenna_config}")  # fmt: skip

    rng = np.random.default_rng(0)
    sources = sky.draw_sources(rng, config.sky, args.size, args.channels, freqs)
    model = sky.build_sky(sources, args.size, freqs, config.sky.peak_jy_per_px)
    fast_s = 0.0
    for label, support in (("Table-1 skies", sky.support(config.sky, args.size)), ("any sky", None)):
        t = time.perf_counter()
        instrument = build_instrument(obs, args.size, freqs, support)
        setup_s = time.perf_counter() - t
        observe(model.device_cube, instrument, noise="snr", target_snr=20.0)  # compile
        times = _timed(lambda: observe(model.device_cube, instrument, noise="snr", target_snr=20.0, seed=1),
                       args.repeat)  # fmt: skip
        fast_s = fast_s or statistics.median(times)
        print(f"fast observe, {label:13s} (uv grid {instrument.n_pad}^2, set-up once {setup_s:.1f} s): "
              f"median {statistics.median(times):.3f} s/cube (min {min(times):.3f}, max {max(times):.3f})")  # fmt: skip
    instrument = build_instrument(obs, args.size, freqs, sky.support(config.sky, args.size))
    cube_times = _timed(lambda: simulate_cube(0, config), args.repeat)
    print(f"fast whole cube:            median {statistics.median(cube_times):.3f} s/cube (draw + observe + catalogue)")
    with tempfile.TemporaryDirectory() as tmp:
        write_times = _timed(lambda: write_cube(Path(tmp), 0, config), args.repeat)
    print(f"fast with FITS:             median {statistics.median(write_times):.3f} s/cube (+ sky and dirty FITS)")

    if device.platform == "gpu":
        skies = np.repeat(model.cube[None], args.batch, axis=0)
        seeds = np.arange(args.batch)
        jax.block_until_ready(observe_batch(skies, instrument, noise="snr", seeds=seeds, target_snrs=np.full(args.batch, 20.0)))
        times = _timed(lambda: jax.block_until_ready(observe_batch(
            skies, instrument, noise="snr", seeds=seeds, target_snrs=np.full(args.batch, 20.0))), args.repeat)  # fmt: skip
        print(f"GPU batched:       {args.batch / statistics.median(times):.1f} cubes/s (batch {args.batch})")

    if not args.no_casa:
        from sim.casa import observe_casa

        t = time.perf_counter()
        observe_casa(model.cube, freqs, obs, thermal_noise=True, want_psf=False)
        casa_s = time.perf_counter() - t
        print(f"CASA simobserve + tclean: {casa_s:.1f} s/cube")
        print(f"ratio CASA / fast observe: {casa_s / fast_s:.0f}x")


if __name__ == "__main__":
    main()
