#!/usr/bin/env python3
"""The paper's LRA comparison on our own data (docs/experiments.md).

  bench/lra.py --primal BIN --workdir DIR [--preset small|full] [--tasks listops,image,...]
               [--models transformer,primalformer,primal_trans] [--out PREFIX] [--spectrum TASK]

Trains and evaluates every cell (task x model), each `primal train` and `primal eval` in its
own process, from configs/lra/<task>.pbtxt with model.layers set per model; then writes
PREFIX.md and PREFIX.csv: test accuracy, the majority-class rate of the test samples, seconds
per 1K training steps, peak resident memory of the training process, and both ratios against
the Transformer (speed-up = its time / ours, memory = its peak / ours) — the shape of the
paper's Tables 2 and 3. With --spectrum TASK it also trains PrimalFormer with eta = 0 on that
task and writes PREFIX_spectrum.svg and .csv: the singular values of the attention outputs of
PrimalFormer, the Transformer and the eta = 0 control (`primal spectrum`), and counts per
layer the values above 1e-2 of the largest.

Presets: `full` runs each config as it is (the official LRA step counts; for a GPU); `small`
runs the same models for fewer steps on smaller generated test splits (PRESETS below), sized to
finish all 12 cells on a 2-core CPU in under 2 hours; `smoke` is the runner's ctest.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {  # name: (model.layers, the paper's name)
    "transformer": ("SOFTMAX,SOFTMAX", "Transformer"),
    "primalformer": ("PRIMAL,PRIMAL", "PrimalFormer"),
    "primal_trans": ("SOFTMAX,PRIMAL", "Primal.+Trans."),
}
TASKS = ("listops", "text", "image", "pathfinder")
TASK_NAMES = {"listops": "ListOps", "text": "Text (KJV)", "image": "Image (F-MNIST)",
              "pathfinder": "Pathfinder-32"}
# The paper's LRA accuracy (Table 2) for the tasks we have (Text is IMDb there).
PAPER_ACCURACY = {
    "transformer": {"listops": 37.1, "text": 65.0, "image": 38.2, "pathfinder": 74.2},
    "primalformer": {"listops": 37.3, "text": 61.2, "image": 43.0, "pathfinder": 68.3},
    "primal_trans": {"listops": 37.3, "text": 65.4, "image": 43.9, "pathfinder": 74.3},
}
# Overrides per task; the models stay as in the configs. The test split is evaluated whole
# (`primal eval --split test`); the small preset shrinks the generated ones.
PRESETS = {
    "full": {t: [] for t in TASKS},
    # The runner's own test (ctest): a few steps of tiny batches.
    "smoke": {t: ["train.steps=3", "data.batch_size=4", "data.eval_size=8",
                  "data.listops_eval_size=8"] for t in TASKS},
    "small": {
        "listops": ["train.steps=150", "data.batch_size=16", "schedule.warmup_steps=15",
                    "optimizer.lr=1e-3", "data.listops_eval_size=500"],
        "text": ["train.steps=120", "data.batch_size=16", "data.seq_len=2048",
                 "schedule.warmup_steps=12", "optimizer.lr=1e-3", "data.eval_size=1000"],
        "image": ["train.steps=300", "data.batch_size=32", "schedule.warmup_steps=30",
                  "optimizer.lr=1e-3"],
        "pathfinder": ["train.steps=250", "data.batch_size=32", "schedule.warmup_steps=25",
                       "optimizer.lr=1e-3", "data.eval_size=1000"],
    },
}


def run(cmd, log):
    """Runs cmd with its output in log; returns (exit code, wall seconds, peak RSS in KiB)."""
    start = time.time()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.time() - start, usage.ru_maxrss


def cell(args, task, model, extra=(), name=None):
    """Trains and tests one cell; returns its row."""
    name = name or "%s_%s" % (task, model)
    run_dir = os.path.join(args.workdir, name)
    os.makedirs(run_dir, exist_ok=True)
    log = os.path.join(run_dir, "log.txt")
    preset = PRESETS[args.preset][task]
    config = os.path.join(ROOT, "configs", "lra", task + ".pbtxt")
    sets = ["model.layers=" + MODELS[model][0], "logging.dir=" + run_dir, "train.eval_every=0",
            "train.eval_batches=1", "train.threads=%d" % args.threads] + preset + list(extra)
    flags = [x for s in sets for x in ("--set", s)]
    rc, wall, peak = run([args.primal, "train", "--config", config] + flags, log)
    if rc != 0:
        raise RuntimeError("%s: primal train exited %d (see %s)" % (name, rc, log))
    lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    train = [j for j in lines if "split" not in j]
    steps, seconds = train[-1]["step"], train[-1]["elapsed_s"]
    out = subprocess.run([args.primal, "eval", "--config", config, "--split", "test"] + flags,
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise RuntimeError("%s: primal eval exited %d: %s" % (name, out.returncode, out.stderr[-500:]))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    row = {"task": task, "model": model, "steps": steps, "batch": train_batch(sets),
           "test_accuracy": result["accuracy"], "majority": result["majority"],
           "test_samples": result["samples"], "s_per_1k_steps": 1000.0 * seconds / steps,
           "peak_mib": peak / 1024.0, "train_wall_s": wall, "run_dir": run_dir}
    print("%-11s %-13s acc %.4f (majority %.3f, %d test samples) | %.1f s/1K steps | peak %.0f MiB"
          % (task, model, row["test_accuracy"], row["majority"], row["test_samples"],
             row["s_per_1k_steps"], row["peak_mib"]), flush=True)
    return row


def train_batch(sets):
    return next((int(s.split("=")[1]) for s in reversed(sets) if s.startswith("data.batch_size=")), 0)


def with_ratios(rows):
    base = {r["task"]: r for r in rows if r["model"] == "transformer"}
    for r in rows:
        b = base.get(r["task"])
        r["speedup"] = b["s_per_1k_steps"] / r["s_per_1k_steps"] if b else None
        r["memory_ratio"] = b["peak_mib"] / r["peak_mib"] if b else None
    return rows


def write_table(rows, prefix, args):
    fields = ["task", "model", "steps", "batch", "test_accuracy", "majority", "test_samples",
              "s_per_1k_steps", "peak_mib", "speedup", "memory_ratio", "train_wall_s"]
    with open(prefix + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    md = ["| task | model | test acc. % | majority % | paper acc. % | s / 1K steps | peak MiB "
          "| speed-up vs Transformer | memory vs Transformer |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append("| %s | %s | %.1f | %.1f | %s | %.0f | %.0f | %s | %s |" % (
            TASK_NAMES[r["task"]], MODELS[r["model"]][1], 100 * r["test_accuracy"],
            100 * r["majority"], PAPER_ACCURACY[r["model"]].get(r["task"], "-"),
            r["s_per_1k_steps"], r["peak_mib"],
            "%.2fx" % r["speedup"] if r["speedup"] and r["model"] != "transformer" else "-",
            "%.2fx less" % r["memory_ratio"] if r["memory_ratio"] and r["model"] != "transformer"
            else "-"))
    md.append("")
    md.append("preset %s, %d thread(s); steps and batch per task: %s" % (
        args.preset, args.threads, ", ".join(sorted({"%s %d x %d" % (r["task"], r["steps"], r["batch"])
                                                     for r in rows}))))
    open(prefix + ".md", "w").write("\n".join(md) + "\n")
    print("\n".join(md))


def spectra(args, task, rows, prefix):
    """PrimalFormer, the Transformer and PrimalFormer with eta = 0 on one task."""
    runs = {r["model"]: r["run_dir"] for r in rows if r["task"] == task}
    control = cell(args, task, "primalformer", extra=["model.eta=0"], name=task + "_primalformer_eta0")
    runs["primalformer_eta0"] = control["run_dir"]
    csvs, labels = [], []
    for label in ("primalformer", "transformer", "primalformer_eta0"):
        if label not in runs:
            continue
        out = os.path.join(args.workdir, "spectrum_" + label)
        p = subprocess.run([args.primal, "spectrum", "--checkpoint", os.path.join(runs[label], "checkpoints"),
                            "--batches", "4", "--out", out], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            raise RuntimeError("spectrum of %s failed: %s" % (label, p.stdout[-500:]))
        csvs.append(out + ".csv")
        labels.append(label)
    subprocess.run([args.primal, "spectrum-plot", "--out", prefix + "_spectrum.svg",
                    "--title", "attention output spectra, %s" % TASK_NAMES[task]]
                   + [x for c in csvs for x in ("--csv", c)] + [x for l in labels for x in ("--label", l)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(prefix + "_spectrum.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("model", "layer", "kind", "index", "value"))
        for label, path in zip(labels, csvs):
            for r in list(csv.reader(open(path)))[1:]:
                w.writerow([label] + r)
    write_spectrum_counts(prefix)


THRESHOLDS = (1e-1, 1e-2, 1e-3)


def write_spectrum_counts(prefix):
    """Per model and layer, from PREFIX_spectrum.csv (values normalised by the largest): how
    many lie above each threshold, the second largest, and their sum (1 for rank one)."""
    values = {}
    for r in csv.DictReader(open(prefix + "_spectrum.csv")):
        values.setdefault((r["model"], r["layer"], r["kind"]), []).append(float(r["value"]))
    with open(prefix + "_spectrum_counts.md", "w") as f:
        f.write("| model | layer | %s | second largest | sum | values |\n|---|---|%s---|---|---|\n"
                % (" | ".join("above %g" % t for t in THRESHOLDS), "---|" * len(THRESHOLDS)))
        for (model, layer, kind), v in values.items():
            v.sort(reverse=True)
            f.write("| %s | %s %s | %s | %.3g | %.3f | %d |\n" % (
                model, layer, kind, " | ".join(str(sum(x > t * v[0] for x in v)) for t in THRESHOLDS),
                v[1] / v[0] if len(v) > 1 else 0.0, sum(v) / v[0], len(v)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--primal", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", help="PREFIX of the table (default: WORKDIR/lra)")
    ap.add_argument("--spectrum", help="also the spectrum figure on this task")
    ap.add_argument("--set", action="append", default=[], help="one more override for every cell")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    prefix = args.out or os.path.join(args.workdir, "lra")
    rows = []
    for task in args.tasks.split(","):
        if task not in TASKS:
            sys.exit("bench/lra.py: unknown task '%s' (one of %s)" % (task, ", ".join(TASKS)))
        for model in args.models.split(","):
            if model not in MODELS:
                sys.exit("bench/lra.py: unknown model '%s' (one of %s)" % (model, ", ".join(MODELS)))
            rows.append(cell(args, task, model, extra=args.set))
            write_table(with_ratios(rows), prefix, args)
    if args.spectrum:
        spectra(args, args.spectrum, rows, prefix)
        print(open(prefix + "_spectrum_counts.md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
