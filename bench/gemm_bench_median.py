#!/usr/bin/env python3
"""Medians over several gemm_bench runs (separate processes), as docs/gemm_libraries.md tables.

  for i in 1 2 3; do build/bench/gemm_bench > /tmp/gemm_$i.txt; done
  bench/gemm_bench_median.py /tmp/gemm_*.txt

Per thread count: GFLOP/s per shape class (from the median over runs of each run's median
time), the step's total, the 2048^3 rate, determinism (every run) and the largest difference.
"""
import json
import statistics
import sys
from collections import defaultdict


def main(paths):
    classes = {}  # name -> (phase, calls, gflop), in the runs' order
    libs = []
    class_ms = defaultdict(list)  # (threads, lib, class) -> [ms per run]
    paths_of = {}
    summary = defaultdict(list)  # (threads, lib) -> [summary line per run]
    for path in paths:
        for line in open(path):
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "class" in r and "phase" in r:
                classes.setdefault(r["class"], (r["phase"], r["calls"], r["gflop"]))
            elif "version" in r:
                if r["library"] not in libs:
                    libs.append(r["library"])
            elif "median_ms" in r:
                key = (r["threads"], r["library"], r["class"])
                class_ms[key].append(r["median_ms"])
                paths_of[key] = r["path"]
            elif "step_gemm_ms" in r:
                summary[(r["threads"], r["library"])].append(r)
    step_gflop = sum(g for _, _, g in classes.values())
    for threads in sorted({t for t, _ in summary}):
        print(f"\n### {threads} thread{'s' if threads > 1 else ''}: GFLOP/s per shape class "
              f"(median of {len(paths)} runs)\n")
        print("| class (ta tb MxNxK beta) | phase | calls | GFLOP | " + " | ".join(libs) +
              f" | best (x {libs[0]}) |")
        print("|---|---|---:|---:|" + "---:|" * len(libs) + "---|")
        best_total = 0.0
        for name, (phase, calls, gflop) in classes.items():
            ms = [statistics.median(class_ms[(threads, l, name)]) for l in libs]
            rates = [gflop / m * 1e3 for m in ms]
            det = [all(s["deterministic"] for s in summary[(threads, l)]) for l in libs]
            best = max((j for j in range(len(libs)) if det[j]), key=lambda j: rates[j])
            best_total += ms[best]
            cells = [f"{r:.1f}{'*' if paths_of[(threads, l, name)] == 'fallback' else ''}"
                     for r, l in zip(rates, libs)]
            print(f"| {name} | {phase} | {calls} | {gflop:.3f} | " + " | ".join(cells) +
                  f" | {libs[best]} x{rates[best] / rates[0]:.2f} |")
        rows = defaultdict(list)
        for l in libs:
            s = summary[(threads, l)]
            total = statistics.median(x["step_gemm_ms"] for x in s)
            peak = statistics.median(x["sgemm2048_gflops"] for x in s)
            rows["**step total, ms**"].append(f"{total:.1f}")
            rows["**step GFLOP/s**"].append(f"{step_gflop / total * 1e3:.1f}")
            rows["**2048^3 sgemm GFLOP/s**"].append(f"{peak:.1f}" if peak else "n/a")
            rows["**step / own 2048^3**"].append(
                f"{100 * step_gflop / total * 1e3 / peak:.0f}%" if peak else "n/a")
            rows["**deterministic (all runs)**"].append(
                "yes" if all(x["deterministic"] for x in s) else "**no**")
            rows["**max rel. diff to OpenBLAS-OpenMP**"].append(
                f"{max(x['max_rel_diff'] for x in s):.1e}")
        for i, (label, cells) in enumerate(rows.items()):
            print(f"| {label} | | | {f'{step_gflop:.3f}' if i == 0 else ''} | " +
                  " | ".join(cells) + " | |")
        base = statistics.median(x["step_gemm_ms"] for x in summary[(threads, libs[0])])
        print(f"\nBest deterministic library per class, together: {best_total:.1f} ms "
              f"({libs[0]}: {base:.1f} ms, saves {base - best_total:.1f} ms).")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: gemm_bench_median.py RUN_OUTPUT...")
    main(sys.argv[1:])
