#!/usr/bin/env bash
# Proves the device kit here, before a GPU window is spent on it: an imitation of the bare GPU
# machine (a minimal Debian 12 root made with debootstrap: a C++ compiler, CMake, ninja and
# Python, none of the project's -dev packages), the CUDA toolkit bind-mounted read-only, and the
# tree copied in as the device tool sends it (tracked and untracked-not-ignored files, plus the kit
# archive that docs/gpu.md's `carry:` line names). Inside the root, from the kit alone:
#   1. scripts/gpu_check.sh with GPU_CHECK_NO_GPU=1: found, configure (sm_90), build of its
#      targets, the gpu tests (they report Skipped), the benchmarks (exit 77: no GPU);
#   2. the whole build and the CPU unit tests (ctest -L unit).
# Needs root. The log is $LOG (default build-kit-check/check_device_kit.log).
#   scripts/check_device_kit.sh
# Environment: BARE_ROOT (default /var/tmp/primal-bare/root; made with debootstrap when missing),
# GPU_CHECK_TIME_SCALE (default 8: 2 cores here against the GPU machine's 16).
set -euo pipefail
cd "$(dirname "$0")/.."
root=${BARE_ROOT:-/var/tmp/primal-bare/root}
log=$(realpath -m "${LOG:-build-kit-check/check_device_kit.log}")
mkdir -p "$(dirname "$log")"
exec > >(tee "$log") 2>&1
[ "$(id -u)" -eq 0 ] || { echo "check_device_kit: needs root (debootstrap, chroot, mounts)"; exit 2; }
start=$SECONDS

# What the GPU machine has: a compiler, CMake, ninja, Python with venv (tests/tensorboard makes
# one). A root made with less, or by an older version of this script, is made again.
if ! chroot "$root" python3 -c 'import ensurepip, venv' 2>/dev/null ||
  [ ! -x "$root/usr/bin/g++" ] || [ ! -x "$root/usr/bin/ninja" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap
  echo "check_device_kit: making the bare root $root"
  # Never remove a root with something mounted inside (a bind of /dev would go with it).
  if findmnt -rn -o TARGET | grep -q "^$(realpath -m "$root")/"; then
    echo "check_device_kit: $root has file systems mounted inside; unmount them first"
    exit 1
  fi
  rm -rf "$root"
  debootstrap --variant=minbase --include=g++,cmake,ninja-build,python3,python3-venv bookworm "$root" \
    http://deb.debian.org/debian >/dev/null
fi
# The root must be bare: none of the libraries the kit brings.
present=()
for p in libprotobuf-dev protobuf-compiler libopenblas-openmp-dev libopenblas0-openmp \
  liblapacke-dev nlohmann-json3-dev libgtest-dev libcli11-dev zlib1g-dev libopenmpi-dev \
  libopenmpi3 openmpi-bin libgfortran5; do
  chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok' && present+=("$p")
done
[ ${#present[@]} -eq 0 ] || { echo "check_device_kit: $root is not bare: ${present[*]}"; exit 1; }
echo "bare root: $root ($(chroot "$root" dpkg-query -W | wc -l) packages; $(chroot "$root" g++ --version | head -1);" \
  "$(chroot "$root" cmake --version | head -1); python $(chroot "$root" python3 -c 'import sys; print(sys.version.split()[0])'))"

[ -f device-kit.tar.gz ] && [ device-kit.tar.gz -nt scripts/device_kit.sh ] &&
  [ device-kit.tar.gz -nt scripts/device_kit_env.sh ] || ./scripts/device_kit.sh

# The tree as it travels.
tree=$root/work/primal
rm -rf "$tree" && mkdir -p "$tree"
git ls-files -coz --exclude-standard | tar --null -T - -cf - | tar -C "$tree" -xf -
cp device-kit.tar.gz "$tree/"
echo "tree: $(du -sh --exclude=device-kit.tar.gz "$tree" | cut -f1) + kit $(du -h device-kit.tar.gz | cut -f1)"

cuda=$(realpath /usr/local/cuda)
mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}"; done
}
trap cleanup EXIT
mount_at() {  # mount_at TARGET MOUNT-ARGS...
  mkdir -p "$1"
  mount "${@:2}" "$1"
  mounts+=("$1")
}
mount_at "$root$cuda" --bind "$cuda"
mount -o remount,bind,ro "$root$cuda"
ln -sfn "$cuda" "$root/usr/local/cuda"
mount_at "$root/proc" -t proc proc
mount_at "$root/sys" -t sysfs sysfs
mount_at "$root/dev" --bind /dev
mount_at "$root/dev/shm" -t tmpfs shm
mount_at "$root/tmp" -t tmpfs tmp

in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -c "set -o pipefail; cd /work/primal && $1"
}
echo
echo "== 1. scripts/gpu_check.sh in the bare root (no GPU)"
in_root "GPU_CHECK_NO_GPU=1 GPU_CHECK_TIME_SCALE=${GPU_CHECK_TIME_SCALE:-8} scripts/gpu_check.sh"
echo
echo "== 2. the whole build and the CPU unit tests, from the kit alone"
in_root "source build-gpu/kit/env.sh && cmake --build build-gpu -j$(nproc) >build-gpu/build_all.log 2>&1 ||
  { tail -40 build-gpu/build_all.log; exit 1; }; echo \"build: \$(grep -c warning build-gpu/build_all.log) warning lines\";
  ctest --test-dir build-gpu -L unit -j$(nproc) --timeout 600 --output-on-failure >build-gpu/unit.log 2>&1;
  rc=\$?; grep -E '\((Failed|Timeout|Not Run)\)' build-gpu/unit.log;
  grep -E 'tests passed|tests failed' build-gpu/unit.log;
  sed -n '/did not run/,\$p' build-gpu/unit.log;
  exit \$rc"
echo
echo "check_device_kit: passed in $((SECONDS - start)) s"
