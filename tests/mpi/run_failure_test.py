#!/usr/bin/env python3
"""Runs a failing MPI job and checks that it ends the whole job, quickly and cleanly.

  run_failure_test.py --mpirun MPIRUN --np 2 --exe mpi_watchdog_test --within 10 \
      --expect 'REGEX' [--expect ...] -- --mode never-joins --timeout 2

Passes when the job exits non-zero within --within seconds, its output matches every
--expect regex, and no process of the job (found by a unique --tag argument, and by the
executable's name) is left afterwards. Prints what it measured.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time
import uuid


def job_processes(name, tag):
    """PIDs whose command line carries the tag, or whose name is the executable's."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if tag in cmdline or comm == name[:15]:
            found.append(f"{pid} {cmdline.strip()}")
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--exe", required=True)
    ap.add_argument("--within", type=float, default=10)
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    tag = "failure-test-" + uuid.uuid4().hex
    cmd = [a.mpirun, "-np", str(a.np), "--oversubscribe", a.exe, *args, "--tag", tag]
    print("running:", " ".join(cmd), flush=True)

    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    try:
        out, _ = proc.communicate(timeout=max(60, 3 * a.within))
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session this script started
        out, _ = proc.communicate()
        hung = True
    elapsed = time.monotonic() - start
    print(out)

    failures = []
    if hung:
        failures.append("the job hung and had to be killed")
    if proc.returncode == 0:
        failures.append("the job exited 0")
    if elapsed > a.within:
        failures.append(f"the job took {elapsed:.1f} s, more than {a.within:g} s")
    for pattern in a.expect:
        if not re.search(pattern, out, re.MULTILINE):
            failures.append(f"no output line matches {pattern!r}")
    # Processes may take a moment to be reaped after mpirun returns.
    name = os.path.basename(a.exe)
    left = job_processes(name, tag)
    for _ in range(30):
        if not left:
            break
        time.sleep(0.1)
        left = job_processes(name, tag)
    if left:
        failures.append("processes left behind: " + "; ".join(left))

    print(f"[failure test] exit code {proc.returncode}, ended in {elapsed:.2f} s, "
          f"{len(left)} process(es) left")
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
