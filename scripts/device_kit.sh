#!/usr/bin/env bash
# Builds the device kit: what scripts/gpu_check.sh needs and the bare GPU machine lacks
# (docs/gpu.md). That machine has the CUDA toolkit, a C++ compiler, CMake, ninja and Python, and
# no network; the kit brings the rest as Debian 12 packages, fetched here with `apt-get download`,
# unpacked with `dpkg -x` into one prefix, trimmed to what a build and a test run read, and packed
# into one archive that travels with the tree (`carry`). gpu_check.sh unpacks it and sources its
# env.sh, which points CMake, the compiler and the loader at the prefix wherever it lands.
#   scripts/device_kit.sh [ARCHIVE]      (default: device-kit.tar.gz at the repository root)
# Proved on a bare Debian 12 root by scripts/check_device_kit.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
archive=$(realpath -m "${1:-device-kit.tar.gz}")

# Every library the build links and every tool the tests run, with the runtime libraries they
# load that a machine with only a compiler lacks (readelf's NEEDED of each, checked below).
packages=(
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32  # configs
  libopenblas-openmp-dev libopenblas0-openmp libgfortran5                        # GEMMs
  liblapacke-dev                                                       # spectrum (static)
  nlohmann-json3-dev libgtest-dev libgmock-dev libcli11-dev zlib1g-dev zlib1g
  libisal-dev libisal2                                                 # CRC-32C
  # OpenMPI (comm/ and mpirun) with PMIx, hwloc, libevent and the transports it loads
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libhwloc15 libevent-core-2.1-7
  libevent-pthreads-2.1-7 libmunge2 libnuma1 libibverbs1 librdmacm1 libfabric1 libucx0
  libpsm2-2 libpsm-infinipath1 libnl-3-200 libnl-route-3-200 libltdl7 libpciaccess0
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/kit"

echo "device_kit: downloading ${#packages[@]} packages"
if ! (cd "$work/debs" && apt-get download -q "${packages[@]}" >/dev/null 2>"$work/apt.err"); then
  # A machine whose package lists were never fetched knows no candidates yet.
  apt-get update -qq
  (cd "$work/debs" && apt-get download -q "${packages[@]}" >/dev/null)
fi
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/kit"; done
for deb in "$work"/debs/*.deb; do dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb"; done \
  >"$work/kit/MANIFEST"

kit=$work/kit
lib=$kit/usr/lib/x86_64-linux-gnu
# Trimmed: documentation; static archives where the shared library is linked (gtest and gmock
# come static only; LAPACKE is linked statically on purpose, trainer/CMakeLists.txt); the
# reference BLAS and LAPACK copies (libopenblas carries LAPACK itself); Java and Fortran MPI.
rm -rf "$kit"/usr/share/{doc,man,lintian,info,bash-completion,java} "$kit/usr/src"
find "$kit" -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' ! -name 'liblapacke.a' -delete
rm -f "$lib"/openblas-openmp/lib{blas,lapack}.so.3 "$lib"/libmpi_java* "$lib"/libmpi_mpifh* \
  "$lib"/libmpi_usempi*
rm -rf "$lib/fortran"
find "$kit" -xtype l \( -name 'libmpi_*' -o -name 'lib*blas.so*' -o -name 'liblapack*.so*' \) -delete
# Links that Debian makes with update-alternatives at install time, not in the packages.
ln -s libopenblas.so.0 "$lib/openblas-openmp/libopenblas.so" 2>/dev/null || true
for tool in mpirun mpiexec mpicxx mpic++; do
  [ -e "$kit/usr/bin/$tool.openmpi" ] && ln -sf "$tool.openmpi" "$kit/usr/bin/$tool"
done
# Absolute links would point into the machine's own /usr: make them relative to the kit.
find "$kit" -type l | while read -r link; do
  target=$(readlink "$link")
  case $target in
  /*) ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$kit$target")" "$link" ;;
  esac
done

dangling=$(find "$kit" -xtype l)
[ -z "$dangling" ] || { echo "device_kit: links to nothing: $dangling"; exit 1; }

# Every NEEDED library of every ELF file in the kit is in the kit or is one that any machine
# with a C++ compiler has (glibc, libstdc++, libgcc, libgomp, zlib, libudev).
base='^(ld-linux-x86-64|libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libgomp|libz|libudev|libquadmath)\.so'
missing=$(find "$kit" -type f \( -name '*.so*' -o -path '*/bin/*' \) | while read -r elf; do
    readelf -d "$elf" 2>/dev/null | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'
  done | sort -u | grep -Ev "$base" | while read -r so; do
    [ -n "$(find "$kit" -name "$so" -print -quit)" ] || echo "$so"
  done)
if [ -n "$missing" ]; then
  # Plugins of transports and Java bindings that nothing here loads may need more; report them.
  echo "device_kit: not in the kit (loaded only by optional plugins): $(echo $missing)"
fi

# NCCL's header, for a machine whose NCCL (the Python wheel's) comes without one; its library is
# too big to bring (docs/gpu.md) and is the machine's own.
nccl_h=$(ls /usr/local/cuda/include/nccl.h /usr/include/nccl.h 2>/dev/null | head -1 || true)
if [ -n "$nccl_h" ]; then
  mkdir -p "$kit/nccl/include" && cp "$nccl_h" "$kit/nccl/include/"
  echo "nccl.h $(sed -n 's/^#define NCCL_VERSION_CODE *//p' "$nccl_h") (from $nccl_h)" >>"$kit/MANIFEST"
fi
cp scripts/device_kit_env.sh "$kit/env.sh"
raw=$(du -sb "$kit" | cut -f1)
tar -C "$kit" -cf - . | gzip -9 >"$archive"
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
size=$(stat -c %s "$archive")
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "device_kit: $archive: $(mib "$size") ($(mib "$raw") unpacked, ${#packages[@]} packages)"
echo "device_kit: tracked tree $(mib "$tree") + kit $(mib "$size") = $(mib $((tree + size))) of the 64 MiB that travel"
