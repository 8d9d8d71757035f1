"""Throughput of the three input pipelines against the train step of each model, on this CPU.

    python -m sim generate --config experiments/default.yaml --out /tmp/simB --n 20
    python benchmarks/bench_input_pipeline.py --data /tmp/simB

Reads the cubes with ``read_cube_record`` (float16, as the dataset stores them) into a list,
then for each loader (Blobs Finder, Deep GRU, ResNet focused images, ResNet line images) prints
batches/s and examples/s for several (worker processes, reader threads) settings, and the time
of one jitted forward + backward pass (``nnx.value_and_grad`` of the model's loss) at the same
batch size, with the ratio loader batches/s ÷ train steps/s (> 1: the loader outruns the step).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
from flax import nnx

from dfjax import losses, models
from dfjax.datasets.almasim.records import read_cube_record
from dfjax.input_pipeline import BlobsFinderData, DeepGRUData, ResNetData


def _loader_rate(data, batch_size: int, min_batches: int, **kw) -> tuple[float, float, float]:
    """(batches/s over whole epochs, batches/s after the first batch, seconds to the first batch)."""
    n, t0, first, epoch = 0, time.perf_counter(), None, 0
    while n < min_batches:
        for _ in data.batches(batch_size=batch_size, epoch=epoch, seed=0, **kw):
            n += 1
            if first is None:
                first = time.perf_counter() - t0
        epoch += 1
    total = time.perf_counter() - t0
    return n / total, (n - 1) / max(total - first, 1e-9), first


def _step_time(name: str, batch: dict, repeat: int, **overrides) -> float:
    """Seconds per jitted forward + backward pass of model ``name`` on ``batch``."""
    model = models.create(name, rngs=nnx.Rngs(0), **overrides)
    model.train()

    def loss_fn(m, inputs, targets):
        pred = m(inputs)
        if name == "blobs_finder":
            return losses.blobs_finder_loss(pred, targets, epoch=5, num_epochs=10)
        return losses.l1(pred, targets)

    @nnx.jit
    def step(m, inputs, targets):
        return nnx.value_and_grad(loss_fn)(m, inputs, targets)

    inputs, targets = jax.device_put(batch["inputs"]), jax.device_put(batch["targets"])
    jax.block_until_ready(step(model, inputs, targets))  # compile
    t = time.perf_counter()
    for _ in range(repeat):
        jax.block_until_ready(step(model, inputs, targets))
    return (time.perf_counter() - t) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/simB"))
    parser.add_argument("--n", type=int, default=20, help="cubes to read")
    parser.add_argument("--crop", type=int, default=96, help="Blobs Finder input size")
    parser.add_argument("--batch-images", type=int, default=8, help="Blobs Finder batch size")
    parser.add_argument("--batch", type=int, default=32, help="Deep GRU and ResNet batch size")
    parser.add_argument("--min-batches", type=int, default=40, help="whole epochs until this many batches")
    parser.add_argument("--repeat", type=int, default=5, help="timed train steps per model")
    parser.add_argument("--settings", default="0x0,0x1,0x2", help="comma list of WORKERSxTHREADS (e.g. add 2x1: grain worker processes)")
    args = parser.parse_args()

    records = [read_cube_record(args.data / f"cube_{i:05d}.fits", args.data / f"sky_{i:05d}.fits")
               for i in range(args.n)]  # fmt: skip
    nz = records[0]["dirty_cube"].shape[0]
    families = [
        ("blobs_finder", BlobsFinderData(records, crop_size=args.crop), args.batch_images,
         {"image_size": args.crop}),
        ("deep_gru", DeepGRUData(records), args.batch, {"spectrum_length": nz}),
        ("resnet_fwhm_x", ResNetData(records, target="fwhm_x"), args.batch, {}),
        ("resnet_flux", ResNetData(records, target="line_flux"), args.batch, {}),
    ]  # fmt: skip
    settings = [tuple(int(v) for v in s.split("x")) for s in args.settings.split(",")]
    print(f"{args.n} cubes {records[0]['dirty_cube'].shape} float16; jax {jax.__version__} on "
          f"{jax.devices()[0].platform}; >= {args.min_batches} batches per loader setting")  # fmt: skip
    for name, data, batch_size, overrides in families:
        print(f"\n{name}: {len(data)} examples, batch {batch_size}, {data.num_batches(batch_size)} batches/epoch")
        best = 0.0
        for workers, threads in settings:
            rate, steady, first = _loader_rate(data, batch_size, args.min_batches, worker_count=workers,
                                               num_threads=threads)  # fmt: skip
            best = max(best, rate)
            print(f"  loader workers={workers} threads={threads}: {rate:8.1f} batches/s "
                  f"{rate * batch_size:9.1f} examples/s  (steady {steady:8.1f} batches/s, first batch {first:.2f} s)")
        batch = next(data.batches(batch_size=batch_size, epoch=0, num_threads=0))
        step = _step_time(name, batch, args.repeat, **overrides)
        print(f"  train step (fwd+bwd, jit): {step * 1e3:8.1f} ms = {1 / step:7.1f} steps/s; "
              f"loader/step ratio (best setting) = {best * step:6.1f}")


if __name__ == "__main__":
    main()
