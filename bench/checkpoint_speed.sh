#!/usr/bin/env bash
# Export and import of the 150M-parameter LM's checkpoint (12 layers, width 1024, MLP 4096,
# vocab 256: a 1.8 GB shard, a 600 MB .safetensors), each timed RUNS times as a whole command,
# with the disk's own fsync'd write rate beside them (docs/checkpoints.md).
#   bench/checkpoint_speed.sh [BUILD_DIR] [RUNS] [WORK_DIR]
set -euo pipefail
build=$(realpath "${1:-build}")
runs=${2:-3}
work=${3:-$(mktemp -d)}
corpus=$(realpath "$(dirname "$0")/../data/kjv.txt")
mkdir -p "$work"
cd "$work"
cat >big.pbtxt <<CONFIG
model { width: 1024 heads: 16 mlp_width: 4096 max_len: 64 layers: [PRIMAL, SOFTMAX, SOFTMAX,
  SOFTMAX, SOFTMAX, SOFTMAX, SOFTMAX, SOFTMAX, SOFTMAX, SOFTMAX, SOFTMAX, PRIMAL] low_rank: 16
  rank_multi: 2 eta: 0.1 }
data { path: "$corpus" seq_len: 16 batch_size: 2 }
optimizer { lr: 1e-4 }
train { steps: 1 eval_every: 0 eval_batches: 1 log_every: 1 threads: 2 }
logging { dir: "$work/run" }
CONFIG
rm -rf run imported
"$build/primal" train --config big.pbtxt >/dev/null
echo "checkpoint: $(du -sh run/checkpoints/step_00000001 | cut -f1)"
echo "disk: $(dd if=/dev/zero of=dd.bin bs=16M count=36 conv=fsync 2>&1 | tail -1)"
rm -f dd.bin
for i in $(seq "$runs"); do
  /usr/bin/time -f "export: %e s, peak %M KB" "$build/primal" export --checkpoint run/checkpoints \
    --out model.safetensors >/dev/null
done
for i in $(seq "$runs"); do
  rm -rf imported
  /usr/bin/time -f "import: %e s, peak %M KB" "$build/primal" import model.safetensors \
    --config big.pbtxt --out imported >/dev/null
done
"$build/primal" export --checkpoint imported --out again.safetensors >/dev/null
cmp model.safetensors again.safetensors && echo "import then export: the same bytes"
