#!/usr/bin/env bash
# The GPU check (issue 6): builds the CUDA backend (PRIMAL_CUDA=ON) in build-gpu/, runs the gpu
# tests (every op against a CPU reference, the Transformer's training step against the CPU
# model, NCCL collectives), the op-level benchmark (short form) and the whole-step benchmark,
# and prints the step table last. Sized to finish within 8 minutes on one H200: the build
# targets only this GPU's architecture, and every stage runs under a timeout (configure 45 s,
# build 160 s, tests 100 s, op benchmark 50 s, step benchmark 110 s: at most 465 s; the step
# benchmark starts no new row after 85 s).
#   scripts/gpu_check.sh [--quick]     (--quick: the step benchmark up to N = 4K only)
# Environment: BUILD_DIR (default build-gpu), CUDA_ARCHS (default: the GPU's, else "80;90").
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
build=${BUILD_DIR:-build-gpu}
log_dir=${OUT:-$build}/gpu_check
mkdir -p "$log_dir"
quick=""
[ "${1:-}" = "--quick" ] && quick="--quick"
step_args=(--budget-s 85)
[ -n "$quick" ] && step_args+=(--quick)

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
targets=(primal_gpu_bench primal_step_bench cuda_ops_test cuda_allocator_test element_math_test
  transformer_step_test model_cuda_host_test trainer_device_test)
timeout 45 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPRIMAL_CUDA=ON \
  "-DCMAKE_CUDA_ARCHITECTURES=$archs" >"$log_dir/configure.log" 2>&1 ||
  { tail -30 "$log_dir/configure.log"; exit 1; }
grep -q 'NCCL:' "$log_dir/configure.log" &&
  targets+=(nccl_test nccl_buckets_test trainer_device_dp_test)
timeout 160 cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >"$log_dir/build.log" 2>&1 ||
  { tail -40 "$log_dir/build.log"; exit 1; }
grep -E 'warning' "$log_dir/build.log" | head -20

stage "gpu tests"
# The op tests, the training step (TransformerStep), then the NCCL ones (label gpu), and the
# CPU checks of the shared element math, the allocator and the device model's host side
# (label unit, built above).
timeout 100 ctest --test-dir "$build" --output-on-failure -j4 \
  -R 'Kernels|Gemm|Attention|TransformerStep|TrainerOnDevice|TrainerDataParallelOnDevice|NcclCollectives|NcclBuckets|ElementMath|CachingAllocator|PhiloxWords|DeviceDropout|ParameterLayout|TokenRows|SampledPositions' \
  >"$log_dir/ctest.log" 2>&1
ctest_rc=$?
grep -E '\((Failed|Timeout|Not Run)\)' "$log_dir/ctest.log" | head -40
summary=$(grep -E 'tests passed|tests failed' "$log_dir/ctest.log" | tail -1)
skipped=$(grep -c '(Skipped)' "$log_dir/ctest.log")

stage "op benchmark (short form)"
timeout 50 "$build/core/cuda/primal_gpu_bench" --quick >"$log_dir/bench.log" 2>&1
bench_rc=$?
grep -v '^$' "$log_dir/bench.log"

stage "training-step benchmark"
timeout 110 "$build/model/cuda/primal_step_bench" "${step_args[@]}" >"$log_dir/step_bench.log" 2>&1
step_rc=$?
grep -v '^|' "$log_dir/step_bench.log" | grep -v '^$' | grep -v '^step = '

stage "summary"
echo "tests: ${summary:-no ctest summary} (${skipped} skipped); ctest exit $ctest_rc;" \
  "op benchmark exit $bench_rc; step benchmark exit $step_rc"
echo "logs: $log_dir"
echo
grep -E '^\||^bf16 GEMM peak|^step = ' "$log_dir/step_bench.log" ||
  echo "(no step table: see $log_dir/step_bench.log)"
ok_bench() { [ "$1" -eq 0 ] || [ "$1" -eq 77 ]; }  # 77: no GPU, skipped
[ $ctest_rc -eq 0 ] && ok_bench $bench_rc && ok_bench $step_rc
