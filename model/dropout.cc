#include "model/dropout.h"

#include "core/random.h"

#include "core/parallel.h"

namespace primal {

template <typename T>
void dropout_inplace(const Tensor<T>& x, double p, const Sequence& seq, int layer,
                     DropoutSite site) {
  if (p <= 0 || !seq.training) return;
  const uint64_t stream = (uint64_t(seq.step) << 24) ^ (uint64_t(layer) << 4) ^ uint64_t(site);
  const CounterRng rng(seq.seed ^ 0xD0D0D0D0ull, stream);
  const int64_t per_sample = x.numel() / seq.B;
  const int64_t first = seq.sample_offset * per_sample;
  const float keep_below = float(p);
  const T scale = T(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static) if (x.numel() > kParallelGrain)
  for (int64_t i = 0; i < x.numel(); ++i) {
    x[i] = rng.uniform_f32(uint64_t(first + i)) >= keep_below ? x[i] * scale : T(0);
  }
}

template void dropout_inplace<float>(const Tensor<float>&, double, const Sequence&, int,
                                     DropoutSite);
template void dropout_inplace<double>(const Tensor<double>&, double, const Sequence&, int,
                                      DropoutSite);

}  // namespace primal
