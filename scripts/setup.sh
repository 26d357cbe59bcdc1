#!/usr/bin/env bash
# Installs every Debian package that primal's build, tests and benchmarks need.
# Idempotent: packages already present are skipped by apt; safe to run again.
# Run as root on Debian 12 (or with sudo available).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config clang-format
  libopenblas-openmp-dev     # cblas for every GEMM; OpenMP build: single-threaded inside our parallel regions
  libdnnl-dev libxsmm-dev libblis-dev  # bench/gemm_bench only: the other GEMM libraries, side by side
  liblapacke-dev             # LAPACKE (dgesdd) for the attention spectrum (primal spectrum)
  nlohmann-json3-dev         # JSON for metrics and reference dumps
  libgtest-dev libgmock-dev  # GoogleTest
  libbenchmark-dev           # Google Benchmark (bench/)
  python3-torch python3-numpy  # the independent PyTorch reference (run with /usr/bin/python3)
  libprotobuf-dev protobuf-compiler  # configs (configs/*.proto, text format)
  libcli11-dev               # the primal CLI
  zlib1g-dev                 # gzip'd IDX files (Fashion-MNIST)
  libisal-dev                # CRC-32C of checkpoints and TensorBoard records (Intel ISA-L)
  bible-kjv bible-kjv-text   # the default text corpus (SPEC §7), exported by data/prepare_kjv.sh
  dataset-fashion-mnist      # /usr/share/datasets/fashion-mnist
  slurm-wlm munge            # the slurm test starts its own daemons on localhost
  libopenmpi-dev openmpi-bin  # MPI backend of comm/ (mpirun for the mpi tests)
  e2fsprogs                  # mkfs.ext4 for the disk-fault tests (tests/fault)
  iproute2 clang             # the cluster tests: hosts (ip netns, tc), packet loss (a BPF program)
  clang libclang-rt-14-dev libomp-14-dev  # libFuzzer, ASan, UBSan, OpenMP for scripts/fuzz.sh
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
else
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The default text corpus (SPEC §7): data/kjv.txt, exported once.
sh "$(dirname "$0")/../data/prepare_kjv.sh" "$(dirname "$0")/../data/kjv.txt"
