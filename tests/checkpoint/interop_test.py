#!/usr/bin/python3
"""Checkpoints to and from the PyTorch world.

  interop_test.py --primal BIN --workdir DIR

1. Trains a small byte-level LM (SOFTMAX and causal PRIMAL layers), exports its checkpoint with
   `primal export`, loads the .safetensors in PyTorch, runs the independent reference model of
   tests/reference/primal_reference.py (written from SPEC) over the same text as
   `primal eval --checkpoint ... --data FILE`, and compares the cross-entropy (|diff| < 1e-4).
2. `primal import` of that file, exported again, gives back every tensor bit for bit.
3. The other way: weights changed in PyTorch and written by this script's own safetensors
   writer are imported; primal's eval of them matches PyTorch's CE, and training resumes from
   the imported step-0 checkpoint.
Exit 0 pass, 1 fail, 77 torch cannot be imported (ctest: skipped).
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))

try:
    import numpy as np
    import torch
    import primal_reference as ref
except Exception as exc:  # noqa: BLE001 - any import problem means "skip"
    print("SKIPPED: torch cannot be imported under %s: %s" % (sys.executable, exc))
    sys.exit(77)

TOL = 1e-4
WIDTH, HEADS, MLP, N, S, M = 32, 4, 64, 32, 4, 2
LAYERS = ["SOFTMAX", "PRIMAL"]


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=240)
    if p.returncode != 0:
        raise SystemExit("FAIL: %s exited %d\n%s\n%s" % (" ".join(cmd), p.returncode, p.stdout[-2000:],
                                                          p.stderr[-2000:]))
    return p.stdout


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", (name, e["dtype"])
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + b:8 + n + end], dtype="<f4").reshape(e["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    """The format PyTorch's safetensors writes: u64 header size, JSON header, raw LE data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = np.ascontiguousarray(t, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def torch_ce(params, text_path):
    """CE (nats/byte) of the reference model over consecutive non-overlapping windows of N+1
    bytes from the file's start (SPEC §7), the last partial one dropped."""
    cfg = {"head": "lm", "input": "tokens", "vocab": 256, "width": WIDTH, "heads": HEADS,
           "mlp_width": MLP, "max_len": N, "low_rank": S, "rank_multi": M, "layers": LAYERS,
           "ln_eps": 1e-5, "eta": 0.5}
    problems = ref.check_names(cfg, params)
    if problems:
        raise SystemExit("FAIL: the exported tensors are not SPEC §4's: %s" % problems[:3])
    data = open(text_path, "rb").read()
    windows = len(data) // (N + 1)
    P = {k: torch.tensor(v, dtype=torch.float32) for k, v in params.items()}
    total, count = 0.0, 0
    with torch.no_grad():
        for first in range(0, windows, 8):
            rows = [data[w * (N + 1):(w + 1) * (N + 1)] for w in range(first, min(first + 8, windows))]
            batch = {"B": len(rows), "N": N, "tokens": [b for r in rows for b in r[:N]],
                     "targets": [b for r in rows for b in r[1:]]}
            _, ce, _ = ref.forward(cfg, P, batch)
            total += ce.item() * len(rows) * N
            count += len(rows) * N
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--primal", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    w = lambda name: os.path.join(a.workdir, name)
    with open(w("corpus.txt"), "w") as f:
        for i in range(300):
            f.write("In the beginning God created the heaven and the earth. %d\n" % (i % 41))
    with open(w("eval.txt"), "w") as f:
        for i in range(40):
            f.write("And the evening and the morning were the first day. %d\n" % (i % 7))
    with open(w("lm.pbtxt"), "w") as f:
        # dropout 0: primal's evaluation and the reference then compute the same function.
        f.write('model { width: %d heads: %d mlp_width: %d max_len: %d layers: [%s] low_rank: %d '
                'rank_multi: %d eta: 0.5 dropout: 0 }\n'
                'data { path: "%s" seq_len: %d batch_size: 8 }\n'
                'optimizer { lr: 3e-3 }\nschedule { warmup_steps: 4 }\n'
                'train { steps: 30 eval_every: 0 eval_batches: 2 log_every: 10 threads: 1 }\n'
                % (WIDTH, HEADS, MLP, N, ", ".join(LAYERS), S, M, w("corpus.txt"), N))
    failures = []

    run([a.primal, "train", "--config", w("lm.pbtxt"), "--set", "logging.dir=" + w("run")])
    run([a.primal, "export", "--checkpoint", w("run/checkpoints"), "--out", w("model.safetensors")])
    exported = read_safetensors(w("model.safetensors"))
    ce_primal = json.loads(run([a.primal, "eval", "--checkpoint", w("run/checkpoints"), "--data",
                                w("eval.txt")]).strip().splitlines()[-1])["ce"]
    ce_torch = torch_ce(exported, w("eval.txt"))
    print("export: %d tensors; CE of %s: primal eval %.8f, PyTorch reference %.8f, |diff| %.2e"
          % (len(exported), "eval.txt", ce_primal, ce_torch, abs(ce_primal - ce_torch)))
    if not abs(ce_primal - ce_torch) < TOL:
        failures.append("the exported weights do not reproduce primal's CE in PyTorch")
    # The run's own model.safetensors (gathered at the end) is the same file's content.
    if read_safetensors(w("run/model.safetensors")).keys() != exported.keys() or any(
            not np.array_equal(exported[k], v) for k, v in read_safetensors(w("run/model.safetensors")).items()):
        failures.append("export differs from the run's model.safetensors")

    run([a.primal, "import", w("model.safetensors"), "--config", w("lm.pbtxt"), "--out", w("imported")])
    run([a.primal, "export", "--checkpoint", w("imported"), "--out", w("again.safetensors")])
    again = read_safetensors(w("again.safetensors"))
    same = again.keys() == exported.keys() and all(
        exported[k].tobytes() == again[k].tobytes() for k in exported)
    print("import then export: every tensor bitwise identical: %s" % same)
    if not same:
        failures.append("import + export does not give back the same parameters bitwise")

    # PyTorch -> primal: weights changed in torch, written by this script, imported, evaluated.
    g = torch.Generator().manual_seed(5)
    changed = {k: (torch.tensor(v) * 0.9 + 0.01 * torch.randn(v.shape, generator=g)).numpy()
               for k, v in exported.items()}
    write_safetensors(w("from_torch.safetensors"), changed)
    run([a.primal, "import", w("from_torch.safetensors"), "--config", w("lm.pbtxt"), "--out",
         w("from_torch")])
    ce_imported = json.loads(run([a.primal, "eval", "--checkpoint", w("from_torch"), "--data",
                                  w("eval.txt")]).strip().splitlines()[-1])["ce"]
    ce_changed = torch_ce(changed, w("eval.txt"))
    print("PyTorch-written weights imported: CE primal %.8f, PyTorch %.8f, |diff| %.2e"
          % (ce_imported, ce_changed, abs(ce_imported - ce_changed)))
    if not abs(ce_imported - ce_changed) < TOL:
        failures.append("weights written by PyTorch do not give PyTorch's CE in primal")
    out = run([a.primal, "train", "--config", w("lm.pbtxt"), "--set", "logging.dir=" + w("finetune"),
               "--set", "train.steps=5", "--set", "schedule.warmup_steps=1", "--set",
               "checkpoint.dir=" + w("finetune_ck"), "--resume", w("from_torch")])
    if "resumed from" not in out:
        failures.append("training did not resume from the imported checkpoint")

    for f in failures:
        print("FAIL: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
