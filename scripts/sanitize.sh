#!/usr/bin/env bash
# The CPU code and its tests under sanitizers (docs/reliability.md):
#   scripts/sanitize.sh [address] [ctest args]   ASan + UBSan (with LeakSanitizer) in
#                                                build-asan/: the unit and mpi tests
#                                                (ctest -L 'unit|mpi' unless given)
#   scripts/sanitize.sh thread                   TSan in build-tsan/: the checkpoint tests, whose
#                                                background writer is primal's one thread of its
#                                                own, with two OpenMP threads beside it
# CPU only (PRIMAL_CUDA=OFF: nvcc's device code is not instrumented); RelWithDebInfo, so reports
# carry lines. Any report fails the test that made it (halt_on_error). Leaks inside Open MPI's own
# libraries, which it frees at exit or never, are suppressed with the reason in
# tests/sanitizers/lsan.supp; nothing of ours is.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=address
if [ "${1:-}" = address ] || [ "${1:-}" = thread ]; then
  mode=$1
  shift
fi

if [ "$mode" = thread ]; then
  build=${BUILD_DIR:-build-tsan}
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPRIMAL_CUDA=OFF \
    -DPRIMAL_SANITIZE=thread >/dev/null
  cmake --build "$build" -j"$(nproc)" --target checkpoint_test
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 OMP_NUM_THREADS=2 \
    "$build/tests/checkpoint/checkpoint_test"
  exit
fi

build=${BUILD_DIR:-build-asan}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPRIMAL_CUDA=OFF \
  -DPRIMAL_SANITIZE=address,undefined >/dev/null
cmake --build "$build" -j"$(nproc)"
# Full unwinding on malloc and Open MPI's plugins kept loaded: a leak's stack then names the
# library that made it, which the suppressions match (an unloaded plugin has no name).
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:fast_unwind_on_malloc=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0
export OMPI_MCA_mca_base_component_disable_dlclose=1
[ $# -gt 0 ] || set -- -L 'unit|mpi'
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 900 "$@"
