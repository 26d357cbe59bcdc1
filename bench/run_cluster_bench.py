#!/usr/bin/env python3
"""All-reduce bandwidth and data-parallel step rate across two hosts of scripts/cluster.py
(network namespaces on this machine, one rank and one CPU per host, TCP between them).
Needs root.

  bench/run_cluster_bench.py [--build build] [--cluster-links veth|relay]
                             [--links none,1gbit,10gbit/100us,...]
                             [--sizes-mb 1,4,16,64] [--rounds 5] [--dp-link 10gbit,none]
                             [--dp-runs 3] [--dp-steps 30] [--dp-bucket-mb 25,2]

--cluster-links: veth pairs shaped by tc (tbf for a rate, netem for a delay where the kernel
has it), or the user-space link emulator (scripts/cluster_link.cc), which also delays. For
every link (RATE, RATE/ONE-WAY-DELAY or none/ONE-WAY-DELAY, set on both hosts' outgoing
traffic; "none" leaves it unshaped), primal_comm_bench prints ours against raw MPI_Allreduce
side by side. Then lm_kjv (global batch 16 x 256, one thread per rank) as DP=1 (one process
on node0) and as DP=2 (one rank on each host) on each --dp-link with each --dp-bucket-mb,
alternating, --dp-runs times each; tokens/s are the mean over the logged steps after the first
window.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from cluster import Cluster  # noqa: E402

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def shape(cluster, link):
    rate, _, delay = link.partition("/")
    cluster.shape_all(rate=None if rate == "none" else rate, delay=delay or None)


def rate_of(metrics):
    rows = [json.loads(l) for l in open(metrics) if "tokens_per_s" in l][1:]
    return sum(r["tokens_per_s"] for r in rows) / len(rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--cluster-links", choices=["veth", "relay"], default="veth")
    p.add_argument("--links", default="none,1gbit,10gbit,25gbit")
    p.add_argument("--sizes-mb", default="1,4,16,64")
    p.add_argument("--rounds", default="5")
    p.add_argument("--dp-link", default="10gbit")
    p.add_argument("--dp-runs", type=int, default=3)
    p.add_argument("--dp-steps", type=int, default=30)
    p.add_argument("--dp-bucket-mb", default="25", help="DP=2 runs with each of these bucket "
                   "sizes (parallel.bucket_mb), side by side")
    p.add_argument("--skip-allreduce", action="store_true")
    args = p.parse_args()
    build = os.path.abspath(args.build)
    work = tempfile.mkdtemp(prefix="primal-cluster-bench-")
    with Cluster(2, os.path.join(work, "cluster"), links=args.cluster_links) as c:
        env = c.env(**MPI_ENV)
        hostfile = c.hostfile(1)
        if not args.skip_allreduce:
            for link in args.links.split(","):
                shape(c, link)
                cmd = c.mpirun_command(hostfile, ["-np", "2", build + "/comm/primal_comm_bench",
                                                  "--sizes-mb", args.sizes_mb, "--rounds",
                                                  args.rounds])
                out = c.run(0, cmd, env=env, timeout=900).stdout
                print("link %s (rate/one-way delay, both directions):" % link)
                print("\n".join(l for l in out.splitlines() if l.strip()), flush=True)
        common = ["train", "--config", os.path.join(ROOT, "configs", "lm_kjv.pbtxt"),
                  "--set", "train.steps=%d" % args.dp_steps, "--set", "train.eval_every=0",
                  "--set", "train.eval_batches=1", "--set", "train.log_every=5",
                  "--set", "train.threads=1", "--set", "schedule.warmup_steps=5",
                  "--set", "data.batch_size=16"]
        cells = [(link, float(b)) for link in args.dp_link.split(",")
                 for b in args.dp_bucket_mb.split(",")]
        rates = {"dp1": []}
        rates.update({cell: [] for cell in cells})
        for run in range(args.dp_runs):
            for key in ["dp1"] + cells:
                d = os.path.join(work, "%d_dp1" % run if key == "dp1" else "%d_%s_%g" % (
                    run, key[0].replace("/", "_"), key[1]))
                cmd = [build + "/primal"] + common + ["--set", "logging.dir=" + d]
                if key != "dp1":
                    shape(c, key[0])
                    cmd = c.mpirun_command(hostfile, ["-np", "2"] + cmd + [
                        "--set", "parallel.bucket_mb=%g" % key[1]])
                r = c.run(0, cmd, env=env, timeout=900)
                if r.returncode != 0:
                    raise SystemExit("FAIL: %s\n%s" % (" ".join(cmd), r.stdout[-2000:]))
                rates[key].append(rate_of(os.path.join(d, "metrics.jsonl")))
            print("run %d: DP=1 %.0f tokens/s; DP=2 across hosts: %s"
                  % (run + 1, rates["dp1"][-1], "; ".join(
                      "%s, buckets of %g MiB %.0f tokens/s %.2fx"
                      % (link, b, rates[(link, b)][-1], rates[(link, b)][-1] / rates["dp1"][-1])
                      for link, b in cells)), flush=True)
        if args.dp_runs > 0:
            m1 = statistics.median(rates["dp1"])
            for link, b in cells:
                m2 = statistics.median(rates[(link, b)])
                print("median of %d runs, %s, buckets of %g MiB: DP=1 %.0f, DP=2 %.0f tokens/s, "
                      "speed-up %.2fx (per-run ratios: %s)"
                      % (args.dp_runs, link, b, m1, m2, m2 / m1, ", ".join(
                          "%.2f" % (y / x) for x, y in zip(rates["dp1"], rates[(link, b)]))))
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
