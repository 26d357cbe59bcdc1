#!/usr/bin/python3
"""Independent PyTorch reference for the primal model (SPEC.md sections 3 and 4).

Usage:  /usr/bin/python3 tests/reference/primal_reference.py DUMP_DIR

DUMP_DIR is written by the C++ side and holds config.json, tensors.json,
params.bin, grads.bin, batch.json and results.json.  This script rebuilds the
model in PyTorch from the specification (plain torch ops, autograd for the
gradients), runs the batch in float32 (and, for information, in float64),
and compares CE, KSVD, the total loss and every parameter gradient with the
C++ values.

Relative error:
  scalars : |cpp - ref| / max(|ref|, 1e-12)
  tensors : max|g_cpp - g_ref| / max(max|g_ref|, 1e-12)   (per tensor)
Pass: every relative error (C++ fp32 vs torch fp32) < 1e-4.

Exit status: 0 all pass, 1 some check failed (or the dump is malformed),
77 torch cannot be imported.

Definitions taken from SPEC.md plus the project's clarifications:
  * lm head: causal; SOFTMAX layers use a causal mask, PRIMAL layers the
    causal form (prefix means, We/Wr [H, d, s] parameters); logits tied to
    embed.tok.weight; CE = mean over all B*N positions.
  * classifier head: non-causal; SOFTMAX layers mask padded keys, PRIMAL
    layers use the encoder form (We/Wr [H, L, s], L = min(max_len, s*m),
    sampling idx_l = floor(l*(n_b-1)/(L-1)) over the sample's real length
    n_b, CLS included when present; idx = [0] if L == 1).  Every attention
    output and the final normed x are zeroed at padded positions; E and R
    average over real tokens only.
  * pooling CLS prepends embed.cls at position 0 (sequence N+1, real length
    n_b+1).  MEAN pools over real positions.
  * phi(v) = v / max(||v||, 1e-12) per head per token; T_l = (1/H) sum We*Wr;
    J_l = (E_l + R_l - T_l)^2; KSVD = mean over PRIMAL layers (0 if none);
    loss = CE + eta * KSVD.
"""

import json
import math
import os
import sys

THRESHOLD = 1e-4
SKIP_EXIT = 77

try:
    import torch
    import torch.nn.functional as F
    import numpy as np
    TORCH_IMPORT_ERROR = None
except Exception as exc:  # noqa: BLE001 - any import problem means "skip"
    TORCH_IMPORT_ERROR = "%s: %s" % (type(exc).__name__, exc)


def skipped_line():
    return ("SKIPPED: torch cannot be imported under /usr/bin/python3: %s"
            % TORCH_IMPORT_ERROR)


class DumpError(Exception):
    """The dump directory is missing something or is inconsistent."""


# --------------------------------------------------------------------------
# Loading the dump
# --------------------------------------------------------------------------

def _read_json(dump_dir, name):
    path = os.path.join(dump_dir, name)
    try:
        with open(path, "r") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise DumpError("cannot read %s: %s" % (path, exc))


def _read_bin(dump_dir, name, index):
    path = os.path.join(dump_dir, name)
    try:
        flat = np.fromfile(path, dtype="<f4")
    except OSError as exc:
        raise DumpError("cannot read %s: %s" % (path, exc))
    out = {}
    for entry in index:
        shape = [int(v) for v in entry["shape"]]
        numel = int(np.prod(shape)) if shape else 1
        off = int(entry["offset"])
        if off < 0 or off + numel > flat.size:
            raise DumpError("%s: tensor %s [offset %d, %d elements] lies outside "
                            "the file (%d floats)" % (path, entry["name"], off,
                                                      numel, flat.size))
        out[entry["name"]] = flat[off:off + numel].reshape(shape).astype(np.float64)
    return out


def load_dump(dump_dir):
    cfg = _read_json(dump_dir, "config.json")
    index = _read_json(dump_dir, "tensors.json")
    batch = _read_json(dump_dir, "batch.json")
    results = _read_json(dump_dir, "results.json")
    params = _read_bin(dump_dir, "params.bin", index)
    grads = _read_bin(dump_dir, "grads.bin", index)
    return cfg, params, grads, batch, results


# --------------------------------------------------------------------------
# Expected parameters (SPEC section 4)
# --------------------------------------------------------------------------

def sampled_length(cfg):
    return min(int(cfg["max_len"]), int(cfg["low_rank"]) * int(cfg["rank_multi"]))


def uses_cls(cfg):
    return cfg["head"] == "classifier" and cfg.get("pooling", "MEAN") == "CLS"


def expected_shapes(cfg):
    C, H, F_, V = int(cfg["width"]), int(cfg["heads"]), int(cfg["mlp_width"]), int(cfg.get("vocab", 0))
    d = C // H
    s = int(cfg["low_rank"])
    causal = cfg["head"] == "lm"
    shapes = {}
    if cfg["input"] == "tokens":
        shapes["embed.tok.weight"] = [V, C]
    else:
        shapes["embed.patch.weight"] = [C, int(cfg["patch_dim"])]
        shapes["embed.patch.bias"] = [C]
    if uses_cls(cfg):
        shapes["embed.cls"] = [C]
    shapes["embed.pos.weight"] = [int(cfg["max_len"]), C]
    for i, kind in enumerate(cfg["layers"]):
        p = "layers.%d." % i
        shapes[p + "ln1.weight"] = [C]
        shapes[p + "ln1.bias"] = [C]
        if kind == "SOFTMAX":
            shapes[p + "attn.qkv.weight"] = [3 * C, C]
            shapes[p + "attn.qkv.bias"] = [3 * C]
        elif kind == "PRIMAL":
            rows = d if causal else sampled_length(cfg)
            shapes[p + "attn.qk.weight"] = [2 * C, C]
            shapes[p + "attn.qk.bias"] = [2 * C]
            shapes[p + "attn.we"] = [H, rows, s]
            shapes[p + "attn.wr"] = [H, rows, s]
            shapes[p + "attn.lambda"] = [H, s]
            shapes[p + "attn.concat.weight"] = [d, 2 * s]
            shapes[p + "attn.concat.bias"] = [d]
        else:
            raise DumpError("config.json: layers[%d] = %r is neither SOFTMAX nor PRIMAL"
                            % (i, kind))
        shapes[p + "attn.proj.weight"] = [C, C]
        shapes[p + "attn.proj.bias"] = [C]
        shapes[p + "ln2.weight"] = [C]
        shapes[p + "ln2.bias"] = [C]
        shapes[p + "mlp.fc1.weight"] = [F_, C]
        shapes[p + "mlp.fc1.bias"] = [F_]
        shapes[p + "mlp.fc2.weight"] = [C, F_]
        shapes[p + "mlp.fc2.bias"] = [C]
    shapes["norm.weight"] = [C]
    shapes["norm.bias"] = [C]
    if cfg["head"] == "classifier":
        Fh, K = int(cfg["head_width"]), int(cfg["num_classes"])
        shapes["head.fc1.weight"] = [Fh, C]
        shapes["head.fc1.bias"] = [Fh]
        shapes["head.fc2.weight"] = [K, Fh]
        shapes["head.fc2.bias"] = [K]
    return shapes


def check_names(cfg, params):
    """Returns a list of problems (missing / unexpected / wrongly shaped)."""
    want = expected_shapes(cfg)
    problems = []
    for name, shape in want.items():
        if name not in params:
            problems.append("missing tensor %s %s" % (name, shape))
        elif list(params[name].shape) != shape:
            problems.append("tensor %s has shape %s, expected %s"
                            % (name, list(params[name].shape), shape))
    for name in params:
        if name not in want:
            problems.append("unexpected tensor %s %s" % (name, list(params[name].shape)))
    return problems


# --------------------------------------------------------------------------
# The model (SPEC section 3)
# --------------------------------------------------------------------------

def linear(x, P, prefix):
    return x @ P[prefix + ".weight"].t() + P[prefix + ".bias"]


def layer_norm(x, P, prefix, eps):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * P[prefix + ".weight"] + P[prefix + ".bias"]


def gelu(x):
    # exact erf form
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def phi(v):
    # v / max(||v||_2, 1e-12) over the last axis (one head, one token)
    norm = torch.sqrt((v * v).sum(dim=-1, keepdim=True))
    return v / torch.clamp(norm, min=1e-12)


def split_heads(t, H):
    # [B, n, C] -> [B, H, n, d], channel h*d + j
    B, n, C = t.shape
    return t.reshape(B, n, H, C // H).transpose(1, 2)


def merge_heads(t):
    # [B, H, n, d] -> [B, n, H*d]
    B, H, n, d = t.shape
    return t.transpose(1, 2).reshape(B, n, H * d)


def softmax_attention(x, P, p, H, causal, real):
    B, n, C = x.shape
    d = C // H
    qkv = linear(x, P, p + "attn.qkv")
    q = split_heads(qkv[..., 0:C], H)
    k = split_heads(qkv[..., C:2 * C], H)
    v = split_heads(qkv[..., 2 * C:3 * C], H)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)          # [B, H, n, n]
    if causal:
        allowed = torch.tril(torch.ones(n, n, dtype=torch.bool))[None, None]
    else:
        allowed = real[:, None, None, :]                         # padded keys excluded
    scores = scores.masked_fill(~allowed, float("-inf"))
    A = torch.softmax(scores, dim=-1)
    o = merge_heads(A @ v)
    return linear(o, P, p + "attn.proj")


def sample_indices(n_b, L):
    if L == 1:
        return [0]
    return [(l * (n_b - 1)) // (L - 1) for l in range(L)]


def primal_attention(x, P, p, H, causal, real, n_real):
    """Returns (out, E_sum, R_sum, T): E_sum/R_sum are the sums over real
    tokens and heads of 0.5*sum_i (e*Lambda)^2, not yet divided."""
    B, n, C = x.shape
    d = C // H
    We, Wr = P[p + "attn.we"], P[p + "attn.wr"]
    Lam = P[p + "attn.lambda"]                                   # [H, s]
    qk = linear(x, P, p + "attn.qk")
    q = split_heads(qk[..., 0:C], H)                             # [B, H, n, d]
    k = split_heads(qk[..., C:2 * C], H)
    if causal:
        count = torch.arange(1, n + 1, dtype=x.dtype)[None, None, :, None]
        qbar = torch.cumsum(q, dim=2) / count
        kbar = torch.cumsum(k, dim=2) / count
        e = torch.einsum("bhnd,hds->bhns", phi(qbar), We)
        r = torch.einsum("bhnd,hds->bhns", phi(kbar), Wr)
    else:
        L = We.shape[1]
        we_list, wr_list = [], []
        for b in range(B):
            idx = torch.tensor(sample_indices(n_real[b], L), dtype=torch.long)
            Xs = split_heads(x[b:b + 1, idx, :], H)[0].transpose(1, 2)   # [H, d, L]
            we_list.append(Xs @ We)                                      # [H, d, s]
            wr_list.append(Xs @ Wr)
        we = torch.stack(we_list)                                        # [B, H, d, s]
        wr = torch.stack(wr_list)
        e = torch.einsum("bhnd,bhds->bhns", phi(q), we)
        r = torch.einsum("bhnd,bhds->bhns", phi(k), wr)
    o = torch.cat([e, r], dim=-1) @ P[p + "attn.concat.weight"].t() + P[p + "attn.concat.bias"]
    out = linear(merge_heads(o), P, p + "attn.proj")
    w = real[:, None, :].to(x.dtype)                             # [B, 1, n]
    E_sum = ((0.5 * ((e * Lam[None, :, None, :]) ** 2).sum(-1)) * w).sum()
    R_sum = ((0.5 * ((r * Lam[None, :, None, :]) ** 2).sum(-1)) * w).sum()
    T = (We * Wr).sum() / H
    return out, E_sum, R_sum, T


def forward(cfg, P, batch):
    """P: dict name -> tensor (one dtype).  Returns (loss, ce, ksvd)."""
    dtype = P["norm.weight"].dtype
    C, H = int(cfg["width"]), int(cfg["heads"])
    eps = float(cfg["ln_eps"])
    eta = float(cfg["eta"])
    causal = cfg["head"] == "lm"
    B, N = int(batch["B"]), int(batch["N"])

    # ---- input embedding
    if cfg["input"] == "tokens":
        tokens = torch.tensor(batch["tokens"], dtype=torch.long).reshape(B, N)
        x = P["embed.tok.weight"][tokens]
    else:
        patches = torch.tensor(batch["patches"], dtype=dtype).reshape(B, N, int(cfg["patch_dim"]))
        x = linear(patches, P, "embed.patch")
    if causal:
        lengths = [N] * B
    else:
        lengths = [int(v) for v in batch["lengths"]]
    if uses_cls(cfg):
        x = torch.cat([P["embed.cls"].reshape(1, 1, C).expand(B, 1, C), x], dim=1)
        lengths = [v + 1 for v in lengths]
    n = x.shape[1]
    x = x + P["embed.pos.weight"][0:n]
    real = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]      # [B, n] bool
    keep = real[:, :, None].to(dtype)

    # ---- layers
    J = []
    for i, kind in enumerate(cfg["layers"]):
        p = "layers.%d." % i
        h = layer_norm(x, P, p + "ln1", eps)
        if kind == "SOFTMAX":
            a = softmax_attention(h, P, p, H, causal, real)
        else:
            a, E_sum, R_sum, T = primal_attention(h, P, p, H, causal, real, lengths)
            count = H * sum(lengths)
            E, R = E_sum / count, R_sum / count
            J.append((E + R - T) ** 2)
        if not causal:
            a = a * keep
        x = x + a
        x = x + linear(gelu(linear(layer_norm(x, P, p + "ln2", eps), P, p + "mlp.fc1")), P, p + "mlp.fc2")
    x = layer_norm(x, P, "norm", eps)

    # ---- head
    if causal:
        logits = x @ P["embed.tok.weight"].t()                             # [B, N, V]
        targets = torch.tensor(batch["targets"], dtype=torch.long).reshape(B, N)
        ce = F.cross_entropy(logits.reshape(B * N, -1), targets.reshape(B * N))
    else:
        x = x * keep
        if cfg.get("pooling", "MEAN") == "CLS":
            pooled = x[:, 0]
        else:
            pooled = x.sum(dim=1) / torch.tensor(lengths, dtype=dtype)[:, None]
        logits = linear(torch.relu(linear(pooled, P, "head.fc1")), P, "head.fc2")
        targets = torch.tensor(batch["targets"], dtype=torch.long).reshape(B)
        ce = F.cross_entropy(logits, targets)

    ksvd = torch.stack(J).mean() if J else torch.zeros((), dtype=dtype)
    loss = ce + eta * ksvd
    return loss, ce, ksvd


def run_reference(cfg, params, batch, dtype):
    """params: dict name -> numpy array.  Returns (values dict, grads dict)
    computed in `dtype`: values has loss, ce, ksvd as floats."""
    P = {name: torch.tensor(arr, dtype=dtype, requires_grad=True) for name, arr in params.items()}
    loss, ce, ksvd = forward(cfg, P, batch)
    loss.backward()
    values = {"loss": loss.item(), "ce": ce.item(), "ksvd": ksvd.item()}
    grads = {}
    for name, t in P.items():
        g = t.grad if t.grad is not None else torch.zeros_like(t)
        grads[name] = g.detach().to(torch.float64).numpy()
    return values, grads


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------

def scalar_rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def tensor_diff(g, ref):
    """(max abs diff, normwise relative error) of g against ref."""
    if g.size == 0:
        return 0.0, 0.0
    diff = float(np.max(np.abs(g - ref)))
    scale = max(float(np.max(np.abs(ref))), 1e-12)
    return diff, diff / scale


def _passes(rel):
    return bool(np.isfinite(rel)) and rel < THRESHOLD


def compare_dump(dump_dir, out=sys.stdout, with_fp64=True):
    """Compares one dump.  Returns a dict: ok (bool), rows (list), worst_rel,
    failures (list of names), error (str or None).  Prints the report."""
    result = {"dump": dump_dir, "ok": False, "rows": [], "worst_rel": float("nan"),
              "failures": [], "error": None}
    try:
        cfg, params, grads, batch, results = load_dump(dump_dir)
        problems = check_names(cfg, params)
        if problems:
            raise DumpError("; ".join(problems))
        for key in ("loss", "ce", "ksvd"):
            if key not in results:
                raise DumpError("results.json has no %r" % key)
    except (DumpError, KeyError, TypeError, ValueError) as exc:
        result["error"] = "%s: %s" % (type(exc).__name__, exc)
        print("ERROR %s: %s" % (dump_dir, result["error"]), file=out)
        return result

    vals32, grads32 = run_reference(cfg, params, batch, torch.float32)
    if with_fp64:
        vals64, grads64 = run_reference(cfg, params, batch, torch.float64)

    print("dump: %s  head=%s input=%s layers=%s B=%s N=%s" % (
        dump_dir, cfg["head"], cfg["input"], ",".join(cfg["layers"]), batch["B"], batch["N"]), file=out)
    hdr = "%-36s %14s %14s %11s %11s %11s  %s" % (
        "quantity", "c++", "torch fp32", "max|diff|", "rel fp32", "rel fp64", "status")
    if not with_fp64:
        hdr = "%-36s %14s %14s %11s %11s  %s" % ("quantity", "c++", "torch fp32", "max|diff|", "rel fp32", "status")
    print(hdr, file=out)
    print("-" * len(hdr), file=out)

    rows = []
    for key in ("ce", "ksvd", "loss"):
        cpp = float(results[key])
        ref = vals32[key]
        rel = scalar_rel(cpp, ref)
        row = {"name": key, "cpp": cpp, "ref": ref, "absdiff": abs(cpp - ref), "rel": rel,
               "rel64": scalar_rel(cpp, vals64[key]) if with_fp64 else None,
               "ok": _passes(rel)}
        rows.append(row)
    for name in sorted(grads32):
        g = grads[name]
        absdiff, rel = tensor_diff(g, grads32[name])
        row = {"name": "grad " + name, "cpp": float(np.max(np.abs(g))) if g.size else 0.0,
               "ref": float(np.max(np.abs(grads32[name]))) if g.size else 0.0,
               "absdiff": absdiff, "rel": rel,
               "rel64": tensor_diff(g, grads64[name])[1] if with_fp64 else None,
               "ok": _passes(rel) and bool(np.all(np.isfinite(g)))}
        rows.append(row)

    for row in rows:
        status = "ok" if row["ok"] else "FAIL"
        if with_fp64:
            print("%-36s %14.7g %14.7g %11.3e %11.3e %11.3e  %s" % (
                row["name"], row["cpp"], row["ref"], row["absdiff"], row["rel"], row["rel64"], status), file=out)
        else:
            print("%-36s %14.7g %14.7g %11.3e %11.3e  %s" % (
                row["name"], row["cpp"], row["ref"], row["absdiff"], row["rel"], status), file=out)
    print("(gradient rows show max|g| of c++ and of torch fp32; rel = max|g_cpp-g_ref| / max|g_ref|; "
          "threshold %g on rel fp32)" % THRESHOLD, file=out)

    result["rows"] = rows
    result["failures"] = [r["name"] for r in rows if not r["ok"]]
    result["worst_rel"] = max(r["rel"] for r in rows) if rows else 0.0
    result["ok"] = not result["failures"]
    print("%s: %d quantities, worst rel fp32 %.3e, %s" % (
        dump_dir, len(rows), result["worst_rel"],
        "PASS" if result["ok"] else "FAIL (%s)" % ", ".join(result["failures"])), file=out)
    return result


def main(argv):
    if TORCH_IMPORT_ERROR is not None:
        print(skipped_line())
        return SKIP_EXIT
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: %s DUMP_DIR" % argv[0], file=sys.stderr)
        return 1 if len(argv) != 2 else 0
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    result = compare_dump(argv[1])
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
