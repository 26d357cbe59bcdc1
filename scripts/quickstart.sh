#!/usr/bin/env bash
# The Quickstart's main job, from a fresh machine: installs what primal needs (setup.sh),
# builds it, and trains the Primal.+Trans. byte-level LM of configs/lm_kjv.pbtxt on the King
# James Bible, printing the validation loss as it goes and a JSON line at the end.
# Extra arguments go to `primal train` (e.g. --set train.steps=200).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target primal
exec ./build/primal train --config configs/lm_kjv.pbtxt "$@"
