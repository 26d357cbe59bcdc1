#!/usr/bin/python3
"""Runs bench/model_bench (ours) and bench/torch_bench.py (PyTorch) side by side, each case in
a fresh process, and prints the markdown table of docs/performance.md.

  /usr/bin/python3 bench/run_model_bench.py --build build [--threads 1] [--reps 3] [--no-torch]
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LISTOPS = ["--width", "64", "--heads", "2", "--layers", "2", "--mlp", "128", "--low-rank", "20",
           "--rank-multi", "10", "--vocab", "20", "--classes", "10"]


def last_json(cmd, env=None):
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or ["exit %d" % out.returncode]}
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return [json.loads(l) for l in lines]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-torch", action="store_true")
    a = p.parse_args()
    bench = os.path.join(a.build, "bench", "model_bench")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
    cases = subprocess.run([bench, "--list"], stdout=subprocess.PIPE, text=True,
                           check=True).stdout.split()
    peak = None
    rows = {}
    for case in cases:
        lines = last_json([bench, "--threads", str(a.threads), "--reps", str(a.reps), "--case",
                           case], env)
        peak = lines[0]["sgemm_peak_gflops"]
        rows[case] = lines[1]
        print(json.dumps(lines[1]), file=sys.stderr)
    torch = {}
    if not a.no_torch:
        for case, kind, b, n in [("listops_primal", "PRIMAL", 32, 2000),
                                 ("primal_n1024", "PRIMAL", 8, 1024),
                                 ("primal_n4096", "PRIMAL", 8, 4096),
                                 ("softmax_n1024", "SOFTMAX", 8, 1024)]:
            r = last_json(["/usr/bin/python3", os.path.join(HERE, "torch_bench.py"), "--attention",
                           kind, "--batch", str(b), "--seq", str(n), "--threads", str(a.threads),
                           "--reps", str(a.reps)] + LISTOPS, env)
            torch[case] = r[-1] if isinstance(r, list) else r
            print(json.dumps(torch[case]), file=sys.stderr)

    print("sgemm peak (2048^3, %d thread%s): %.1f GFLOP/s\n" % (a.threads, "s" * (a.threads > 1), peak))
    print("| case | B | N | primal s/step | GEMM GFLOP/s (% of peak) | peak MB | PyTorch s/step | PyTorch peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        r = rows[case]
        t = torch.get(case, {})
        ts = "%.3f" % t["median_s"] if "median_s" in t else ""
        tm = "%.0f" % t["peak_mb"] if "peak_mb" in t else ""
        print("| %s | %d | %d | %.3f | %.1f (%.0f%%) | %.0f | %s | %s |" % (
            case, r["B"], r["N"], r["median_s"], r["gflops"], 100 * r["gflops"] / peak,
            r["peak_mb"], ts, tm))
    print()
    for n in (1024, 2048, 4096, 8192):
        p_, s_ = rows.get("primal_n%d" % n), rows.get("softmax_n%d" % n)
        if p_ and s_:
            print("N=%d: SOFTMAX/PRIMAL time %.1fx, memory %.1fx" % (
                n, s_["median_s"] / p_["median_s"], s_["peak_mb"] / p_["peak_mb"]))
    if "median_s" in torch.get("listops_primal", {}):
        t, r = torch["listops_primal"], rows["listops_primal"]
        print("ListOps PRIMAL: PyTorch/primal time %.2fx, memory %.2fx (BLAS: %s)" % (
            t["median_s"] / r["median_s"], t["peak_mb"] / r["peak_mb"], t.get("blas", "?")))


if __name__ == "__main__":
    main()
