#!/bin/sh
# Runs a command on one host of scripts/cluster.py's cluster, as ssh would run it on a node:
#   cluster_agent.sh HOST COMMAND...      (HOST: a name or address from the cluster's map)
# mpirun starts its remote daemons through it (--mca plm_rsh_agent). The command runs in the
# host's network namespace, with the host's name in a UTS namespace of its own and only the
# host's CPUs (what hwloc, and so mpirun's binding, then sees), the words of COMMAND joined by
# spaces and read by sh (ssh's convention, which mpirun's quoting expects).
map=${PRIMAL_CLUSTER_MAP:-/tmp/primal-cluster/hosts.map}
host=$1
shift
set -- "$(awk -v h="$host" '$1 == h || $2 == h { print $1, $3, $4 }' "$map" 2>/dev/null)" "$*"
if [ -z "$1" ]; then
  echo "cluster_agent.sh: no host '$host' in $map" >&2
  exit 255
fi
# shellcheck disable=SC2086 # name, namespace, CPUs: three words
set -- $1 "$2"
# The host's network; a mount namespace of its own (the machine's /sys stays, cgroups included,
# which `ip netns exec` would replace) with the host's /etc/hosts; its name; its CPUs.
exec nsenter --net="/run/netns/$2" unshare --mount --uts taskset -c "$3" sh -c \
  'mount --bind "/etc/netns/$1/hosts" /etc/hosts && hostname "$0" && exec sh -c "$2"' "$1" "$2" "$4"
