#!/usr/bin/env python3
"""primal across hosts: a cluster of network namespaces on this machine
(scripts/cluster.py), mpirun reaching the other hosts through scripts/cluster_agent.sh, TCP
between hosts.

  cluster_test.py --primal BIN --mpirun MPIRUN --workdir DIR CHECK

CHECK is one of:
  layout  2 hosts x 2 ranks under (TP 2 inside each host, DP 2 across) and (TP 1, DP 4) give
          the per-step losses and final parameters of one process (within 1e-5, the tolerance
          of tests/mpi/train_parallel_test.py); a TP group that spans hosts (one rank per
          host, TP 2) is refused with one message naming the group, its ranks and hosts,
          exit 2, within seconds
  faults  node1's link cut mid-run, and every process of node1 killed mid-run (its ranks
          alone, then its ranks and its mpirun daemon): each job ends within the watchdog
          timeout plus a margin, and no process is left on any host (the times are
          printed); the message names the rank and its host (the watchdog's for the cut,
          mpirun's for killed ranks), or the host whose daemon mpirun lost
  slurm   a Slurm with one slurmd per host: `sbatch -N 2` of launch/slurm/primal.sbatch (one
          rank per host, srun + PMIx) gets USR1 mid-run, checkpoints, requeues itself and
          resumes; its per-step losses and final parameters equal an uninterrupted mpirun
          run's across the same hosts, bitwise
  slow_link  2 hosts x 1 rank (tp 1, dp 2) over links shaped to 1 Gbit/s with 1%, then 5%
          packet loss each way (scripts/cluster_loss.bpf.c): per-step losses and final
          parameters bitwise equal to the unshaped link's, both wall times printed; the
          classifiers' counters show about that share of packets dropped and TCP
          retransmitting; a delay is refused with the reason (no sch_netem here)
  delayed_link  2 hosts on relay links (scripts/cluster_link.cc, the user-space link
          emulator): a 250 us delay each way raises the TCP round trip by about 500 us; a
          1 Gbit/s rate holds a stream to about 125 MB/s; 2 hosts x 1 rank (tp 1, dp 2) over
          10 Gbit/s and 100 us each way give per-step losses and final parameters bitwise
          equal to the unshaped link's, both wall times printed
  four_hosts  4 hosts x 1 rank, tp 1 x dp 4: one process's per-step losses and parameters
          (within 1e-5); TP 4 over the same placement is refused naming all four hosts
  node_failure_requeue  `sbatch -N 2` of primal.sbatch with a checkpoint every 100 steps;
          everything on node1 killed mid-run, its slurmd too (a power loss): rank 0's watchdog
          ends the step naming rank 1 on node1, the script requeues the job as Slurm finds
          node1 not responding, node1's slurmd is started again once Slurm has it DOWN (the
          operator, after a reboot; ReturnToService=2 brings it back), the job resumes from
          the newest checkpoint and its per-step losses and final parameters equal an
          uninterrupted mpirun run's bitwise; the times of each stage are printed
Exit 0 on success, 1 on failure, 77 (skipped) without root.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tests", "mpi"))
sys.path.insert(0, os.path.join(ROOT, "tests", "slurm"))
from cluster import Cluster, ClusterError, alive, cpu_sets, namespaces  # noqa: E402
from slurm_cluster import SlurmCluster  # noqa: E402
from slurm_test import read, wait_for_step, write_config  # noqa: E402
from train_parallel_test import TOL, lm_config, read_safetensors, rel  # noqa: E402

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
WATCHDOG_S = 5
# After the watchdog fires: MPI_Abort, mpirun killing the ranks, daemons noticing a lost
# peer (scripts/cluster.py tunes that to ~5 s).
END_MARGIN_S = 10
# The slow link: every host's outgoing traffic at 1 Gbit/s, each of these loss rates in turn.
SLOW_LINK_STEPS = 60
SLOW_LINK_LOSSES = ["1%", "5%"]
# The node failure: a job of this many steps, a checkpoint every so many, node1 killed once
# the job is past this step. slurmctld pings each node every SlurmdTimeout/3 (default 300 s)
# and gives each ping MessageTimeout (10 s): a dead node is known as such after about
# SlurmdTimeout/3 + MessageTimeout, DOWN after SlurmdTimeout more; a job's processes get
# KillWait (30 s) between SIGTERM and SIGKILL, srun as long to wait for a lost step.
NODE_FAILURE_STEPS = 600
NODE_FAILURE_CHECKPOINT_EVERY = 100
NODE_FAILURE_KILL_AT = 250
NODE_FAILURE_SLURM_CONF = {"SlurmdTimeout": 5, "MessageTimeout": 4, "KillWait": 5}


def losses(run_dir):
    return [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))
            if '"loss"' in l and '"split"' not in l]


def train_command(args, config, run_dir, extra=()):
    return [args.primal, "train", "--config", config, "--set", "logging.dir=" + run_dir] + list(extra)


def mpirun(args, cluster, slots, np_, cmd, timeout=180):
    full = cluster.mpirun_command(cluster.hostfile(slots), ["-np", str(np_)] + cmd, args.mpirun)
    return cluster.run(0, full, timeout=timeout, env=cluster.env(**MPI_ENV))


def compare(name, run_dir, base_dir):
    steps, base = losses(run_dir), losses(base_dir)
    params, base_params = (read_safetensors(os.path.join(d, "model.safetensors"))
                           for d in (run_dir, base_dir))
    loss_err = max(rel(a["loss"], b["loss"]) for a, b in zip(steps, base))
    param_err = max(max(abs(x - y) for x, y in zip(params[k], base_params[k])) /
                    max(max(abs(x) for x in base_params[k]), 1e-12) for k in base_params)
    ok = len(steps) == len(base) and loss_err < TOL and param_err < TOL
    print("  %s: %d steps, max rel loss diff %.2e, max rel param diff %.2e  %s"
          % (name, len(steps), loss_err, param_err, "ok" if ok else "FAIL"))
    return [] if ok else [name]


def bitwise(name, run_dir, reference):
    """Whether run_dir's per-step losses and final parameters equal reference's to the bit
    (printed). A resumed run appends to metrics.jsonl: its steps after the checkpoint come
    twice (those the stopped run logged past it are logged again); the last entry counts."""
    steps, reference_steps = ({m["step"]: m["loss"] for m in losses(d)}
                              for d in (run_dir, reference))
    same_params = read(os.path.join(run_dir, "model.safetensors")) == read(
        os.path.join(reference, "model.safetensors"))
    print("  %s: losses %s, parameters %s" % (
        name, "bitwise equal" if steps == reference_steps else "DIFFER",
        "bitwise equal" if same_params else "DIFFER"))
    return steps == reference_steps and same_params


def one_process(args, config):
    """The run of config on one process (the reference of every layout): its directory, or
    raises SystemExit with its output."""
    base = os.path.join(args.workdir, "one_process")
    p = subprocess.run(train_command(args, config, base), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise SystemExit("FAIL: one process: " + p.stdout[-2000:])
    return base


def refused_across_hosts(args, cluster, config, hosts):
    """One rank on each of `hosts` hosts under TP = hosts: the one TP group spans them all;
    primal refuses it with one line naming each rank's host, exit 2 on every rank."""
    t0 = time.time()
    p = mpirun(args, cluster, 1, hosts, train_command(
        args, config, os.path.join(args.workdir, "refused"),
        ["--set", "parallel.tp=%d" % hosts]), timeout=60)
    took = time.time() - t0
    errors = [l for l in p.stdout.splitlines() if l.startswith("primal: error")]
    expected = ("primal: error: --set parallel.tp: TP group 0 (ranks 0-%d) spans hosts %s; " % (
        hosts - 1, ", ".join("node%d (rank %d)" % (r, r) for r in range(hosts))))
    print("  TP group across %d hosts: exit %d after %.1f s: %s" % (
        hosts, p.returncode, took, errors[0] if errors else "-"))
    failures = []
    if p.returncode == 0 or len(errors) != 1 or not errors[0].startswith(expected):
        failures.append("a TP group across hosts was not refused with one message:\n" +
                        p.stdout[-2000:])
    if "Exit code:    2" not in p.stdout:
        failures.append("the refused layout did not exit with code 2:\n" + p.stdout[-2000:])
    return failures


def check_layout(args, cluster):
    failures = []
    config = lm_config(args.workdir)
    base = one_process(args, config)
    for tp, dp in [(2, 2), (1, 4)]:
        run_dir = os.path.join(args.workdir, "hosts2x2_tp%d_dp%d" % (tp, dp))
        p = mpirun(args, cluster, 2, 4, train_command(args, config, run_dir,
                                                      ["--set", "parallel.tp=%d" % tp]))
        if p.returncode != 0:
            failures.append("tp=%d dp=%d exited %d:\n%s" % (tp, dp, p.returncode, p.stdout[-3000:]))
            continue
        if "on node node0" not in p.stdout:
            failures.append("tp=%d dp=%d: the layout line does not name node0" % (tp, dp))
        failures += compare("2 hosts x 2 ranks, tp=%d dp=%d" % (tp, dp), run_dir, base)
    # One rank per host, TP 2: the TP group spans node0 and node1.
    return failures + refused_across_hosts(args, cluster, config, 2)


def check_four_hosts(args, cluster):
    config = lm_config(args.workdir)
    base = one_process(args, config)
    run_dir = os.path.join(args.workdir, "hosts4x1_tp1_dp4")
    t0 = time.time()
    p = mpirun(args, cluster, 1, 4, train_command(args, config, run_dir))
    print("  4 hosts x 1 rank, tp=1 dp=4: exit %d after %.1f s" % (p.returncode, time.time() - t0))
    if p.returncode != 0:
        return ["4 hosts x 1 rank exited %d:\n%s" % (p.returncode, p.stdout[-3000:])]
    # That each rank ran on its own host: TP 4 over the same placement names all four.
    return compare("4 hosts x 1 rank, tp=1 dp=4", run_dir, base) + refused_across_hosts(
        args, cluster, config, 4)


def dp2_run(args, cluster, config, name, steps):
    """2 hosts x 1 rank (tp 1, dp 2) training into workdir/name: (run_dir, wall seconds)."""
    run_dir = os.path.join(args.workdir, name)
    t0 = time.time()
    p = mpirun(args, cluster, 1, 2, train_command(args, config, run_dir, steps))
    if p.returncode != 0:
        raise SystemExit("FAIL: %s: exit %d\n%s" % (name, p.returncode, p.stdout[-3000:]))
    return run_dir, time.time() - t0


def check_slow_link(args, cluster):
    config = lm_config(args.workdir)
    steps = ["--set", "train.steps=%d" % SLOW_LINK_STEPS]

    def timed(name):
        before = [cluster.link_stats(i) for i in range(cluster.k)]
        run_dir, took = dp2_run(args, cluster, config, name, steps)
        after = [cluster.link_stats(i) for i in range(cluster.k)]
        return run_dir, took, {k: sum(a[k] - b[k] for a, b in zip(after, before)) for k in after[0]}

    base, base_s, _ = timed("unshaped")
    print("  unshaped link: %d steps (2 hosts x 1 rank, tp=1 dp=2) in %.1f s"
          % (SLOW_LINK_STEPS, base_s))
    failures = []
    for loss in SLOW_LINK_LOSSES:
        nominal = float(loss[:-1]) / 100
        cluster.shape_all(rate="1gbit", loss=loss)
        run_dir, took, n = timed("rate_1gbit_loss_" + loss[:-1])
        print("  rate 1gbit, loss %s each way: %.1f s (unshaped %.1f s); the classifiers dropped "
              "%d of %d packets (%.2f%%), TCP retransmitted %d segments"
              % (loss, took, base_s, n["dropped"], n["sent"],
                 100.0 * n["dropped"] / max(n["sent"], 1), n["retransmitted"]))
        # Binomial: with a few thousand packets the rate seen is within a factor 2 of the one set.
        if n["sent"] < 2000 or not nominal / 2 < n["dropped"] / n["sent"] < nominal * 2:
            failures.append("loss %s: %d of %d packets dropped, not about %s"
                            % (loss, n["dropped"], n["sent"], loss))
        if n["retransmitted"] < n["dropped"] / 2:
            failures.append("loss %s: %d packets dropped but only %d TCP retransmissions: the "
                            "senders saw the drops" % (loss, n["dropped"], n["retransmitted"]))
        if not bitwise("rate 1gbit, loss %s vs unshaped" % loss, run_dir, base):
            failures.append("the job over a lossy link differs from the unshaped one")
    # This kernel cannot delay a packet on a veth link: refused, with the reason.
    try:
        cluster.shape(1, delay="1ms")
        print("  delay 1ms: shaped (this kernel has sch_netem)")
    except ClusterError as e:
        print("  delay refused: " + str(e))
        if "sch_netem" not in str(e):
            failures.append("a delay was refused without the reason: %s" % e)
    return failures


def tcp_probe(cluster, rounds=300, mb=64, port=5301):
    """Round trips (sorted, us) and stream MB/s from node0 to node1 (tests/cluster/tcp_probe.py)."""
    probe = os.path.join(HERE, "tcp_probe.py")
    server = cluster.popen(1, [sys.executable, probe, "serve", cluster.addrs[1], str(port)],
                           stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # listening
        out = cluster.run(0, [sys.executable, probe, "probe", cluster.addrs[1], str(port),
                              str(rounds), str(mb)], timeout=60)
    finally:
        server.wait(timeout=30)
    if out.returncode != 0:
        raise SystemExit("FAIL: tcp_probe: %s" % out.stdout[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_delayed_link(args, cluster):
    failures = []

    def quantiles(r):
        rtt = r["rtt_us"]
        return rtt[0], rtt[len(rtt) // 2]

    # The fastest of 500 round trips: the others wait, some of them long, for a vCPU to wake
    # on this shared 2-core machine.
    base = tcp_probe(cluster, rounds=500)
    base_min, base_median = quantiles(base)
    print("  relay link, unshaped: round trip fastest %.0f us, median %.0f us; stream %.0f MB/s"
          % (base_min, base_median, base["stream_mb_per_s"]))
    cluster.shape_all(delay="250us")
    fastest, median = quantiles(tcp_probe(cluster, rounds=500))
    print("  250 us each way: round trip fastest %.0f us, median %.0f us (+%.0f, +%.0f)"
          % (fastest, median, fastest - base_min, median - base_median))
    # Timer wake-ups are late by tens of us under a hypervisor (the emulator sets its timer
    # early by the lateness it sees): the rise is checked against 500 us with that much room.
    if not 350 <= fastest - base_min <= 900:
        failures.append("a 250 us delay each way raised the fastest round trip by %.0f us, not "
                        "about 500" % (fastest - base_min))
    cluster.shape_all(rate="1gbit")
    limited = tcp_probe(cluster, rounds=10, mb=32)
    print("  1 Gbit/s: stream %.0f MB/s (125 MB/s is the rate)" % limited["stream_mb_per_s"])
    if not 60 <= limited["stream_mb_per_s"] <= 140:
        failures.append("a 1 Gbit/s link moved %.0f MB/s" % limited["stream_mb_per_s"])

    config = lm_config(args.workdir)
    steps = ["--set", "train.steps=%d" % SLOW_LINK_STEPS]

    cluster.shape_all()
    base_dir, base_s = dp2_run(args, cluster, config, "unshaped", steps)
    cluster.shape_all(rate="10gbit", delay="100us")
    run_dir, took = dp2_run(args, cluster, config, "rate_10gbit_delay_100us", steps)
    print("  2 hosts x 1 rank (tp=1 dp=2), %d steps: unshaped %.1f s, 10 Gbit/s and 100 us "
          "each way %.1f s" % (SLOW_LINK_STEPS, base_s, took))
    if not bitwise("10 Gbit/s, 100 us vs unshaped", run_dir, base_dir):
        failures.append("the job over a delayed link differs from the unshaped one")
    return failures


def wait_for_metrics(run_dir, min_bytes=2000, timeout=60):
    path = os.path.join(run_dir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > min_bytes:
            return True
        time.sleep(0.2)
    return False


def rank_pids(cluster, host):
    """The primal processes on host (the ranks), by PID."""
    pids = []
    for pid in cluster.processes()[cluster.names[host]]:
        try:
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() == "primal":
                    pids.append(pid)
        except OSError:
            pass
    return pids


def fault_run(args, cluster, config, name, inject, expect):
    """Starts a long 2-host job (one rank per host), injects the fault once training runs,
    and checks how and how fast the job ends."""
    run_dir = os.path.join(args.workdir, name)
    cmd = cluster.mpirun_command(
        cluster.hostfile(1), ["-np", "2"] + train_command(
            args, config, run_dir, ["--set", "train.steps=1000000", "--set", "train.log_every=50",
                                    "--set", "parallel.watchdog_s=%d" % WATCHDOG_S]), args.mpirun)
    log = os.path.join(args.workdir, name + ".log")
    with open(log, "w") as out:
        proc = cluster.popen(0, cmd, env=cluster.env(**MPI_ENV), stdout=out,
                             stderr=subprocess.STDOUT)
    if not wait_for_metrics(run_dir):
        proc.kill()
        return ["%s: training did not start:\n%s" % (name, open(log).read()[-2000:])]
    t0 = time.time()
    inject()
    try:
        code = proc.wait(timeout=WATCHDOG_S + END_MARGIN_S + 30)
    except subprocess.TimeoutExpired:
        code = None
    took = time.time() - t0
    time.sleep(1)  # what a daemon still does after mpirun returned
    left = {h: p for h, p in cluster.processes().items() if p}
    text = open(log).read()
    message = next((l for l in text.splitlines() if re.search(expect, l)), None)
    print("  %s: job ended %s after %.1f s (watchdog %d s); %s; processes left: %s"
          % (name, "with exit %s" % code if code is not None else "NOT", took, WATCHDOG_S,
             "message: " + message.strip() if message else "no message matching " + expect,
             left or "none"))
    failures = []
    if code is None or code == 0 or took > WATCHDOG_S + END_MARGIN_S:
        failures.append("%s: the job did not end within %d s (exit %s, %.1f s)"
                        % (name, WATCHDOG_S + END_MARGIN_S, code, took))
    if not message:
        failures.append("%s: no message naming the rank and its host:\n%s" % (name, text[-3000:]))
    if left:
        failures.append("%s: processes left: %s" % (name, left))
    if code is None:
        proc.kill()
    return failures


def check_faults(args, cluster):
    config = lm_config(args.workdir)
    failures = []
    # The link cut: nothing tells the ranks; the watchdog of the collective they are in does.
    failures += fault_run(
        args, cluster, config, "link_cut", lambda: cluster.cut(1),
        r"^rank 0 on node0: .* did not complete in %d s; aborting \(waiting for rank 1 on node1\)$"
        % WATCHDOG_S)
    cluster.uncut(1)
    # node1's ranks die (its daemon stays): mpirun names the rank and the host.
    failures += fault_run(
        args, cluster, config, "ranks_killed", lambda: cluster.kill(rank_pids(cluster, 1)),
        r"process rank 1 with PID \d+ on node node1 exited on signal 9")
    # Everything on node1 dies, its daemon too: mpirun names the host, and our
    # rank 0 reports the peer it lost.
    failures += fault_run(
        args, cluster, config, "host_killed",
        lambda: cluster.kill(cluster.processes()[cluster.names[1]]),
        r"Remote daemon: .* on node node1$")
    return failures


def mpirun_reference(args, cluster, config, extra=()):
    """The uninterrupted run across the hosts (one rank each) that a Slurm job must equal."""
    reference = os.path.join(args.workdir, "mpirun")
    p = mpirun(args, cluster, 1, 2, train_command(args, config, reference, extra))
    if p.returncode != 0:
        raise SystemExit("FAIL: mpirun across hosts exited %d:\n%s" % (p.returncode,
                                                                        p.stdout[-3000:]))
    return reference


def sbatch_across_hosts(args, slurm, config, extra=()):
    """`sbatch -N 2 --ntasks-per-node=1 primal.sbatch CONFIG`: (job, its run directory, its
    output file)."""
    run_dir = os.path.join(args.workdir, "sbatch")
    out = os.path.join(args.workdir, "sbatch.out")
    job = slurm.sbatch(os.path.join(ROOT, "launch", "slurm", "primal.sbatch"),
                       ["-N", "2", "--ntasks-per-node=1", "--output=" + out,
                        "--chdir=" + args.workdir],
                       [config, "--set", "logging.dir=" + run_dir] + list(extra),
                       env=dict(MPI_ENV, PRIMAL=args.primal))
    return job, run_dir, out


def text_of(path):
    return open(path).read() if os.path.exists(path) else ""


def check_slurm(args, cluster):
    config = write_config(args.workdir, 600)
    reference = mpirun_reference(args, cluster, config)
    failures = []
    with SlurmCluster(os.path.join(args.workdir, "slurm"), hosts=cluster) as slurm:
        job, run_dir, out = sbatch_across_hosts(args, slurm, config)
        try:
            at = wait_for_step(run_dir, 100, timeout=60)
        except SystemExit:
            return ["the sbatch -N 2 job did not reach step 100 (%s):\n%s%s" % (
                slurm.state(job), text_of(out), slurm.logs())]
        slurm.signal(job, "USR1", batch=True)
        slurm.wait_state(job, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=120)
        state, restarts = slurm.state(job)
        text = text_of(out)
        print("  sbatch -N 2: job %s got USR1 at step %d; %s after %d restart(s)"
              % (job, at, state, restarts))
        layout = next((l for l in text.splitlines() if "primal train: layout" in l), "")
        print("  " + layout)
        if state != "COMPLETED" or restarts < 1 or "requeueing" not in text:
            return ["the sbatch -N 2 job did not requeue and complete:\n" + text[-3000:] +
                    slurm.logs()]
    if "on node node0" not in layout or "Slurm srun" not in layout:
        failures.append("the job's layout line does not show node0 under srun: " + layout)
    if not bitwise("sbatch -N 2 (preempted, requeued, resumed) vs mpirun across 2 hosts",
                   run_dir, reference):
        failures.append("sbatch -N 2 differs from mpirun")
    return failures


def check_node_failure_requeue(args, cluster):
    config = write_config(args.workdir, NODE_FAILURE_STEPS)
    extra = ["--set", "checkpoint.every=%d" % NODE_FAILURE_CHECKPOINT_EVERY,
             "--set", "parallel.watchdog_s=%d" % WATCHDOG_S]
    reference = mpirun_reference(args, cluster, config, extra)
    failures = []
    with SlurmCluster(os.path.join(args.workdir, "slurm"), hosts=cluster,
                      conf=NODE_FAILURE_SLURM_CONF) as slurm:
        job, run_dir, out = sbatch_across_hosts(args, slurm, config, extra)
        try:
            at = wait_for_step(run_dir, NODE_FAILURE_KILL_AT, timeout=60)
        except SystemExit:
            return ["the sbatch -N 2 job did not reach step %d (%s):\n%s%s" % (
                NODE_FAILURE_KILL_AT, slurm.state(job), text_of(out), slurm.logs())]
        first_nodes = slurm.state(job, nodes=True)[2]
        ranks = rank_pids(cluster, 0) + rank_pids(cluster, 1)
        # node1 loses power: everything on it dies at once, its slurmd too.
        t0 = time.time()
        cluster.kill(cluster.processes()[cluster.names[1]])
        print("  job %s on %s: node1 killed (slurmd, slurmstepd, rank 1) at step %d"
              % (job, first_nodes, at))
        # What happens next, as it happens: each event's first time.
        events = {
            "rank 0's watchdog fired": lambda st: "did not complete in" in text_of(out),
            "the run ended, its ranks gone": lambda st: (st[0] != "RUNNING" or st[1] > 0) and
            not any(alive(p) for p in ranks),
            "requeued": lambda st: st[1] >= 1,
            "node1 DOWN": lambda st: slurm.node_state(1).startswith("DOWN"),
            "running again (on the spare)": lambda st: st[:2] == ("RUNNING", 1),
            "completed": lambda st: st[0] in ("COMPLETED", "FAILED", "CANCELLED"),
        }
        times, rerun_nodes = {}, ""
        deadline = time.time() + 180
        while len(times) < len(events) and time.time() < deadline:
            st = slurm.state(job, nodes=True)
            for event, happened in events.items():
                if event not in times and happened(st):
                    times[event] = time.time() - t0
                    rerun_nodes = st[2] if event.startswith("running again") else rerun_nodes
            time.sleep(0.2)
        if "completed" in times:
            # The operator, after node1's reboot: its slurmd again, and Slurm takes it back
            # (ReturnToService=2).
            slurm.start_slurmd(1)
            times["node1's slurmd started again"] = time.time() - t0
            while time.time() < deadline and slurm.node_state(1) != "IDLE":
                time.sleep(0.2)
            if slurm.node_state(1) == "IDLE":
                times["node1 back (IDLE)"] = time.time() - t0
        for event, t in sorted(times.items(), key=lambda e: e[1]):
            print("  %5.1f s  %s" % (t, event))
        print("  the job ran on %s, then on %s" % (first_nodes, rerun_nodes or "-"))
        state, restarts = slurm.state(job)
        text = text_of(out)
        for line in text.splitlines():
            if re.match(r"rank \d+ on |primal.sbatch:|srun: error|primal train: resumed", line):
                print("  | " + line)
        missing = [e for e in list(events) + ["node1 back (IDLE)"] if e not in times]
        if missing or state != "COMPLETED" or restarts != 1:
            return failures + ["after node1 died: %s; job %s after %d restart(s):\n%s%s" % (
                "no " + ", no ".join(missing) if missing else "all seen", state, restarts,
                text[-3000:], slurm.logs())]
    limit = WATCHDOG_S + END_MARGIN_S + NODE_FAILURE_SLURM_CONF["KillWait"] + 2
    ended = times["the run ended, its ranks gone"]
    if ended > limit:
        failures.append("the job's run ended %.1f s after node1 died, not within %d s"
                        % (ended, limit))
    if (first_nodes, rerun_nodes) != ("node[0-1]", "node[0,2]"):
        failures.append("the job ran on %s, then on %s: not node[0-1], then node[0,2]"
                        % (first_nodes, rerun_nodes))
    for expect in (r"^rank 0 on node0: .* did not complete in %d s; aborting \(waiting for "
                   r"rank 1 on node1\)$" % WATCHDOG_S,
                   r"^primal.sbatch: node\(s\) node1 not responding; requeueing job"):
        if not re.search(expect, text, re.M):
            failures.append("no line matching %s in the job's output" % expect)
    # From the newest checkpoint: the one at or before the step the job had reached.
    resumed = re.search(r"^primal train: resumed from .* \(step (\d+),", text, re.M)
    newest = at // NODE_FAILURE_CHECKPOINT_EVERY * NODE_FAILURE_CHECKPOINT_EVERY
    if not resumed or not newest <= int(resumed.group(1)) < NODE_FAILURE_STEPS:
        failures.append("the requeued job did not resume from the checkpoint of step %d or "
                        "later" % newest)
    if not bitwise("sbatch -N 2 (node1 killed, requeued onto node0 and node2, resumed) vs "
                   "mpirun on node0 and node1", run_dir, reference):
        failures.append("the requeued job differs from mpirun")
    return failures


# check: (function, its cluster). The node failure's third host is the spare the requeued
# job moves to, on the CPUs of the host that died.
CHECKS = {"layout": (check_layout, {}), "faults": (check_faults, {}),
          "slurm": (check_slurm, {}), "slow_link": (check_slow_link, {}),
          "delayed_link": (check_delayed_link, {"links": "relay"}),
          "four_hosts": (check_four_hosts, {"hosts": 4}),
          "node_failure_requeue": (check_node_failure_requeue,
                                   {"hosts": 3, "cpus": cpu_sets(2) + cpu_sets(2)[1:]})}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--primal", required=True)
    parser.add_argument("--mpirun", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("check", choices=sorted(CHECKS))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("SKIP: the cluster tests need root (network namespaces)")
        return 77
    args.primal = os.path.abspath(args.primal)
    args.workdir = os.path.abspath(args.workdir)
    subprocess.run(["rm", "-rf", args.workdir])
    os.makedirs(args.workdir)
    check, cluster_args = CHECKS[args.check]
    with Cluster(workdir=os.path.join(args.workdir, "cluster"), **cluster_args) as cluster:
        try:
            failures = check(args, cluster)
        except SystemExit as e:  # a step that the rest depends on failed
            failures = [str(e).replace("FAIL: ", "", 1)]
    if namespaces():
        failures.append("namespaces left after the cluster was removed: %s" % namespaces())
    for f in failures:
        print("FAIL: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
