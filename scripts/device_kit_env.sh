# The device kit's environment (scripts/device_kit.sh copies this file into the kit as env.sh;
# scripts/gpu_check.sh sources it). Paths are taken from where the file lies, so the kit works
# wherever it is unpacked.
PRIMAL_KIT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PRIMAL_KIT
kit_lib=$PRIMAL_KIT/usr/lib/x86_64-linux-gnu
export PATH=$PRIMAL_KIT/usr/bin:$PATH
# Debian 12 packages put some libraries in /lib, others in /usr/lib.
export LD_LIBRARY_PATH=$kit_lib:$kit_lib/openblas-openmp:$kit_lib/openmpi/lib:$PRIMAL_KIT/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CMAKE_PREFIX_PATH=$PRIMAL_KIT/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
# OpenMPI and PMIx were built for /usr: these relocate their plugins, help texts and the
# compiler wrapper's flags to the kit. Open MPI's follow from its prefix; PMIx's directories are
# absolute in its build (its PMIX_INSTALL_PREFIX moves nothing), so they are set one by one.
export OPAL_PREFIX=$PRIMAL_KIT/usr
export PMIX_PKGLIBDIR=$kit_lib/pmix2/lib/pmix PMIX_PKGDATADIR=$kit_lib/pmix2/share/pmix
# The kit leaves out the libraries of Open MPI's InfiniPath and EFA transports (no such hardware
# on a one-GPU machine); Open MPI skips those plugins, and this keeps it from saying so on every
# start (it would be the only output of a rank besides primal's own).
export OMPI_MCA_mca_base_component_show_load_errors=0
# Every rank runs on this machine, but mpirun refuses to start unless its remote-launch agent
# exists, and the GPU machine has no ssh.
command -v ssh >/dev/null || export OMPI_MCA_plm_rsh_agent=${OMPI_MCA_plm_rsh_agent:-false}
unset kit_lib
