#!/usr/bin/python3
"""Driver: compare every case of the C++ dump tool with the PyTorch reference.

Usage:
  /usr/bin/python3 tests/reference/run_reference.py --dump-tool PATH --workdir DIR

1. Checks that torch imports (otherwise prints a SKIPPED line, exit 77).
2. Runs `PATH --list`: one case name per line.
3. For each case: creates DIR/CASE, runs `PATH CASE DIR/CASE` (writes the
   dump), then compares it with primal_reference.compare_dump.
4. Prints a summary table; exit 0 if every case passes, 1 otherwise.
"""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import primal_reference as ref  # noqa: E402

TOOL_TIMEOUT_S = 600


def run_tool(cmd):
    """Runs cmd; returns (ok, stdout, message)."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=TOOL_TIMEOUT_S)
    except OSError as exc:
        return False, "", "cannot run %s: %s" % (cmd[0], exc)
    except subprocess.TimeoutExpired:
        return False, "", "%s timed out after %d s" % (" ".join(cmd), TOOL_TIMEOUT_S)
    if proc.returncode != 0:
        return False, proc.stdout, "%s exited with %d\n%s%s" % (
            " ".join(cmd), proc.returncode, proc.stdout, proc.stderr)
    return True, proc.stdout, ""


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump-tool", required=True, help="C++ program that writes the dumps")
    parser.add_argument("--workdir", required=True, help="directory for the dumps")
    args = parser.parse_args(argv[1:])

    if ref.TORCH_IMPORT_ERROR is not None:
        print(ref.skipped_line())
        return ref.SKIP_EXIT
    ref.torch.set_num_threads(max(1, os.cpu_count() or 1))

    tool = os.path.abspath(args.dump_tool)
    ok, listing, msg = run_tool([tool, "--list"])
    if not ok:
        print("ERROR: %s" % msg)
        return 1
    cases = [line.strip() for line in listing.splitlines() if line.strip()]
    if not cases:
        print("ERROR: %s --list printed no case" % tool)
        return 1

    summary = []
    for case in cases:
        dump_dir = os.path.join(os.path.abspath(args.workdir), case)
        os.makedirs(dump_dir, exist_ok=True)
        print("=== case %s" % case)
        ok, _, msg = run_tool([tool, case, dump_dir])
        if not ok:
            print("ERROR: dump tool failed: %s" % msg)
            summary.append((case, False, float("nan"), "dump tool failed"))
            continue
        try:
            res = ref.compare_dump(dump_dir)
        except Exception as exc:  # noqa: BLE001 - report, keep going
            print("ERROR: comparison raised %s: %s" % (type(exc).__name__, exc))
            summary.append((case, False, float("nan"), "exception: %s" % exc))
            continue
        if res["error"]:
            note = res["error"]
        elif res["ok"]:
            note = ""
        else:
            note = "failed: " + ", ".join(res["failures"])
        summary.append((case, res["ok"], res["worst_rel"], note))
        print()

    width = max(len("case"), max(len(c) for c, _, _, _ in summary))
    print("=== summary (threshold %g on relative error, torch fp32 vs C++)" % ref.THRESHOLD)
    print("%-*s  %-6s  %12s  %s" % (width, "case", "result", "worst rel", "note"))
    for case, ok, worst, note in summary:
        print("%-*s  %-6s  %12.3e  %s" % (width, case, "PASS" if ok else "FAIL", worst, note))
    n_pass = sum(1 for _, ok, _, _ in summary if ok)
    print("%d/%d cases pass" % (n_pass, len(summary)))
    return 0 if n_pass == len(summary) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
