#!/usr/bin/env python3
"""A kill-and-resume soak of `primal train` (docs/reliability.md).

  bench/soak.py --primal BIN --workdir DIR [--steps 20000] [--every 50] [--kills 40]
                [--seed 1] [--max-seconds 1200]

A tiny LM is trained twice: straight through, and again with SIGTERM or SIGKILL sent at random
moments (seeded: the signal and the delay after each start), each time restarted with
`--resume auto`, until --kills signals are sent or --max-seconds pass; then the run finishes.
Checked:
  - every training line of every segment of the killed run equals the straight run's line for
    that step bitwise (loss, ce, ksvd, lr, grad_norm: JSON keeps 17 digits), and
    metrics.jsonl reads like one run (each step once, 1..steps, every line whole);
  - the final parameters (model.safetensors) are bitwise the straight run's;
  - SIGTERM ends a segment with exit 75 after a checkpoint at the step it stopped at; SIGKILL
    resumes from the newest complete checkpoint;
  - resident memory of the straight run stays flat: after the first tenth of the steps, its
    least-squares growth over the rest of the steps (the last one, with the final evaluation
    and the exit, left out) is under --rss-growth-kib.
Writes DIR/soak_memory.csv (run, seconds, step, VmRSS KiB), DIR/soak_kills.csv (one row per
signal), DIR/soak_memory.svg and DIR/soak.md (the summary printed at the end).
Exit 0 when every check holds, 1 otherwise.
"""
import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "checkpoint"))
from checkpoint_test import REQUEUE, final_params, lm_config, train_cmd  # noqa: E402

SAMPLE_S = 0.2


def rss_kib(pid):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def last_step(metrics):
    """The step of the last whole training line of metrics.jsonl (0 if none)."""
    try:
        with open(metrics, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().split(b"\n")[:-1]
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if "split" not in j:
            return j["step"]
    return 0


def metric_lines(run_dir):
    """Every line of metrics.jsonl, parsed; a line that does not parse is returned as a str."""
    out = []
    for line in open(os.path.join(run_dir, "metrics.jsonl")):
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append(line)
    return out


TRAINING_FIELDS = ("loss", "ce", "ksvd", "lr", "grad_norm", "skipped")


class Segment:
    """One `primal train` process, its memory sampled until it exits or is signalled."""

    def __init__(self, cmd, run_name, run_dir, memory):
        self.run_name, self.run_dir, self.memory = run_name, run_dir, memory
        self.log = open(os.path.join(run_dir + ".log"), "a")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.start = time.time()
        self.peak = 0

    def sample(self):
        kib = rss_kib(self.proc.pid)
        if kib is not None:
            self.peak = max(self.peak, kib)
            self.memory.append((self.run_name, round(time.time() - self.start, 3),
                                last_step(os.path.join(self.run_dir, "metrics.jsonl")), kib))

    def run_for(self, seconds):
        """Samples until the process exits or `seconds` pass; True if it exited."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return True
            self.sample()
            time.sleep(min(SAMPLE_S, max(0.0, deadline - time.time())))
        return self.proc.poll() is not None

    def wait(self, timeout):
        if not self.run_for(timeout):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("%s: still running after %d s" % (self.run_name, timeout))
        self.log.close()
        return self.proc.returncode


def least_squares_slope(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def write_svg(path, memory, steps):
    """Resident memory against the step, one polyline per run."""
    w, h, left, bottom = 720, 320, 70, 40
    kib = [m[3] for m in memory]
    lo, hi = min(kib), max(kib)
    lo, hi = lo - max(1, (hi - lo)) * 0.2, hi + max(1, (hi - lo)) * 0.2
    colours = {"straight": "#1f77b4", "killed": "#d62728"}

    def xy(step, k):
        return (left + (w - left - 10) * step / steps,
                h - bottom - (h - bottom - 10) * (k - lo) / (hi - lo))

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="11">' % (w, h),
           '<rect width="100%" height="100%" fill="white"/>',
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, h - bottom, w - 10, h - bottom),
           '<line x1="%d" y1="10" x2="%d" y2="%d" stroke="black"/>' % (left, left, h - bottom),
           '<text x="%d" y="%d" text-anchor="middle">step</text>' % ((w + left) // 2, h - 8),
           '<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">VmRSS (MiB)</text>'
           % (h // 2, h // 2)]
    for i in range(5):
        k = lo + (hi - lo) * i / 4
        _, y = xy(0, k)
        out.append('<text x="%d" y="%.1f" text-anchor="end">%.1f</text>' % (left - 4, y + 4, k / 1024))
        s = steps * i // 4
        x, _ = xy(s, lo)
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (x, h - bottom + 14, s))
    for run, colour in colours.items():
        pts = [xy(m[2], m[3]) for m in memory if m[0] == run]
        if pts:
            out.append('<polyline fill="none" stroke="%s" stroke-width="1" points="%s"/>'
                       % (colour, " ".join("%.1f,%.1f" % p for p in pts)))
    for i, (run, colour) in enumerate(colours.items()):
        out.append('<text x="%d" y="%d" fill="%s">%s</text>' % (left + 10, 24 + 14 * i, colour, run))
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--primal", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--every", type=int, default=50, help="checkpoint.every")
    ap.add_argument("--kills", type=int, default=40, help="signals to send at most")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=1200, help="stop signalling after this")
    ap.add_argument("--max-delay", type=float, default=3.0,
                    help="a signal comes 0.05..max-delay s after a segment starts")
    ap.add_argument("--rss-growth-kib", type=float, default=1024,
                    help="the straight run's fitted growth after the first tenth must stay below")
    ap.add_argument("--no-memory-check", action="store_true",
                    help="under a sanitizer: ASan's quarantine holds freed memory, so resident "
                    "memory grows by design (LeakSanitizer checks for leaks there)")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    config = lm_config(args.workdir, steps=args.steps)
    extra = ["--set", "checkpoint.every=%d" % args.every, "--set", "checkpoint.keep=3"]
    memory, kills, failures = [], [], []
    timeout = 60 + args.steps * 0.05

    straight = os.path.join(args.workdir, "straight")
    os.makedirs(straight)
    seg = Segment(train_cmd(args, config, straight, extra=extra), "straight", straight, memory)
    rc = seg.wait(timeout)
    if rc != 0:
        failures.append("the straight run exited %d (see %s.log)" % (rc, straight))
        print("\n".join(failures))
        return 1
    base = {j["step"]: j for j in metric_lines(straight) if isinstance(j, dict) and "split" not in j}

    rng = random.Random(args.seed)
    killed = os.path.join(args.workdir, "killed")
    os.makedirs(killed)
    begin = time.time()
    segments = checked = 0
    while True:
        resume = "auto" if segments else None
        seg = Segment(train_cmd(args, config, killed, extra=extra, resume=resume), "killed", killed, memory)
        segments += 1
        if len(kills) >= args.kills or time.time() - begin > args.max_seconds:
            rc = seg.wait(timeout)
            if rc != 0:
                failures.append("the last segment exited %d (see %s.log)" % (rc, killed))
            break
        how = rng.choice((signal.SIGTERM, signal.SIGKILL))
        delay = rng.uniform(0.05, args.max_delay)
        if seg.run_for(delay):
            # It finished before the signal: the run is complete.
            rc = seg.proc.returncode
            if rc != 0:
                failures.append("segment %d exited %d on its own (see %s.log)" % (segments, rc, killed))
            break
        reached = last_step(os.path.join(killed, "metrics.jsonl"))
        seg.proc.send_signal(how)
        rc = seg.wait(120)
        checked += compare_lines(metric_lines(killed), base, "after kill %d" % (len(kills) + 1), failures)
        root = os.path.join(killed, "checkpoints")
        latest = open(os.path.join(root, "latest")).read().strip() if os.path.exists(os.path.join(root, "latest")) else ""
        kills.append({"kill": len(kills) + 1, "signal": signal.Signals(how).name, "delay_s": round(delay, 3),
                      "step_at_signal": reached, "exit": rc, "latest": latest,
                      "last_logged": last_step(os.path.join(killed, "metrics.jsonl")), "peak_rss_kib": seg.peak})
        if how == signal.SIGTERM and rc == 0 and kills[-1]["last_logged"] == args.steps:
            # The signal came after the last step, while the run wrote its final checkpoint
            # and model.safetensors: the run is complete (a stop request has nothing to stop).
            break
        if how == signal.SIGTERM and rc == REQUEUE:
            if latest != "step_%08d" % kills[-1]["last_logged"]:
                failures.append("kill %d: SIGTERM exit 75 but latest is %s, last logged step %d"
                                % (len(kills), latest, kills[-1]["last_logged"]))
        elif how == signal.SIGTERM and rc != -signal.SIGTERM:
            failures.append("kill %d: SIGTERM ended the segment with exit %d" % (len(kills), rc))
        elif how == signal.SIGKILL and rc != -signal.SIGKILL:
            failures.append("kill %d: SIGKILL ended the segment with exit %d" % (len(kills), rc))
    elapsed = time.time() - begin

    # The final file, then (above) what each segment had written before its signal: every line
    # a segment wrote, also those a later resume dropped, is checked.
    lines = metric_lines(killed)
    torn = [l for l in lines if not isinstance(l, dict)]
    if torn:
        failures.append("metrics.jsonl of the killed run has %d line(s) that do not parse: %r"
                        % (len(torn), torn[:2]))
    train_steps = [j["step"] for j in lines if isinstance(j, dict) and "split" not in j]
    if train_steps != list(range(1, args.steps + 1)):
        failures.append("metrics.jsonl of the killed run does not read like one run (%d training "
                        "lines, %d distinct steps)" % (len(train_steps), len(set(train_steps))))
    checked += compare_lines(lines, base, "the finished run", failures)
    if final_params(killed) != final_params(straight):
        failures.append("the killed run's final parameters differ from the straight run's")
    leftovers = [n for n in os.listdir(os.path.join(killed, "checkpoints")) if n.endswith(".tmp")]
    if leftovers:
        failures.append("temporary files left in the checkpoint directory: %s" % leftovers)

    # Memory of the straight run after the first tenth of its steps, while it trains: samples at
    # the last step also see the final evaluation and the process's teardown (MPI_Finalize
    # touches tens of MB on its way out), which are not steps.
    steady = [m for m in memory
              if m[0] == "straight" and args.steps // 10 <= m[2] < args.steps]
    growth = 0.0
    if not args.no_memory_check and len(steady) >= 10:
        slope = least_squares_slope([m[2] for m in steady], [m[3] for m in steady])
        growth = slope * (args.steps - args.steps // 10)
        if growth >= args.rss_growth_kib:
            failures.append("the straight run's resident memory grows %.0f KiB after step %d"
                            % (growth, args.steps // 10))
    elif not args.no_memory_check:
        failures.append("too few memory samples of the straight run (%d)" % len(steady))

    with open(os.path.join(args.workdir, "soak_memory.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("run", "seconds", "step", "vmrss_kib"))
        w.writerows(memory)
    with open(os.path.join(args.workdir, "soak_kills.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(kills[0]) if kills else ["kill"])
        w.writeheader()
        w.writerows(kills)
    write_svg(os.path.join(args.workdir, "soak_memory.svg"), memory, args.steps)

    straight_kib = [m[3] for m in memory if m[0] == "straight"]
    by_exit = {}
    for k in kills:
        key = "%s -> exit %d" % (k["signal"], k["exit"])
        by_exit[key] = by_exit.get(key, 0) + 1
    summary = [
        "soak: %d steps, checkpoint every %d (keep 3), seed %d" % (args.steps, args.every, args.seed),
        ("memory not checked (--no-memory-check); " if args.no_memory_check else "") +
        "straight run: %.1f s; VmRSS %.1f MiB at step %d, %.1f MiB at the end, min %.1f / max %.1f MiB "
        "after step %d; fitted growth after step %d: %+.0f KiB"
        % (seg_time(memory, "straight"), steady[0][3] / 1024 if steady else 0,
           steady[0][2] if steady else 0, straight_kib[-1] / 1024,
           min(m[3] for m in steady) / 1024 if steady else 0, max(m[3] for m in steady) / 1024 if steady else 0,
           args.steps // 10, args.steps // 10, growth),
        "killed run: %d signals (%s) over %d segments in %.1f s; peak VmRSS per segment %.1f-%.1f MiB"
        % (len(kills), ", ".join("%d x %s" % (n, k) for k, n in sorted(by_exit.items())), segments, elapsed,
           min(k["peak_rss_kib"] for k in kills) / 1024 if kills else 0,
           max(k["peak_rss_kib"] for k in kills) / 1024 if kills else 0),
        "checked: %d training lines (every segment's, read after each signal and at the end) against "
        "the straight run's; final parameters %s"
        % (checked, "bitwise equal" if final_params(killed) == final_params(straight)
           else "DIFFERENT"),
        "result: " + ("PASS" if not failures else "FAIL"),
    ] + ["  " + f for f in failures]
    open(os.path.join(args.workdir, "soak.md"), "w").write("\n".join(summary) + "\n")
    print("\n".join(summary))
    return 0 if not failures else 1


def compare_lines(lines, base, when, failures):
    """Compares every whole training line with the straight run's; returns how many it read."""
    train = [j for j in lines if isinstance(j, dict) and "split" not in j]
    bad = [j["step"] for j in train if any(j.get(k) != base.get(j["step"], {}).get(k) for k in TRAINING_FIELDS)]
    if bad:
        failures.append("%s: %d training lines differ from the straight run's, first at step %d"
                        % (when, len(bad), bad[0]))
    return len(train)


def seg_time(memory, run):
    times = [m[1] for m in memory if m[0] == run]
    return max(times) if times else 0.0


if __name__ == "__main__":
    sys.exit(main())
