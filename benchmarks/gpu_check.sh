#!/usr/bin/env bash
# One accelerator check that fits in 8 minutes: the devices JAX sees, simulator cubes/s at paper
# size (observe_batch), train steps/s of the six models at paper widths, and a short paper-scale
# Blobs Finder run from the stream with its validation loss (benchmarks/gpu_check.py says more).
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine
#   bash benchmarks/gpu_check.sh --tiny           # toy sizes on CPU, well under a minute
#   GPU_CHECK_TINY=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
#
# Needs only the project's environment (python -m pip install -e .), no network and no data:
# every cube is simulated in the run. PYTHON picks the interpreter (default python3);
# GPU_CHECK_TIMEOUT (default 470 s) bounds the whole run. Compiled programs are kept in
# GPU_CHECK_CACHE (default /tmp/dfjax-gpu-check-cache), so a rerun on the same machine skips most
# compilation.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
args=()
if [[ "${GPU_CHECK_TINY:-0}" == 1 ]]; then
  args+=(--tiny)
fi
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's dfjax and sim
export JAX_COMPILATION_CACHE_DIR="${GPU_CHECK_CACHE:-/tmp/dfjax-gpu-check-cache}"
echo "[gpu_check] $(date -u +%FT%TZ) $("$PYTHON" --version 2>&1) in $root ${args[*]:-} $*"
exec timeout --signal=INT --kill-after=10 "${GPU_CHECK_TIMEOUT:-470}" \
  "$PYTHON" benchmarks/gpu_check.py ${args[@]+"${args[@]}"} "$@"
