#!/usr/bin/env python3
"""primal under a real Slurm on localhost, against the same runs under mpirun.

  slurm_test.py --primal BIN --mpirun MPIRUN --workdir DIR

1. Preemption: a 2-task job submitted with launch/slurm/primal.sbatch gets USR1 mid-run; it
   checkpoints, exits 75, requeues itself and resumes; its final parameters equal an
   uninterrupted mpirun run's bitwise.
2. srun vs mpirun: `srun -n 4 primal train ... parallel.tp=2` inside Slurm and
   `mpirun -np 4 ... parallel.tp=2` give identical metrics and parameters.
The daemons (munged, slurmctld, slurmd) are started here with their own configuration in
DIR and stopped by PID at the end, also when the test fails. Exit 0 on success.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from slurm_cluster import SlurmCluster  # noqa: E402


def write_config(workdir, steps):
    corpus = os.path.join(workdir, "corpus.txt")
    with open(corpus, "w") as f:
        for i in range(600):
            f.write("In the beginning was the Word, and the Word was with God. %d\n" % (i % 61))
    path = os.path.join(workdir, "tiny.pbtxt")
    with open(path, "w") as f:
        f.write('model { width: 32 heads: 2 mlp_width: 64 max_len: 32 layers: [SOFTMAX, PRIMAL] '
                'low_rank: 4 rank_multi: 2 eta: 0.5 dropout: 0.1 }\n'
                'data { path: "%s" seq_len: 32 batch_size: 8 }\n'
                'optimizer { lr: 2e-3 }\nschedule { warmup_steps: 10 }\n'
                'train { steps: %d eval_every: 0 eval_batches: 2 log_every: 10 threads: 1 }\n'
                'parallel { watchdog_s: 60 }\n' % (corpus, steps))
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


def losses(run_dir):
    out = []
    for line in open(os.path.join(run_dir, "metrics.jsonl")):
        j = json.loads(line)
        if "split" not in j:
            out.append((j["step"], j["loss"]))
    return out


def mpirun(args, config, run_dir, np_, extra=()):
    cmd = [args.mpirun, "-np", str(np_), "--oversubscribe", args.primal, "train", "--config",
           config, "--set", "logging.dir=" + run_dir] + list(extra)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise SystemExit("FAIL: %s\n%s" % (" ".join(cmd), p.stdout[-3000:]))


def wait_for_step(run_dir, step, timeout=180):
    path = os.path.join(run_dir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            steps = [s for s, _ in losses(run_dir)] if os.path.getsize(path) else []
            if steps and steps[-1] >= step:
                return steps[-1]
        time.sleep(0.2)
    raise SystemExit("FAIL: the job did not reach step %d" % step)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--primal", required=True)
    parser.add_argument("--mpirun", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    args.primal = os.path.abspath(args.primal)  # the job runs in its own directory
    work = os.path.abspath(args.workdir)
    subprocess.run(["rm", "-rf", work])
    os.makedirs(work)
    failures = []
    steps = 600
    config = write_config(work, steps)

    reference = os.path.join(work, "reference")
    mpirun(args, config, reference, 2)
    layout = os.path.join(work, "mpirun_tp2")
    mpirun(args, config, layout, 4, ["--set", "parallel.tp=2", "--set", "model.heads=2"])

    with SlurmCluster(os.path.join(work, "slurm")) as slurm:
        # 1. Preemption, requeue, resume.
        run_dir = os.path.join(work, "preempted")
        out = os.path.join(work, "preempted.out")
        env = {"PRIMAL": args.primal}
        job = slurm.sbatch(os.path.join(ROOT, "launch", "slurm", "primal.sbatch"),
                           ["-n", "2", "-O", "--output=" + out, "--chdir=" + work],
                           [config, "--set", "logging.dir=" + run_dir], env=env)
        at = wait_for_step(run_dir, 100)
        slurm.signal(job, "USR1", batch=True)
        print("slurm: job %s got USR1 at step %d" % (job, at))
        slurm.wait_state(job, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=400)
        state, restarts = slurm.state(job)
        text = open(out).read() if os.path.exists(out) else ""
        print("slurm: job %s %s after %d restart(s)" % (job, state, restarts))
        if state != "COMPLETED" or restarts < 1 or "requeueing" not in text:
            failures.append("the preempted job did not requeue and complete:\n" + text[-3000:]
                            + slurm.logs())
        elif read(os.path.join(run_dir, "model.safetensors")) != read(
                os.path.join(reference, "model.safetensors")):
            failures.append("the preempted and resumed run's parameters differ from mpirun's")
        else:
            print("slurm: preempted + requeued + resumed parameters equal the uninterrupted "
                  "run's bitwise")

        # 2. srun -n 4 vs mpirun -np 4 under TP=2.
        srun_dir = os.path.join(work, "srun_tp2")
        wrap = ("srun --mpi=pmix -n 4 %s train --config %s --set logging.dir=%s "
                "--set parallel.tp=2 --set model.heads=2" % (args.primal, config, srun_dir))
        out2 = subprocess.run(["sbatch", "--parsable", "-n", "4", "-O",
                               "--output=" + os.path.join(work, "srun.out"), "--wrap", wrap],
                              env=slurm.env, stdout=subprocess.PIPE, text=True, check=True)
        job2 = out2.stdout.strip().split(";")[0]
        slurm.wait_state(job2, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=300)
        state2, _ = slurm.state(job2)
        srun_text = open(os.path.join(work, "srun.out")).read()
        if state2 != "COMPLETED":
            failures.append("srun job %s: %s\n%s" % (job2, state2, srun_text[-3000:]))
        elif losses(srun_dir) != losses(layout) or read(os.path.join(srun_dir, "model.safetensors")) != read(
                os.path.join(layout, "model.safetensors")):
            failures.append("srun -n 4 and mpirun -np 4 differ")
        else:
            print("slurm: srun -n 4 and mpirun -np 4 (tp 2) give identical losses and parameters")
        if "launcher: Slurm srun" not in srun_text:
            failures.append("the srun run did not report its launcher:\n" + srun_text[:1000])
    for f in failures:
        print("FAIL: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
