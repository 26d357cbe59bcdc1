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

// partials: summed over every rank that shares the loss; tokens: real tokens they cover.
// Writes into out, reusing its vectors' storage (no allocation once they have grown).
void ksvd_loss(std::span<const KsvdPartial> partials, double tokens, int heads, double eta,
               KsvdLoss& out);

}  // namespace primal
