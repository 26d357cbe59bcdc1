#include "model/ksvd_loss.h"

namespace primal {

void divide_shared_ksvd_sums(std::span<double> sums, int parameter_copies, int token_copies) {
  if (parameter_copies > 1) {
    for (size_t l = 2; l + 1 < sums.size(); l += 3) sums[l] /= parameter_copies;
  }
  if (token_copies > 1) sums.back() /= token_copies;
}

void ksvd_loss(std::span<const KsvdPartial> partials, double tokens, int heads, double eta,
               KsvdLoss& out) {
  out.value = 0;
  out.terms.clear();
  out.grads.clear();
  const double layers = double(partials.size());
  for (const KsvdPartial& p : partials) {
    const double e = p.e / (heads * tokens), r = p.r / (heads * tokens), t = p.t / heads;
    const double gap = e + r - t;
    out.terms.push_back(gap * gap);
    out.value += gap * gap / layers;
    // d(eta/#layers gap^2)/d gap = 2 eta gap / #layers; then d gap / d partial sums.
    const double dgap = 2 * eta * gap / layers;
    out.grads.push_back({dgap / (heads * tokens), -dgap / heads});
  }
}

}  // namespace primal
