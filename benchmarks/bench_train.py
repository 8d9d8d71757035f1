"""Training speed of each model (train step: forward, backward, Adam update) and paper-scale estimates.

    python benchmarks/bench_train.py                  # every model, batch 32
    python benchmarks/bench_train.py --batch-size 16 --seconds 5 --only resnet_paper

Prints steps/s and examples/s per model on the devices in use (all local devices,
data parallel as in `dfjax.train`), then the time one epoch and the paper's maximum
schedule would take at the paper's scale: 3000 training cubes for Blobs Finder
(one integrated image each) and 13,512 training sources for Deep GRU and each
ResNet (Sec. 3.1), 300 epochs for phase 1 and 50 for phase 2 (Sec. 4.5; early
stopping usually ends sooner). For comparison the paper reports ~4 h (Blobs
Finder, 2× Tesla K20), ~20 min (Deep GRU) and ~2 h per ResNet (one K20).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dfjax import checkpoint, models, train
from dfjax.models import resnet

TRAIN_CUBES = 3000  # 60 % of 5000 cubes (Sec. 3.1)
TRAIN_SOURCES = 13_512
PHASE1_EPOCHS, PHASE2_EPOCHS = 300, 50

# (label, registry name, constructor overrides, examples per epoch at paper scale)
CASES = [
    ("blobs_finder_paper", "blobs_finder", {}, TRAIN_CUBES),  # 256², widths 8..64
    ("blobs_finder_cpu", "blobs_finder", {"image_size": 128}, TRAIN_CUBES),  # 128² CPU cubes
    ("deep_gru_paper", "deep_gru", {}, TRAIN_SOURCES),  # L = 128, 32 hidden
    ("resnet_paper", "resnet_pa", {"widths": list(resnet.PAPER_WIDTHS)}, TRAIN_SOURCES),
    ("resnet_cpu", "resnet_pa", {}, TRAIN_SOURCES),  # CPU_WIDTHS 16..128
]


def bench(name: str, overrides: dict, batch_size: int, seconds: float, *,
          cost: bool = True) -> tuple[float, float, float]:  # fmt: skip
    """(compile seconds, steps/s, XLA's FLOP count per step) of the data-parallel train step;
    without ``cost`` the FLOP count (an extra compilation) is skipped and NaN."""
    cfg = train.parse_config(name, {"model": overrides, "batch_size": batch_size})
    model = models.create(name, rngs=nnx.Rngs(0), **checkpoint.constructor_args(cfg.model))
    optimizer = train.make_optimizer(model, cfg)
    dp = train.DataParallel()
    step, _ = train.make_steps(model, optimizer, train.make_loss(name, cfg), dp)
    x_shape, y_shape = train.input_shapes(name, cfg)
    rng = np.random.default_rng(0)
    x, y = dp.shard(rng.random((batch_size, *x_shape), np.float32),
                    rng.random((batch_size, *y_shape), np.float32))
    state = dp.replicate(nnx.state((model, optimizer)))
    epoch = jnp.int32(0)
    flops = float("nan")
    if cost:
        analysis = step.lower(state, x, y, epoch).compile().cost_analysis()
        analysis = analysis[0] if isinstance(analysis, list) else analysis
        flops = float(analysis.get("flops", float("nan"))) if analysis else float("nan")
    t = time.perf_counter()
    state, loss = step(state, x, y, epoch)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - t
    n, t = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t < seconds:
        state, loss = step(state, x, y, epoch)
        n += 1
        if n % 5 == 0:
            jax.block_until_ready(loss)
    jax.block_until_ready(loss)
    return compile_s, n / (time.perf_counter() - t), flops


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per model")
    parser.add_argument("--only", nargs="*", help="labels to run")
    parser.add_argument("--assume-tflops", type=float, default=50.0,
                        help="sustained TFLOP/s for the GPU estimate (H100: ~60 dense fp32, ~500 tf32/bf16 peak)")
    args = parser.parse_args()
    devices = jax.devices()
    print(f"devices: {len(devices)} x {devices[0].platform} ({devices[0].device_kind}), "
          f"batch {args.batch_size}")
    print(f"{'model':20s} {'compile s':>9s} {'steps/s':>8s} {'ex/s':>8s} {'epoch':>9s} "
          f"{f'{PHASE1_EPOCHS} ep':>9s} {f'{PHASE2_EPOCHS} ep':>9s} {'GFLOP/step':>10s} "
          f"{f'{PHASE2_EPOCHS} ep at {args.assume_tflops:g} TF/s':>18s}")
    for label, name, overrides, per_epoch in CASES:
        if args.only and label not in args.only:
            continue
        compile_s, steps_per_s, flops = bench(name, overrides, args.batch_size, args.seconds)
        epoch_s = per_epoch / args.batch_size / steps_per_s
        gpu_s = PHASE2_EPOCHS * per_epoch / args.batch_size * flops / (args.assume_tflops * 1e12)
        print(f"{label:20s} {compile_s:9.1f} {steps_per_s:8.2f} {steps_per_s * args.batch_size:8.1f} "
              f"{_hours(epoch_s):>9s} {_hours(PHASE1_EPOCHS * epoch_s):>9s} "
              f"{_hours(PHASE2_EPOCHS * epoch_s):>9s} {flops / 1e9:10.2f} {_hours(gpu_s):>18s}", flush=True)
    print("epoch = one pass over the paper's training set (train steps only; no validation, "
          "no input pipeline); the four ResNets share one architecture. The last column is an "
          "estimate from XLA's FLOP count at an assumed sustained rate, not a measurement.")


if __name__ == "__main__":
    main()
