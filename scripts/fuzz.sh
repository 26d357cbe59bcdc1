#!/usr/bin/env bash
# libFuzzer runs of the readers of bytes from outside (docs/reliability.md, tests/fuzz/):
#   scripts/fuzz.sh                       builds the fuzz targets in build-fuzz/ and runs each for
#                                         about 10 s on its seed corpus (ctest -L fuzz)
#   scripts/fuzz.sh long TARGET [RUNS]    one target (config, command_line, checkpoint,
#                                         safetensors, idx, text, listops, kjv_testament) for
#                                         RUNS executions (default 1000000) or 30 minutes,
#                                         whichever comes first,
#                                         printing executions and time
# clang (libFuzzer) with ASan + UBSan + LeakSanitizer, CPU only, RelWithDebInfo. One fuzzer
# process at a time. The tracked corpora are only read (run_fuzzer.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
build=${BUILD_DIR:-build-fuzz}
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPRIMAL_CUDA=OFF -DPRIMAL_FUZZ=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz_targets

if [ "${1:-}" = long ]; then
  target=${2:?usage: scripts/fuzz.sh long TARGET [RUNS]}
  runs=${3:-1000000}
  dict=()
  [ -f "tests/fuzz/dict/$target.dict" ] && dict=("-dict=tests/fuzz/dict/$target.dict")
  mkdir -p "$build/tests/fuzz/long"
  log=$build/tests/fuzz/long/$target.log
  start=$(date +%s)
  rc=0
  tests/fuzz/run_fuzzer.sh "$build/tests/fuzz/${target}_fuzz" "tests/fuzz/corpus/$target" \
    "$build/tests/fuzz/long/$target" "${dict[@]}" -runs="$runs" -max_total_time=1800 \
    >"$log" 2>&1 || rc=$?
  grep -E '^#[0-9]+\s+(INITED|DONE)|^Done|^stat::|ERROR|SUMMARY' "$log" || true
  echo "fuzz $target: exit $rc, $(($(date +%s) - start)) s wall, log $log"
  exit "$rc"
fi
ctest --test-dir "$build" --output-on-failure -L fuzz "$@"
