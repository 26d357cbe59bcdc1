#!/usr/bin/python3
"""Runs bench/model_bench (ours) and bench/torch_bench.py (PyTorch) side by side, each case in
a fresh process, and prints the markdown table of docs/performance.md.

  /usr/bin/python3 bench/run_model_bench.py --build build [--threads 1] [--reps 3] [--no-torch]

--only byte_lm runs just the byte LM training step (model_bench --case byte_lm against
torch_bench.py --lm on the same model), alternating the two, each in a fresh process, for
--rounds rounds, and prints tokens/s of each, the ratio per round and its median, and peak MB;
--only listops_primal does the same for the ListOps PrimalFormer step, with the GEMM rates:

  /usr/bin/python3 bench/run_model_bench.py --build build --only byte_lm --threads 2 --rounds 3
  /usr/bin/python3 bench/run_model_bench.py --build build --only listops_primal --threads 1
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LISTOPS = ["--width", "64", "--heads", "2", "--layers", "2", "--mlp", "128", "--low-rank", "20",
           "--rank-multi", "10", "--vocab", "20", "--classes", "10"]
# The byte LM of model_bench's case byte_lm.
BYTE_LM = ["--lm", "--kinds", "SOFTMAX,SOFTMAX,SOFTMAX,SOFTMAX,SOFTMAX,PRIMAL", "--batch", "16",
           "--seq", "512", "--width", "256", "--heads", "4", "--mlp", "1024", "--low-rank", "20",
           "--rank-multi", "10", "--vocab", "256", "--lr", "1e-4"]


def last_json(cmd, env=None):
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or ["exit %d" % out.returncode]}
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return [json.loads(l) for l in lines]


# --only CASE: model_bench's case against torch_bench.py on the same model.
PAIRS = {
    "byte_lm": BYTE_LM,
    "listops_primal": ["--attention", "PRIMAL", "--batch", "32", "--seq", "2000"] + LISTOPS,
}


def run_pair(a, bench, env, case):
    """Ours and PyTorch's step for `case`, alternating, R rounds: [(ours, theirs)], or None
    when a side failed."""
    ours_cmd = [bench, "--threads", str(a.threads), "--reps", str(a.reps), "--case", case]
    torch_cmd = ["/usr/bin/python3", os.path.join(HERE, "torch_bench.py"), "--threads",
                 str(a.threads), "--reps", str(a.reps)] + PAIRS[case]
    rounds = []
    for i in range(a.rounds):
        ours = last_json(ours_cmd, env)
        if isinstance(ours, dict):
            print("round %d: model_bench failed: %s" % (i + 1, ours["error"]), file=sys.stderr)
            return None
        peak = ours[0]["sgemm_peak_gflops"]
        ours = dict(ours[-1], sgemm_peak_gflops=peak)
        print(json.dumps(ours), file=sys.stderr)
        theirs = None
        if not a.no_torch:
            theirs = last_json(torch_cmd, env)
            if isinstance(theirs, dict):
                print("round %d: torch_bench.py failed: %s" % (i + 1, theirs["error"]),
                      file=sys.stderr)
                return None
            theirs = theirs[-1]
            print(json.dumps(theirs), file=sys.stderr)
        rounds.append((ours, theirs))
    return rounds


def listops_pair(a, bench, env):
    """The ListOps PrimalFormer step against PyTorch's: time, memory and the GEMM rates."""
    rounds = run_pair(a, bench, env, "listops_primal")
    if rounds is None:
        return 1
    print("ListOps PrimalFormer step (forward + backward): B=32 N=2000, %d thread%s, median of "
          "%d steps per process" % (a.threads, "s" * (a.threads > 1), a.reps))
    print("| round | primal s/step | PyTorch s/step | speed-up | primal peak MB | PyTorch peak MB "
          "| memory ratio | sgemm GFLOP/s | GEMMs' own rate | step's GEMM rate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for i, (o, t) in enumerate(rounds):
        peak = o["sgemm_peak_gflops"]
        r = {"ours": o["median_s"], "torch": t["median_s"] if t else float("nan"),
             "mb": o["peak_mb"], "tmb": t["peak_mb"] if t else float("nan"), "peak": peak,
             "own": o["gemm_own_gflops"] / peak, "step": o["gflops"] / peak}
        r["speedup"], r["memory"] = r["torch"] / r["ours"], r["mb"] / r["tmb"]
        rows.append(r)
        print("| %d | %.3f | %.3f | %.2fx | %.0f | %.0f | %.2f | %.0f | %.0f%% | %.0f%% |" % (
            i + 1, r["ours"], r["torch"], r["speedup"], r["mb"], r["tmb"], r["memory"], peak,
            100 * r["own"], 100 * r["step"]))
    m = lambda k: statistics.median(r[k] for r in rows)
    print("| median | %.3f | %.3f | %.2fx | %.0f | %.0f | %.2f | %.0f | %.0f%% | %.0f%% |" % (
        m("ours"), m("torch"), m("speedup"), m("mb"), m("tmb"), m("memory"), m("peak"),
        100 * m("own"), 100 * m("step")))
    print("\nGEMMs' own rate: their FLOPs over the thread-seconds they took, per thread (one extra "
          "step, timed apart); step's: the same FLOPs over the step's time; both against the "
          "2048^3 sgemm rate of that process.")
    return 0


def byte_lm_pair(a, bench, env):
    """Ours and PyTorch's byte LM step, alternating, R rounds; returns 0 or 1 (a side failed)."""
    rounds = run_pair(a, bench, env, "byte_lm")
    if rounds is None:
        return 1
    o0 = rounds[0][0]
    print("byte LM training step (forward + backward + AdamW): B=%d N=%d, %s, %d thread%s, "
          "median of %d steps per process" % (o0["B"], o0["N"], o0["attention"], a.threads,
                                              "s" * (a.threads > 1), a.reps))
    # tokens/s from each process's median step; "best" from its fastest step (less exposed to
    # other load on the machine, which slows single steps).
    print("| round | primal tokens/s | PyTorch tokens/s | ratio | ratio of best steps "
          "| primal peak MB | PyTorch peak MB |")
    print("|---|---|---|---|---|---|---|")
    ratios, best = [], []
    for i, (o, t) in enumerate(rounds):
        if t is None:
            print("| %d | %.0f | | | | %.0f | |" % (i + 1, o["tokens_per_s"], o["peak_mb"]))
            continue
        ratios.append(o["tokens_per_s"] / t["tokens_per_s"])
        best.append(t["min_s"] / o["min_s"])
        print("| %d | %.0f | %.0f | %.2fx | %.2fx | %.0f | %.0f |" % (
            i + 1, o["tokens_per_s"], t["tokens_per_s"], ratios[-1], best[-1], o["peak_mb"],
            t["peak_mb"]))
    med = lambda key, side: statistics.median(r[side][key] for r in rounds)
    if ratios:
        print("| median | %.0f | %.0f | %.2fx | %.2fx | %.0f | %.0f |" % (
            med("tokens_per_s", 0), med("tokens_per_s", 1), statistics.median(ratios),
            statistics.median(best), med("peak_mb", 0), med("peak_mb", 1)))
        print("\nloss at init: primal %.4f (CE %.4f), PyTorch %.4f (CE %.4f); ln(256) = %.4f" % (
            o0["loss_init"], o0["ce_init"], rounds[0][1]["loss_init"], rounds[0][1]["ce_init"],
            math.log(256)))
        print("BLAS mapped: primal %s; PyTorch %s" % (
            sorted({r[0].get("blas", "?") for r in rounds}),
            sorted({r[1].get("blas", "?") for r in rounds})))
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--only", choices=sorted(PAIRS), help="just this pair, side by side")
    p.add_argument("--rounds", type=int, default=3, help="--only: alternating rounds")
    a = p.parse_args()
    bench = os.path.join(a.build, "bench", "model_bench")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
    if a.only == "byte_lm":
        return byte_lm_pair(a, bench, env)
    if a.only == "listops_primal":
        return listops_pair(a, bench, env)
    # byte_lm (a training step, not a forward+backward) has its own pair: --only byte_lm.
    cases = [c for c in subprocess.run([bench, "--list"], stdout=subprocess.PIPE, text=True,
                                       check=True).stdout.split() if c != "byte_lm"]
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
    sys.exit(main())
