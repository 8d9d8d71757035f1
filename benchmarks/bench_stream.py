"""The simulator as the input pipeline (data_source: stream) against each model's train step, on this machine.

    python benchmarks/bench_stream.py                        # params.yaml's 128 x 128 x 128 cubes, < 2 min
    python benchmarks/bench_stream.py --cubes 16 --seconds 10 # steadier figures
    python benchmarks/bench_stream.py --sim-batch 8          # observe_batch (GPUs)

Simulates ``--cubes`` cubes of the ``sim`` section of ``--config`` (after one warm-up cube that
builds the instrument and compiles the observation) exactly as ``dfjax.input_pipeline.stream``
does, timing the simulation and the record it becomes; then each family's examples of those
records, and the train step of each model with the batch size and model of its ``train.<model>``
section of ``--config`` (``bench_train.bench``: the trainer's data-parallel step, CPU widths). Prints per model the stream's examples/s and cubes/s,
the train step's examples/s, and their ratio in the same run: >= 1 means the simulator keeps up
with the step (streaming costs no training time if they run on separate cores or devices); on a
shared CPU the two take turns, which the last column (1 / (1/stream + 1/train)) estimates.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train, next to this script

import bench_train  # noqa: E402
import jax  # noqa: E402

from dfjax import train  # noqa: E402
from dfjax.input_pipeline import stream  # noqa: E402
from sim.config import from_dict  # noqa: E402
from sim.generate import simulate_cube, simulate_cubes  # noqa: E402

# (label, registry name, its params.yaml section); the four ResNets share one train step
CASES = [
    ("blobs_finder", "blobs_finder", "blobs_finder"),
    ("deep_gru", "deep_gru", "deep_gru"),
    ("resnet_fwhm/pa", "resnet_pa", "resnet_pa"),  # focused images
    ("resnet_flux", "resnet_flux", "resnet_flux"),  # line emission images
]


def simulate(config, cubes: int, sim_batch: int) -> tuple[list[dict], float, float]:
    """(records, simulation s/cube, record s/cube) of cubes 0..cubes-1, timed after a warm-up."""
    simulate_cube(0, config.replace(seed=config.seed + 1)) if sim_batch == 1 else simulate_cubes(
        range(sim_batch), config.replace(seed=config.seed + 1))  # compile + instrument  # fmt: skip
    sim_s, rec_s, records = 0.0, 0.0, []
    for start in range(0, cubes, sim_batch):
        t = time.perf_counter()
        idx = range(start, min(start + sim_batch, cubes))
        outs = [simulate_cube(start, config)] if len(idx) == 1 else simulate_cubes(idx, config)
        t1 = time.perf_counter()
        records += [stream.simulated_record(out) for out in outs]
        sim_s, rec_s = sim_s + t1 - t, rec_s + time.perf_counter() - t1
    return records, sim_s / cubes, rec_s / cubes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=Path("params.yaml"),
                        help="YAML file whose `sim` section makes the cubes (default: params.yaml, if present)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="simulator override, e.g. --set cube.size=64")
    parser.add_argument("--cubes", type=int, default=4, help="cubes timed (after one warm-up cube)")
    parser.add_argument("--sim-batch", type=int, default=1, help="cubes per observe_batch call (1: simulate_cube)")
    parser.add_argument("--batch-size", type=int, help="train batch (default: each model's in --config, else 32)")
    parser.add_argument("--seconds", type=float, default=2.0, help="train-step timing per model (at least 3 steps)")
    parser.add_argument("--only", nargs="*", help="labels to run")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    content = yaml.safe_load(args.config.read_text()) if args.config.is_file() else {}
    sim, sections = content.get("sim", {}), content.get("train", {})
    config = from_dict(sim)
    if args.sets:
        config = config.replace(**{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)})
    d = jax.devices()
    c = config.cube
    print(f"devices: {len(d)} x {d[0].platform} ({d[0].device_kind}); cubes {c.size}x{c.size}x{c.channels} "
          f"from {args.config if sim else 'sim defaults'}", flush=True)  # fmt: skip
    records, sim_s, rec_s = simulate(config, args.cubes, args.sim_batch)
    print(f"simulate: {sim_s:.3f} s/cube (draw + observe + catalogue), record: {rec_s:.3f} s/cube "
          f"(mJy, float16, integrated images), {args.cubes} cubes, sim_batch {args.sim_batch}", flush=True)  # fmt: skip
    print(f"{'model':15s} {'batch':>5s} {'ex/cube':>7s} {'stream ex/s':>11s} {'cubes/s':>7s} {'train ex/s':>10s} "
          f"{'stream/train':>12s} {'shared ex/s':>11s} {'compile s':>9s}")
    steps: dict[str, float] = {}
    compiles: dict[str, float] = {}
    for label, name, section in CASES:
        if args.only and label not in args.only:
            continue
        train_cfg = train.parse_config(name, sections.get(section, {}))
        overrides, batch_size = train_cfg.model, args.batch_size or train_cfg.batch_size
        image_size = train.input_shapes(name, train_cfg)[0][0]
        kwargs = {"crop_size": image_size, "augment": True} if name == "blobs_finder" else {}
        data = stream.for_model(name, config, cubes_per_epoch=args.cubes, **kwargs)
        times, counts = [], []
        for i, record in enumerate(records):
            t = time.perf_counter()
            counts.append(len(data.cube_examples(record, data.augment_rng(epoch=0, seed=0, index=i))))
            times.append(time.perf_counter() - t)
        per_cube = sum(counts) / len(counts)
        cube_s = sim_s + rec_s + statistics.fmean(times)
        stream_rate = per_cube / cube_s
        key = "resnet" if name.startswith("resnet") else name
        if key not in steps:
            step_name = "resnet_pa" if key == "resnet" else name
            compile_s, steps_per_s, _ = bench_train.bench(step_name, overrides, batch_size, args.seconds,
                                                          cost=False)  # fmt: skip
            steps[key] = steps_per_s * batch_size
            compiles[key] = compile_s
        train_rate = steps[key]
        shared = 1.0 / (1.0 / stream_rate + 1.0 / train_rate)
        print(f"{label:15s} {batch_size:5d} {per_cube:7.1f} {stream_rate:11.1f} {1 / cube_s:7.2f} {train_rate:10.1f} "
              f"{stream_rate / train_rate:12.3f} {shared:11.1f} {compiles[key]:9.1f}", flush=True)  # fmt: skip
    print("stream/train >= 1: the simulator feeds the step as fast as it trains (fresh cubes every epoch at no "
          "cost when simulation and training have their own cores or devices); < 1: the step waits for cubes, "
          "and a packaged dataset (simulated once, read every epoch) trains faster per epoch. "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
