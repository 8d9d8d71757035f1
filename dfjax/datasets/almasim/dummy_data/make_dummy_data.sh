#!/usr/bin/env bash
# Regenerate the 3 tiny cubes (32 x 32 x 16, seed 7) of the almasim "test" config; run from anywhere:
#   bash dfjax/datasets/almasim/dummy_data/make_dummy_data.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python -m sim generate --out "$here" --n 3 --seed 7 --size 32 --channels 16 --overwrite --quiet
