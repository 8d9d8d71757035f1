"""The accelerator check, one process, four sections; run it through ``benchmarks/gpu_check.sh``.

    bash benchmarks/gpu_check.sh           # paper sizes, on the GPU machine: < 8 min
    bash benchmarks/gpu_check.sh --tiny    # toy sizes on CPU in well under a minute (GPU_CHECK_TINY=1)

Each section prints lines that start with its tag, and a failing section prints
``[tag] FAILED: ...`` and lets the next one run:

``[devices]``     what JAX sees.
``[sim]``         simulator cubes/s at paper size (360 x 360 x 128): ``observe_batch`` alone, then
                  the whole stream (``simulate_cubes`` + records + Blobs Finder examples).
``[train]``       steps/s and examples/s of the six models' train steps at paper widths
                  (``bench_train.bench``: Blobs Finder 256², ResNet-18 64..512); the four ResNets
                  share one network and loss, so one is timed for all (``--all-resnets``: each).
``[stream-run]``  a short paper-scale Blobs Finder run from the stream (``dfjax.train.train``),
                  validated on held-out simulated cubes, with its validation loss (DSSIM).

Sections skip what no longer fits in ``--deadline`` seconds (default 420: the shell's timeout is 470).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train, next to this script

import bench_train  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dfjax import train  # noqa: E402
from dfjax import input_pipeline as ip  # noqa: E402
from dfjax.input_pipeline import stream  # noqa: E402
from dfjax.models import resnet  # noqa: E402
from sim import sky  # noqa: E402
from sim.config import SimConfig  # noqa: E402
from sim.generate import simulate_cube  # noqa: E402
from sim.instrument import build_instrument  # noqa: E402
from sim.observe import observe_batch  # noqa: E402

RESNETS = ("resnet_fwhm_x", "resnet_fwhm_y", "resnet_pa", "resnet_flux")
PAPER = {
    "cube": (360, 128), "crop": 256, "sim_batch": 8, "repeat": 3, "train_batch": 32, "seconds": 3.0,
    "models": {"blobs_finder": {}, "deep_gru": {}, **{r: {"widths": list(resnet.PAPER_WIDTHS)} for r in RESNETS}},
    "run": {"cubes_per_epoch": 64, "epochs": 2, "batch": 16, "val_cubes": 16},
}  # fmt: skip
TINY = {  # shallower than the Tiny variants: compiling is most of a CPU run
    "cube": (32, 16), "crop": 16, "sim_batch": 2, "repeat": 1, "train_batch": 2, "seconds": 0.1,
    "models": {"blobs_finder": {"image_size": 16, "widths": [4, 4], "latent_features": 8},
               "deep_gru": {"spectrum_length": 16, "hidden_features": 4},
               **{r: {"stage_sizes": [1], "widths": [4], "head_features": 4} for r in RESNETS}},
    "run": {"cubes_per_epoch": 4, "epochs": 1, "batch": 2, "val_cubes": 2},
}  # fmt: skip
VALIDATION_SEED = 1  # the held-out cubes of the stream run: sim seed 1, cubes 0..val_cubes-1


def devices() -> None:
    d = jax.devices()
    print(f"[devices] jax {jax.__version__}, backend {jax.default_backend()}: {len(d)} x {d[0].device_kind}: {d}")


def simulator(sizes: dict, config: SimConfig) -> None:
    obs, cube = config.observation, config.cube
    b = sizes["sim_batch"]
    freqs = sky.channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, cube.channels)
    t = time.perf_counter()
    ins = build_instrument(obs, cube.size, freqs, sky.support(config.sky, cube.size))  # the stream's (cached)
    setup_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    skies = jnp.stack([sky.build_sky(sky.draw_sources(rng, config.sky, cube.size, cube.channels, freqs), cube.size,
                                     freqs, config.sky.peak_jy_per_px).device_cube for _ in range(b)])  # fmt: skip

    def run(k: int) -> None:
        jax.block_until_ready(observe_batch(skies, ins, noise="snr", seeds=np.arange(b) + k * b,
                                            target_snrs=np.full(b, 20.0)))  # fmt: skip

    t = time.perf_counter()
    run(0)
    compile_s = time.perf_counter() - t
    times = []
    for k in range(sizes["repeat"]):
        t = time.perf_counter()
        run(k + 1)
        times.append(time.perf_counter() - t)
    print(f"[sim] observe_batch {cube.size}x{cube.size}x{cube.channels}, batch {b}: "
          f"{b / statistics.median(times):.2f} cubes/s (instrument set-up {setup_s:.1f} s, compile {compile_s:.1f} s)",
          flush=True)  # fmt: skip
    data = stream.for_model("blobs_finder", config, cubes_per_epoch=2 * b, sim_batch=b, crop_size=sizes["crop"],
                            augment=True)  # fmt: skip
    t = time.perf_counter()
    n = sum(len(examples) for _, examples in data.examples_by_cube(epoch=0, seed=0))
    print(f"[sim] stream (simulate_cubes + records + Blobs Finder examples), sim_batch {b}: "
          f"{2 * b / (time.perf_counter() - t):.2f} cubes/s ({n} examples)", flush=True)  # fmt: skip


def train_steps(sizes: dict, deadline: float, *, all_resnets: bool) -> None:
    """One line per model; the four ResNets are one network with one loss (l1) on the same input
    shapes, so unless ``all_resnets`` the first one's step is timed and stands for the others."""
    batch = sizes["train_batch"]
    for name, overrides in sizes["models"].items():
        if name in RESNETS[1:] and not all_resnets:
            print(f"[train] {name}: {shared}", flush=True)
            continue
        if time.perf_counter() > deadline:
            print(f"[train] {name}: skipped (past the deadline)")
            continue
        compile_s, steps_per_s, _ = bench_train.bench(name, overrides, batch, sizes["seconds"], cost=False)
        figures = f"{steps_per_s:.2f} steps/s, {steps_per_s * batch:.1f} examples/s"
        print(f"[train] {name}: {figures} (batch {batch}, compile {compile_s:.1f} s, {overrides or 'paper defaults'})",
              flush=True)  # fmt: skip
        if name == RESNETS[0]:
            shared = f"{figures} (the train step of {name}: same network, loss and shapes; --all-resnets times it)"


def stream_run(sizes: dict, config: SimConfig, workdir: Path) -> None:
    run = sizes["run"]
    crop, batch = sizes["crop"], run["batch"]
    cfg = train.parse_config("blobs_finder", {
        "model": sizes["models"]["blobs_finder"] | {"image_size": crop}, "batch_size": batch,
        "max_epochs": run["epochs"], "loss_transition_epochs": max(run["epochs"] - 1, 1), "peak_lr": 1e-4,
        "data_source": "stream",
        "stream": {"cubes_per_epoch": run["cubes_per_epoch"], "sim_batch": sizes["sim_batch"]}})  # fmt: skip
    data = stream.for_model("blobs_finder", config, cubes_per_epoch=run["cubes_per_epoch"],
                            sim_batch=sizes["sim_batch"], crop_size=crop, augment=True)  # fmt: skip
    held_out = config.replace(seed=VALIDATION_SEED)
    records = [stream.simulated_record(simulate_cube(i, held_out)) for i in range(run["val_cubes"])]
    validation = ip.for_model("blobs_finder", records, crop_size=crop, augment=False)

    def batches(split: str, epoch: int):
        family = data if split == "train" else validation
        for b in family.batches(batch_size=batch, epoch=epoch, seed=cfg.seed, shuffle=split == "train"):
            yield b["inputs"], b["targets"]

    t = time.perf_counter()
    metrics = train.train("blobs_finder", cfg, workdir, batches=batches, progress=False)
    log = (workdir / "metrics" / "train_log.tsv").read_text().splitlines()[1:]
    losses = ", ".join(row.split("\t")[3] for row in log)
    print(f"[stream-run] blobs_finder {crop}² from {config.cube.size}x{config.cube.size}x{config.cube.channels} "
          f"cubes: {metrics['epochs']} epochs x {run['cubes_per_epoch']} cubes, {metrics['steps']} steps, "
          f"{time.perf_counter() - t:.0f} s; val_loss (DSSIM, {run['val_cubes']} held-out cubes) per epoch: {losses}; "
          f"best {metrics['best_val_loss']:.4f}", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes, for CPU and the test suite")
    parser.add_argument("--deadline", type=float, default=420.0, help="seconds after which sections skip work")
    parser.add_argument("--all-resnets", action="store_true", help="time each ResNet's step, not the first for all")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    deadline = start + args.deadline
    sizes = TINY if args.tiny else PAPER
    size, channels = sizes["cube"]
    config = SimConfig().replace(**{"cube.size": size, "cube.channels": channels})  # Table 1 and 2 physics
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        sections = [("devices", devices), ("sim", lambda: simulator(sizes, config)),
                    ("train", lambda: train_steps(sizes, deadline, all_resnets=args.all_resnets)),
                    ("stream-run", lambda: stream_run(sizes, config, Path(tmp) / "blobs_finder"))]  # fmt: skip
        for tag, fn in sections:
            if time.perf_counter() > deadline:
                print(f"[{tag}] skipped (past the deadline)")
                continue
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - report and go on: accelerator time is scarce
                failed += 1
                print(f"[{tag}] FAILED: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc()
    print(f"[done] {time.perf_counter() - start:.0f} s, {failed} section(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
