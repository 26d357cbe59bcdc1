#!/usr/bin/env bash
# The test suite, from a fresh machine: installs what the build and tests need (setup.sh),
# configures and builds in build/, and runs every ctest test. Extra arguments go to ctest
# (e.g. -L unit, -R PrimalAttention).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
