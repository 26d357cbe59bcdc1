#!/bin/bash
# primal on several nodes with OpenMPI's mpirun and a hostfile (no Slurm):
#
#   launch/slurm/mpirun_multinode.sh HOSTFILE RANKS_PER_NODE CONFIG [--set k=v ...]
#
# HOSTFILE lists one node per line ("node1 slots=8"). TP groups are consecutive ranks, so with
# --map-by ppr:RANKS_PER_NODE:node a TP group of up to RANKS_PER_NODE ranks stays on one node
# (SPEC §5). The same command resumes after a node failure: --resume auto takes the newest
# valid checkpoint (on a shared file system), under any new number of ranks.
set -eu
hostfile=$1 per_node=$2 config=$3
shift 3
nodes=$(grep -cv '^\s*\(#\|$\)' "$hostfile")
PRIMAL=${PRIMAL:-$(pwd)/build/primal}
exec mpirun --hostfile "$hostfile" -np $((nodes * per_node)) --map-by "ppr:${per_node}:node" \
  --bind-to core -x OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
  -x NCCL_SOCKET_IFNAME -x NCCL_IB_HCA -x UCX_NET_DEVICES \
  "$PRIMAL" train --config "$config" --resume auto "$@"
