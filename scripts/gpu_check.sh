#!/usr/bin/env bash
# The GPU check (issue 6): builds the CUDA backend (PRIMAL_CUDA=ON) in build-gpu/, runs the gpu
# tests (every op against a CPU reference, NCCL collectives) and the op-level benchmark, and
# prints a short table last. Sized to finish within 8 minutes on one H200: the build targets
# only this GPU's architecture, and every stage runs under a timeout.
#   scripts/gpu_check.sh [--quick]     (--quick: a shorter benchmark)
# Environment: BUILD_DIR (default build-gpu), CUDA_ARCHS (default: the GPU's, else "80;90").
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
build=${BUILD_DIR:-build-gpu}
log_dir=${OUT:-$build}/gpu_check
mkdir -p "$log_dir"
quick=""
[ "${1:-}" = "--quick" ] && quick="--quick"

stage() { printf '\n== %s (%ds elapsed)\n' "$1" $((SECONDS - start)); }

stage "device"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
else
  echo "nvidia-smi not found: the gpu tests will report SKIPPED"
fi
archs=${CUDA_ARCHS:-}
if [ -z "$archs" ] && command -v nvidia-smi >/dev/null; then
  archs=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
fi
archs=${archs:-80;90}

stage "configure and build (CUDA architectures: $archs)"
if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
  ./scripts/setup.sh || echo "setup.sh failed: building with what is installed"
fi
targets=(primal_gpu_bench cuda_ops_test cuda_allocator_test element_math_test)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPRIMAL_CUDA=ON \
  "-DCMAKE_CUDA_ARCHITECTURES=$archs" >"$log_dir/configure.log" 2>&1 ||
  { tail -30 "$log_dir/configure.log"; exit 1; }
grep -q 'NCCL:' "$log_dir/configure.log" && targets+=(nccl_test)
timeout 300 cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >"$log_dir/build.log" 2>&1 ||
  { tail -40 "$log_dir/build.log"; exit 1; }
grep -E 'warning' "$log_dir/build.log" | head -20

stage "gpu tests"
# The op tests, then the NCCL ones (label gpu), and the CPU checks of the shared element math
# and the allocator (label unit, built above).
timeout 150 ctest --test-dir "$build" --output-on-failure -j4 \
  -R 'Kernels|Gemm|Attention|NcclCollectives|ElementMath|CachingAllocator' \
  >"$log_dir/ctest.log" 2>&1
ctest_rc=$?
grep -E '\((Failed|Timeout|Not Run)\)' "$log_dir/ctest.log" | head -40
summary=$(grep -E 'tests passed|tests failed' "$log_dir/ctest.log" | tail -1)
skipped=$(grep -c '(Skipped)' "$log_dir/ctest.log")

stage "benchmark"
timeout 240 "$build/core/cuda/primal_gpu_bench" $quick >"$log_dir/bench.log" 2>&1
bench_rc=$?
grep -v '^|' "$log_dir/bench.log" | grep -v '^$' | grep -v '^bf16 GEMM peak'

stage "summary"
echo "tests: ${summary:-no ctest summary} (${skipped} skipped); ctest exit $ctest_rc; benchmark exit $bench_rc"
echo "logs: $log_dir"
echo
grep -E '^\||^bf16 GEMM peak' "$log_dir/bench.log" || echo "(no benchmark table: see $log_dir/bench.log)"
[ $ctest_rc -eq 0 ] && { [ $bench_rc -eq 0 ] || [ $bench_rc -eq 77 ]; }  # 77: no GPU, skipped
