// The KSVD regulariser (SPEC §3.4). Per PRIMAL layer l:
//   E_l = e-sum / (H tokens),  R_l = r-sum / (H tokens),  T_l = t-sum / H
//   J_l = (E_l + R_l - T_l)^2,   KSVD = mean_l J_l,   loss = CE + eta KSVD
// Its inputs are partial sums so that ranks holding other heads or other samples can add
// theirs (one small all-reduce) before J is formed; the backward needs the global J.
#pragma once

#include <span>
#include <vector>

#include "model/attention.h"

namespace primal {

struct KsvdLoss {
  double value = 0;             // KSVD
  std::vector<double> terms;    // J_l per PRIMAL layer
  std::vector<KsvdGrad> grads;  // d (eta KSVD) / d partial sums, per PRIMAL layer
};

// The partial sums travel between ranks as one flat vector (Transformer::reduce_ksvd): [e-sum,
// r-sum, t-sum] per PRIMAL layer, then the token count. After summing it over ranks, divides
// back what several of them added alike: the t-sums (they depend on the parameters only) by
// `parameter_copies`, the ranks that hold the same heads (DP ranks), and the token count by
// `token_copies`, the ranks that see the same tokens (TP ranks).
void divide_shared_ksvd_sums(std::span<double> sums, int parameter_copies, int token_copies);

// partials: summed over every rank that shares the loss; tokens: real tokens they cover.
// Writes into out, reusing its vectors' storage (no allocation once they have grown).
void ksvd_loss(std::span<const KsvdPartial> partials, double tokens, int heads, double eta,
               KsvdLoss& out);

}  // namespace primal
