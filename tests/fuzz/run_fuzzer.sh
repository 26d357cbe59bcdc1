#!/usr/bin/env bash
# Runs one fuzz target on its seed corpus (ctest -L fuzz, scripts/fuzz.sh):
#   run_fuzzer.sh FUZZER CORPUS WORK [libFuzzer flags, e.g. -max_total_time=10 or -runs=N]
# WORK is emptied; the inputs the fuzzer finds go to WORK/new (the tracked CORPUS is only read)
# and a crash's, leak's, timeout's or allocation's reproducer to WORK/artifacts/. The caps
# (docs/reliability.md): 512 MB resident and 512 MB in one allocation, 10 s per input, inputs
# of at most 16 KiB.
# Any finding exits non-zero.
set -euo pipefail
fuzzer=$1 corpus=$2 work=$3
shift 3
rm -rf "$work"
mkdir -p "$work/new" "$work/artifacts"
# The targets that read files write them in $TMPDIR (in memory where there is some to spare):
# a directory of this run's, removed at the end (libFuzzer's exit skips the targets' atexit).
base=${TMPDIR:-/tmp}
[ -w /dev/shm ] && [ -z "${TMPDIR:-}" ] && base=/dev/shm
TMPDIR=$(mktemp -d "$base/primal_fuzz_run.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$fuzzer" -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=10 -max_len=16384 \
  -artifact_prefix="$work/artifacts/" -print_final_stats=1 "$@" "$work/new" "$corpus"
