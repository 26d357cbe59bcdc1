#!/usr/bin/python3
"""PyTorch speed/memory baseline of the Primal-Attention classifier (SPEC.md 3.2, 3.4) and of
the causal language model (SPEC.md 3, 3.1, 3.3, 3.4).

  /usr/bin/python3 bench/torch_bench.py --attention PRIMAL|SOFTMAX --batch B --seq N \
      --width C --heads H --layers NL --mlp F --low-rank s --rank-multi m --vocab V \
      --classes K --threads T --reps R [--adamw] [--head-width Fh] [--max-len N_max]

  /usr/bin/python3 bench/torch_bench.py --lm \
      --kinds SOFTMAX,SOFTMAX,SOFTMAX,SOFTMAX,SOFTMAX,PRIMAL --batch 16 --seq 512 \
      --width 256 --heads 4 --mlp 1024 --vocab 256 --threads T --reps R

The model is written vectorised, the way the paper's own code is (batched matmul/einsum
over batch and heads, no Python loops over batch, heads or tokens), fp32, dropout 0:
token embedding + learned positions, Pre-LN layers (LN1 -> attention -> residual;
LN2 -> fc1/GELU(erf)/fc2 -> residual), final LN, MEAN pooling (no padding), head
fc1 -> ReLU -> fc2, loss = CE + eta * KSVD (eta 0.05).  Parameter names follow SPEC 4.

--lm: the byte/token LM of SPEC 3 instead (the case byte_lm of bench/model_bench.cc): one
attention kind per layer (--kinds), causal softmax attention (explicit masked softmax),
the causal Primal form of SPEC 3.3 (prefix means by cumsum, We/Wr [H, d, s] parameters),
the KSVD loss of SPEC 3.4, final LN, logits = x tok_emb^T (tied), mean CE over all B*N
positions.  Every step is a training step: AdamW (lr --lr, weight decay 0.01 on the
parameters that decay in our trainer: Linear weights, embeddings, We, Wr; not on biases,
LayerNorm or Lambda), no gradient clipping.

One warm-up step, then R timed steps of forward + loss + backward (+ AdamW step with
--adamw).  Peak memory = VmHWM at the end minus VmRSS just before the first (warm-up)
step; the high-water mark is reset there (/proc/self/clear_refs) when the kernel allows,
so transient peaks of imports and model construction do not count.  Run each
configuration in a fresh process.  Prints ONE JSON line on stdout.

torch is only importable under Debian's /usr/bin/python3 (python3-torch).  Thread
counts: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS are set to T before
torch (and so the BLAS) is loaded, and torch.set_num_threads(T) after; a different
OMP_NUM_THREADS in the environment is overridden with a warning on stderr.
"""

import argparse
import json
import math
import os
import re
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lm", action="store_true", help="the causal LM (SPEC 3.3) with AdamW")
    p.add_argument("--kinds", default="", help="--lm: comma-separated SOFTMAX|PRIMAL per layer")
    p.add_argument("--attention", choices=["PRIMAL", "SOFTMAX"])
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--layers", type=int)
    p.add_argument("--mlp", type=int, required=True)
    p.add_argument("--low-rank", type=int, default=20)
    p.add_argument("--rank-multi", type=int, default=10)
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--classes", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--adamw", action="store_true")
    p.add_argument("--head-width", type=int, default=128, help="Fh (default 128, as bench/model_bench.cc)")
    p.add_argument("--max-len", type=int, default=0, help="N_max, rows of the position table (default N)")
    p.add_argument("--eta", type=float, default=0.05)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if a.max_len <= 0:
        a.max_len = a.seq
    problems = []
    if a.lm:
        a.kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
        bad = [k for k in a.kinds if k not in ("PRIMAL", "SOFTMAX")]
        if not a.kinds or bad:
            problems.append("--lm needs --kinds, a comma-separated list of SOFTMAX|PRIMAL")
        if a.layers is None:
            a.layers = len(a.kinds)
        elif a.layers != len(a.kinds):
            problems.append("--layers %d but %d --kinds" % (a.layers, len(a.kinds)))
        if a.classes is None:
            a.classes = 1  # unused
        a.adamw = True
    else:
        for name in ("attention", "layers", "classes"):
            if getattr(a, name) is None:
                problems.append("--%s is required (or --lm)" % name)
    if problems:
        p.error("; ".join(problems))
    for name in ("batch", "seq", "width", "heads", "layers", "mlp", "low_rank", "rank_multi",
                 "vocab", "classes", "threads", "reps", "head_width"):
        if getattr(a, name) < 1:
            problems.append("--%s must be >= 1" % name.replace("_", "-"))
    if a.width % max(a.heads, 1):
        problems.append("--width %d is not a multiple of --heads %d" % (a.width, a.heads))
    if a.max_len < a.seq:
        problems.append("--max-len %d < --seq %d" % (a.max_len, a.seq))
    if problems:
        p.error("; ".join(problems))
    return a


def set_thread_env(T):
    """Must run before torch is imported: OpenBLAS reads these when it is loaded."""
    old = os.environ.get("OMP_NUM_THREADS")
    if old is not None and old != str(T):
        print("torch_bench: warning: OMP_NUM_THREADS=%s in the environment, overridden by "
              "--threads %d" % (old, T), file=sys.stderr)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(T)


ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None:
    set_thread_env(ARGS.threads)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

class SoftmaxAttention(nn.Module):
    def __init__(self, C, H, causal=False):
        super().__init__()
        self.H, self.d, self.causal = H, C // H, causal
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self._mask = {}

    def future(self, N):
        """[N, N] bool, True above the diagonal: the keys j > n that query n must not see."""
        m = self._mask.get(N)
        if m is None:
            m = self._mask[N] = torch.ones(N, N, dtype=torch.bool).triu_(1)
        return m

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.H, self.d).permute(2, 0, 3, 1, 4)  # [3,B,H,N,d]
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d))  # [B,H,N,N]
        if self.causal:  # in place: the product's backward does not need it
            scores.masked_fill_(self.future(N), float("-inf"))
        o = torch.matmul(torch.softmax(scores, dim=-1), v)                         # [B,H,N,d]
        return self.proj(o.transpose(1, 2).reshape(B, N, C)), None


class PrimalAttention(nn.Module):
    """Encoder (data-dependent) form, SPEC 3.2."""

    def __init__(self, C, H, L, s):
        super().__init__()
        self.H, self.d, self.L, self.s = H, C // H, L, s
        self.qk = nn.Linear(C, 2 * C)
        self.we = nn.Parameter(torch.empty(H, L, s))
        self.wr = nn.Parameter(torch.empty(H, L, s))
        self.register_parameter("lambda", nn.Parameter(torch.empty(H, s)))
        self.concat = nn.Linear(2 * s, self.d)
        self.proj = nn.Linear(C, C)
        self._idx = {}

    def indices(self, N):
        idx = self._idx.get(N)
        if idx is None:
            L = self.L
            idx = (torch.zeros(1, dtype=torch.long) if L == 1 else
                   torch.div(torch.arange(L, dtype=torch.long) * (N - 1), L - 1, rounding_mode="floor"))
            self._idx[N] = idx
        return idx

    @staticmethod
    def phi(v):
        return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def forward(self, x):
        B, N, C = x.shape
        H, d = self.H, self.d
        qk = self.qk(x).view(B, N, 2, H, d).permute(2, 0, 3, 1, 4)    # [2,B,H,N,d]
        q, k = self.phi(qk[0]), self.phi(qk[1])
        xs = x[:, self.indices(N), :].view(B, self.L, H, d)           # [B,L,H,d]
        we = torch.einsum("blhd,hls->bhds", xs, self.we)              # [B,H,d,s]
        wr = torch.einsum("blhd,hls->bhds", xs, self.wr)
        e = torch.matmul(q, we)                                       # [B,H,N,s]
        r = torch.matmul(k, wr)
        o = self.concat(torch.cat([e, r], dim=-1))                    # [B,H,N,d]
        out = self.proj(o.transpose(1, 2).reshape(B, N, C))
        lam = getattr(self, "lambda")[None, :, None, :]
        count = B * H * N
        E = 0.5 * (e * lam).pow(2).sum() / count
        R = 0.5 * (r * lam).pow(2).sum() / count
        T = (self.we * self.wr).sum() / H
        return out, (E + R - T) ** 2


class CausalPrimalAttention(nn.Module):
    """Causal form, SPEC 3.3: prefix means of q and k, We/Wr [H, d, s] parameters."""

    def __init__(self, C, H, s):
        super().__init__()
        self.H, self.d, self.s = H, C // H, s
        self.qk = nn.Linear(C, 2 * C)
        self.we = nn.Parameter(torch.empty(H, self.d, s))
        self.wr = nn.Parameter(torch.empty(H, self.d, s))
        self.register_parameter("lambda", nn.Parameter(torch.empty(H, s)))
        self.concat = nn.Linear(2 * s, self.d)
        self.proj = nn.Linear(C, C)
        self._count = {}

    def counts(self, N):
        c = self._count.get(N)
        if c is None:  # 1, 2, ..., N as a [N, 1] column: divides the prefix sums
            c = self._count[N] = torch.arange(1, N + 1, dtype=torch.float32).view(N, 1)
        return c

    def forward(self, x):
        B, N, C = x.shape
        H, d = self.H, self.d
        qk = self.qk(x).view(B, N, 2, H, d).permute(2, 0, 3, 1, 4)   # [2,B,H,N,d]
        bar = qk.cumsum(dim=3) / self.counts(N)                       # prefix means qbar, kbar
        u = PrimalAttention.phi(bar)
        e = torch.matmul(u[0], self.we)                               # [B,H,N,d] x [H,d,s]
        r = torch.matmul(u[1], self.wr)                               # -> [B,H,N,s]
        o = self.concat(torch.cat([e, r], dim=-1))                    # [B,H,N,d]
        out = self.proj(o.transpose(1, 2).reshape(B, N, C))
        lam = getattr(self, "lambda")[None, :, None, :]
        count = B * H * N
        E = 0.5 * (e * lam).pow(2).sum() / count
        R = 0.5 * (r * lam).pow(2).sum() / count
        T = (self.we * self.wr).sum() / H
        return out, (E + R - T) ** 2


class Mlp(nn.Module):
    def __init__(self, C, Fw):
        super().__init__()
        self.fc1 = nn.Linear(C, Fw)
        self.fc2 = nn.Linear(Fw, C)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact erf GELU


class Layer(nn.Module):
    def __init__(self, kind, C, H, Fw, L, s, causal=False):
        super().__init__()
        self.ln1 = nn.LayerNorm(C, eps=1e-5)
        if causal:
            self.attn = (CausalPrimalAttention(C, H, s) if kind == "PRIMAL" else
                         SoftmaxAttention(C, H, causal=True))
        else:
            self.attn = PrimalAttention(C, H, L, s) if kind == "PRIMAL" else SoftmaxAttention(C, H)
        self.ln2 = nn.LayerNorm(C, eps=1e-5)
        self.mlp = Mlp(C, Fw)

    def forward(self, x):
        a, j = self.attn(self.ln1(x))
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, j


class Embed(nn.Module):
    def __init__(self, V, C, max_len):
        super().__init__()
        self.tok = nn.Embedding(V, C)
        self.pos = nn.Embedding(max_len, C)


class Head(nn.Module):
    def __init__(self, C, Fh, K):
        super().__init__()
        self.fc1 = nn.Linear(C, Fh)
        self.fc2 = nn.Linear(Fh, K)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@torch.no_grad()
def reset_parameters(model):  # SPEC 3.5 (distributions only; not bit-identical to C++)
    for name, p in model.named_parameters():
        if name.endswith("attn.we") or name.endswith("attn.wr"):
            nn.init.orthogonal_(p.view(p.shape[0], -1))
        elif name.endswith("attn.lambda"):
            nn.init.uniform_(p, 0.0, 1.0)
        elif ".ln" in name or name.startswith("norm."):
            nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.normal_(p, 0.0, 0.02)


def decays(name):
    """Our trainer's decay flags (model/parameters.cc): normal and orthogonal inits decay."""
    return not (name.endswith("bias") or name.endswith("attn.lambda") or ".ln" in name
                or name.startswith("norm."))


def trunk(model, tokens):
    """Embeddings, the layers and the final LayerNorm of either model: (LN_f(x), the mean of
    the PRIMAL layers' KSVD losses, 0 without one)."""
    N = tokens.shape[1]
    x = model.embed.tok(tokens) + model.embed.pos.weight[:N]
    J = []
    for layer in model.layers:
        x, j = layer(x)
        if j is not None:
            J.append(j)
    ksvd = torch.stack(J).mean() if J else torch.zeros((), dtype=x.dtype)
    return model.norm(x), ksvd


class Classifier(nn.Module):
    def __init__(self, kinds, V, C, H, Fw, max_len, s, m, Fh, K, eta):
        super().__init__()
        L = min(max_len, s * m)
        self.eta = eta
        self.embed = Embed(V, C, max_len)
        self.layers = nn.ModuleList([Layer(k, C, H, Fw, L, s) for k in kinds])
        self.norm = nn.LayerNorm(C, eps=1e-5)
        self.head = Head(C, Fh, K)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        reset_parameters(self)

    def forward(self, tokens, targets):
        x, ksvd = trunk(self, tokens)
        ce = F.cross_entropy(self.head(x.mean(dim=1)), targets)
        return ce + self.eta * ksvd, ce, ksvd


class LanguageModel(nn.Module):
    """SPEC 3 with the LM head: causal layers, logits = LN_f(x) tok_emb^T (tied)."""

    def __init__(self, kinds, V, C, H, Fw, max_len, s, m, eta):
        super().__init__()
        L = min(max_len, s * m)  # unused by the causal form
        self.eta = eta
        self.embed = Embed(V, C, max_len)
        self.layers = nn.ModuleList([Layer(k, C, H, Fw, L, s, causal=True) for k in kinds])
        self.norm = nn.LayerNorm(C, eps=1e-5)
        reset_parameters(self)

    def forward(self, tokens, targets):
        B, N = tokens.shape
        x, ksvd = trunk(self, tokens)
        logits = torch.matmul(x, self.embed.tok.weight.t())  # [B,N,V]
        ce = F.cross_entropy(logits.view(B * N, -1), targets.view(B * N))
        return ce + self.eta * ksvd, ce, ksvd


# --------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------

def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_hwm():
    """Resets VmHWM to the current RSS (Linux >= 4.0). Returns whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def blas_path():
    pat = re.compile(r"libblas|openblas|mkl")
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and pat.search(parts[5]):
                return parts[5].strip()
    return None


def blas_threads(path):
    """openblas_get_num_threads() / mkl_get_max_threads() of the mapped BLAS, if exported."""
    if not path:
        return None
    try:
        import ctypes
        lib = ctypes.CDLL(path)
        for fn in ("openblas_get_num_threads", "mkl_get_max_threads"):
            if hasattr(lib, fn):
                return int(getattr(lib, fn)())
    except OSError:
        pass
    return None


def main(a):
    torch.set_num_threads(a.threads)
    if torch.get_num_threads() != a.threads:
        print("torch_bench: warning: torch.get_num_threads() = %d, asked %d"
              % (torch.get_num_threads(), a.threads), file=sys.stderr)
    torch.manual_seed(a.seed)
    if a.lm:
        model = LanguageModel(a.kinds, a.vocab, a.width, a.heads, a.mlp, a.max_len, a.low_rank,
                              a.rank_multi, a.eta)
        # Windows of N+1 tokens of a random stream: inputs the first N, targets the last N.
        window = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
        tokens, targets = window[:, :-1].contiguous(), window[:, 1:].contiguous()
        named = list(model.named_parameters())
        opt = torch.optim.AdamW(
            [{"params": [p for n, p in named if decays(n)], "weight_decay": 0.01},
             {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0}], lr=a.lr)
    else:
        model = Classifier([a.attention] * a.layers, a.vocab, a.width, a.heads, a.mlp, a.max_len,
                           a.low_rank, a.rank_multi, a.head_width, a.classes, a.eta)
        tokens = torch.randint(0, a.vocab, (a.batch, a.seq))
        targets = torch.randint(0, a.classes, (a.batch,))
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr) if a.adamw else None

    def step():
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        else:
            for p in model.parameters():
                p.grad = None
        loss, ce, ksvd = model(tokens, targets)
        loss.backward()
        if opt is not None:
            opt.step()
        return loss.item(), ce.item(), ksvd.item()

    rss_before = status_kb("VmRSS")
    hwm_reset = reset_hwm()
    init = step()  # warm-up (its losses are those at initialisation)
    times = []
    for _ in range(a.reps):
        t = time.perf_counter()
        loss, ce, ksvd = step()
        times.append(time.perf_counter() - t)
    peak_kb = status_kb("VmHWM") - rss_before
    times.sort()
    blas = blas_path()
    out = {
        "impl": "pytorch", "attention": a.attention, "B": a.batch, "N": a.seq,
        "median_s": round(times[len(times) // 2], 4), "min_s": round(times[0], 4),
        "peak_mb": round(peak_kb / 1e3, 1), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "blas": blas,
        # extras
        "C": a.width, "H": a.heads, "layers": a.layers, "F": a.mlp, "s": a.low_rank,
        "m": a.rank_multi, "adamw": a.adamw, "reps": a.reps,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "blas_threads": blas_threads(blas),
        "os_threads": status_kb("Threads"), "rss_before_mb": round(rss_before / 1e3, 1),
        "hwm_reset": hwm_reset, "loss": round(loss, 6), "ce": round(ce, 6), "ksvd": round(ksvd, 6),
    }
    if a.lm:
        median = times[len(times) // 2]
        out.update({
            "case": "byte_lm" if a.vocab == 256 else "lm", "attention": ",".join(a.kinds),
            "tokens_per_s": round(a.batch * a.seq / median, 1), "lr": a.lr,
            "loss_init": round(init[0], 6), "ce_init": round(init[1], 6),
            "ksvd_init": round(init[2], 6)})
    print(json.dumps(out))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
