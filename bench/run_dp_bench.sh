#!/usr/bin/env bash
# Step throughput of data parallelism on this machine: the same training run (configs/lm_kjv,
# one thread per rank) as one process (DP=1) and as two MPI processes (DP=2), side by side,
# and the all-reduce bandwidth of the bucketed path against plain MPI_Allreduce.
#   bench/run_dp_bench.sh [BUILD_DIR] [STEPS]
set -euo pipefail
build=${1:-build}
steps=${2:-40}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader
out=$(mktemp -d)
common=(--config configs/lm_kjv.pbtxt --set train.steps="$steps" --set train.eval_every=0
        --set train.eval_batches=1 --set train.log_every=10 --set train.threads=1
        --set schedule.warmup_steps=5 --set data.batch_size=16)
rate() {  # mean tokens/s over the logged steps after the first window (warm-up)
  python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if 'tokens_per_s' in l][1:]; print('%.0f' % (sum(x['tokens_per_s'] for x in r)/len(r)))" "$1"
}
"$build/primal" train "${common[@]}" --set logging.dir="$out/dp1" > /dev/null
mpirun -np 2 --oversubscribe "$build/primal" train "${common[@]}" --set logging.dir="$out/dp2" > /dev/null
dp1=$(rate "$out/dp1/metrics.jsonl")
dp2=$(rate "$out/dp2/metrics.jsonl")
echo "lm_kjv, global batch 16 x 256, 1 thread per rank: DP=1 ${dp1} tokens/s, DP=2 ${dp2} tokens/s," \
     "speed-up $(python3 -c "print('%.2f' % ($dp2/$dp1))")x"
echo
mpirun -np 2 --oversubscribe "$build/comm/primal_comm_bench"
rm -rf "$out"
