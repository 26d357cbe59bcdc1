#!/usr/bin/env bash
# The GPU check, made for the bare GPU machine (one H200, 16 cores, no network, a short window;
# docs/gpu.md says how to run it there). It uses only what that machine has (the CUDA toolkit, a
# C++ compiler, CMake, ninja, Python with the NCCL wheel) and the device kit that travels with the
# tree (device-kit.tar.gz, made here by scripts/device_kit.sh). Stages, in order of value, each
# under its own timeout (a stage that ignores it is killed 2 s later), at most 480 s in all on
# 16 cores including the build:
#   found      what is there; stops at once on anything missing                      ~5 s
#   configure  CUDA for sm_90 only (CUDA_ARCHS), the kit's libraries                 45 s
#   build      only the targets run below                                          160 s
#   gpu tests  every op, flash attention and the training step against the CPU     110 s
#   step bench large rows: PRIMAL vs SOFTMAX at 32K and 16K tokens per sequence      60 s
#   op bench   GEMM peak, kernels, attention (short form)                            30 s
#   step bench the remaining rows (N = 1K, 4K)                                       45 s
# Output goes to the terminal as it comes and to $OUT (logs, and gpu_check.md: the summary).
#   scripts/gpu_check.sh
# Environment: OUT (default build-gpu/gpu_check), BUILD_DIR (build-gpu), CUDA_ARCHS (90),
# KIT_ARCHIVE (device-kit.tar.gz), GPU_CHECK_NO_GPU=1 to go on without a GPU (the gpu tests
# then skip) and GPU_CHECK_TIME_SCALE=K to give every stage K times its limit (both for
# scripts/check_device_kit.sh, which runs it on a bare root on a 2-core machine).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
build=${BUILD_DIR:-build-gpu}
out=${OUT:-$build/gpu_check}
archs=${CUDA_ARCHS:-90}
kit_archive=${KIT_ARCHIVE:-device-kit.tar.gz}
mkdir -p "$out" "$build"
summary=$out/gpu_check.md
# ctest runs 4 tests at a time; 4 OpenMP threads each fill the 16 cores without oversubscribing.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
test_jobs=4

rows=()
note() { rows+=("| $1 | $2 | $3 | $4 |"); }
write_summary() {
  {
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null)"
    echo
    echo "| stage | result | seconds | detail |"
    echo "| --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    for f in "$out"/found.txt "$out"/tests_failed.txt "$out"/step_table.md "$out"/op_table.txt; do
      [ -s "$f" ] || continue
      echo
      echo "## $(basename "$f")"
      echo
      case $f in *.md) cat "$f" ;; *) echo '```' && cat "$f" && echo '```' ;; esac
    done
  } >"$summary"
}
banner() { printf '\n== %s (%ds elapsed)\n' "$1" $((SECONDS - start)); }
# run_stage NAME SECONDS CMD...: output to the terminal and to $out/NAME.log; sets stage_rc.
run_stage() {
  local name=$1 limit=$(($2 * ${GPU_CHECK_TIME_SCALE:-1}))
  shift 2
  banner "$name (limit ${limit}s)"
  local t0=$SECONDS
  timeout --kill-after=2 "$limit" "$@" 2>&1 | tee "$out/$name.log"
  stage_rc=${PIPESTATUS[0]}
  stage_s=$((SECONDS - t0))
  [ "$stage_rc" -eq 124 ] && echo "$name: timed out after ${limit}s"
}

# ---- found: the machine, the toolkit, the kit; nothing is built before all of it is there --------
banner "found"
missing=()
found() { printf '%-10s %s\n' "$1" "$2" | tee -a "$out/found.txt"; }
: >"$out/found.txt"
if command -v nvidia-smi >/dev/null && gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1); then
  found gpu "$gpu"
elif [ "${GPU_CHECK_NO_GPU:-0}" = 1 ]; then
  found gpu "none (GPU_CHECK_NO_GPU=1: the gpu tests will skip)"
else
  missing+=("a GPU (nvidia-smi: ${gpu:-not found})")
fi
command -v nvcc >/dev/null || [ ! -x /usr/local/cuda/bin/nvcc ] || export PATH=/usr/local/cuda/bin:$PATH
if command -v nvcc >/dev/null; then
  found nvcc "$(command -v nvcc): $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
  cuda_root=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
else
  missing+=("nvcc")
fi
cxx=${CXX:-$(command -v c++ || command -v g++)}
for tool in cmake ninja "${cxx:-c++}" python3 tar gzip; do
  if command -v "$tool" >/dev/null; then
    found "$(basename "$tool")" "$(command -v "$tool") $("$tool" --version 2>&1 | head -1 | grep -o '[0-9][0-9.]*' | head -1)"
  else
    missing+=("$tool")
  fi
done
# The kit's libraries are Debian 12's: libevent (mpirun, PMIx) calls arc4random, glibc 2.36.
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | grep -o '[0-9.]*$')
if [ -n "$glibc" ] && printf '2.36\n%s\n' "$glibc" | sort -V -C; then
  found glibc "$glibc"
else
  missing+=("glibc 2.36 or later for the kit (found: ${glibc:-unknown})")
fi

kit=$build/kit
if [ -f "$kit_archive" ] && { [ ! -f "$kit/env.sh" ] || [ "$kit_archive" -nt "$kit/env.sh" ]; }; then
  rm -rf "$kit" && mkdir -p "$kit" && tar -C "$kit" -xzf "$kit_archive" ||
    missing+=("a readable kit ($kit_archive)")
fi
if [ -f "$kit/env.sh" ]; then
  # shellcheck source=device_kit_env.sh
  source "$kit/env.sh"
  found kit "$kit_archive: $(grep -vc '^nccl.h' "$kit/MANIFEST") packages, $(du -sh "$kit" | cut -f1) unpacked"
  for tool in protoc mpirun; do
    if version=$("$tool" --version 2>&1 | head -1); then
      found "$tool" "$(command -v $tool): $version"
    else
      missing+=("a working $tool from the kit ($version)")
    fi
  done
else
  missing+=("the device kit ($kit_archive: run scripts/device_kit.sh here and carry it)")
fi

# NCCL: the wheel beside PyTorch (library only, or with its header), else the toolkit's own.
nccl_lib="" nccl_include=""
wheel=$(python3 -c 'import importlib.util as u; s = u.find_spec("nvidia.nccl"); print(s.submodule_search_locations[0])' 2>/dev/null)
for dir in "$wheel" "${cuda_root:-/usr/local/cuda}"; do
  [ -n "$dir" ] || continue
  [ -z "$nccl_lib" ] && nccl_lib=$(ls "$dir"/lib/libnccl.so* "$dir"/lib64/libnccl.so* 2>/dev/null | head -1)
  [ -z "$nccl_include" ] && [ -f "$dir/include/nccl.h" ] && nccl_include=$dir/include
done
[ -z "$nccl_include" ] && [ -f "${PRIMAL_KIT:-/nonexistent}/nccl/include/nccl.h" ] &&
  nccl_include=$PRIMAL_KIT/nccl/include
if [ -n "$nccl_lib" ] && [ -n "$nccl_include" ]; then
  found nccl "$nccl_lib (header in $nccl_include)"
  export LD_LIBRARY_PATH=$(dirname "$nccl_lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  missing+=("NCCL (library: ${nccl_lib:-none}, nccl.h: ${nccl_include:-none})")
fi

if [ ${#missing[@]} -gt 0 ]; then
  printf 'MISSING: %s\n' "${missing[@]}" | tee -a "$out/found.txt"
  note found FAILED $((SECONDS - start)) "missing: $(printf '%s; ' "${missing[@]}")"
  write_summary
  exit 1
fi
note found ok $((SECONDS - start)) "see found.txt"

# ---- configure and build ------------------------------------------------------------------------
targets=(cuda_ops_test flash_attention_test transformer_step_test trainer_device_test
  nccl_test nccl_buckets_test cuda_allocator_test element_math_test model_cuda_host_test
  flash_plan_test trainer_device_tp_test primal primal_step_bench primal_gpu_bench)
run_stage configure 45 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPRIMAL_CUDA=ON \
  "-DCMAKE_CUDA_ARCHITECTURES=$archs" "-DNCCL_LIBRARY=$nccl_lib" "-DNCCL_INCLUDE_DIR=$nccl_include"
note configure "$([ $stage_rc -eq 0 ] && echo ok || echo "FAILED ($stage_rc)")" $stage_s "sm_$archs"
[ $stage_rc -eq 0 ] || { write_summary; exit 1; }
run_stage build 160 cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"
warnings=$(grep -c 'warning' "$out/build.log")
note build "$([ $stage_rc -eq 0 ] && echo ok || echo "FAILED ($stage_rc)")" $stage_s \
  "${#targets[@]} targets, $warnings warning lines"
[ $stage_rc -eq 0 ] || { write_summary; exit 1; }

# ---- gpu tests: the ops, flash attention, the step and the trainer on the device, NCCL on one
# rank; with the CPU-side checks of the device code (element math, allocator, host side) ----------
run_stage gpu_tests 110 ctest --test-dir "$build" --output-on-failure -j$test_jobs --timeout 60 \
  -R 'Kernels|Gemm|Attention|Flash|TransformerStep|TrainerOnDevice|DeviceCollectives.np1|DeviceCollectives.np2|NcclBuckets.np1|ElementMath|CachingAllocator|PhiloxWords|DeviceDropout|ParameterLayout|TokenRows|SampledPositions'
tests_rc=$stage_rc
grep -E '\((Failed|Timeout|Not Run|SEGFAULT|Subprocess aborted)\)' "$out/gpu_tests.log" >"$out/tests_failed.txt"
counts=$(grep -E 'tests passed|tests failed' "$out/gpu_tests.log" | tail -1)
skipped=$(grep -c '(Skipped)' "$out/gpu_tests.log")
note "gpu tests" "$([ $tests_rc -eq 0 ] && echo ok || echo "FAILED ($tests_rc)")" $stage_s \
  "${counts:-no ctest summary}; $skipped skipped"
write_summary

# ---- tensor parallelism on the device: 2 ranks sharing the one GPU (STAGED_MPI) against the CPU,
# and a killed rank of such a job (TP = 2 x DP = 2, np 4, is left to a longer window) -------------
run_stage gpu_tp_tests 200 ctest --test-dir "$build" --output-on-failure -j2 --timeout 190 \
  -R 'TrainerTensorParallelOnDevice.np2|TrainParallel.kill_on_device'
tp_rc=$stage_rc
grep -E '\((Failed|Timeout|Not Run|SEGFAULT|Subprocess aborted)\)' "$out/gpu_tp_tests.log" \
  >>"$out/tests_failed.txt"
note "gpu tp tests" "$([ $tp_rc -eq 0 ] && echo ok || echo "FAILED ($tp_rc)")" $stage_s \
  "$(grep -E 'tests passed|tests failed' "$out/gpu_tp_tests.log" | tail -1)"
write_summary

# ---- benchmarks: the large rows first, so that a short window still gets them -------------------
bench_ok() { [ "$1" -eq 0 ] || [ "$1" -eq 77 ]; }  # 77: no GPU, nothing measured
# The bench's table, or the lines it printed row by row when its stage was cut short.
step_rows() {
  if grep -q '^|' "$out/$1.log"; then
    grep -E '^\||^bf16 GEMM peak' "$out/$1.log"
  else
    grep -E '^bf16 GEMM peak|^(kjv|large) ' "$out/$1.log" | sed 's/^/    /'
  fi >>"$out/step_table.md"
}
: >"$out/step_table.md"
run_stage step_bench_large 60 "$build/model/cuda/primal_step_bench" --lengths 32768,16384 --budget-s 50
step_large_rc=$stage_rc
step_rows step_bench_large
note "step bench 32K, 16K" "$(bench_ok $stage_rc && echo ok || echo "FAILED ($stage_rc)")" $stage_s ""
write_summary

run_stage op_bench 30 "$build/core/cuda/primal_gpu_bench" --quick
op_rc=$stage_rc
grep -v '^$' "$out/op_bench.log" >"$out/op_table.txt"
note "op bench" "$(bench_ok $stage_rc && echo ok || echo "FAILED ($stage_rc)")" $stage_s ""
write_summary

run_stage step_bench_small 45 "$build/model/cuda/primal_step_bench" --lengths 4096,1024 --budget-s 38
step_small_rc=$stage_rc
step_rows step_bench_small
note "step bench 4K, 1K" "$(bench_ok $stage_rc && echo ok || echo "FAILED ($stage_rc)")" $stage_s ""
note total "" $((SECONDS - start)) ""
write_summary

banner "summary ($summary)"
cat "$summary"
[ $tests_rc -eq 0 ] && [ $tp_rc -eq 0 ] && bench_ok $step_large_rc && bench_ok $op_rc && bench_ok $step_small_rc
