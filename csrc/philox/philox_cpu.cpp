#include "philox_cpu.h"

#include <ATen/ops/empty.h>

#include "../common/checks.h"
#include "../common/philox.h"

namespace semvlp {

at::Tensor philox_uniform_cpu(int64_t seed, int64_t offset, const at::Tensor& c0_in, const at::Tensor& c1_in) {
  constexpr const char* op = "semvlp::cuda_philox_uniform_cpu";
  TORCH_CHECK_VALUE(seed >= 0, op, ": seed: expected a non-negative int, got ", seed);
  TORCH_CHECK_VALUE(offset >= 0 && offset < (int64_t{1} << 32), op, ": offset: expected 0 <= offset < 2**32, got ",
                    offset);
  checks::dtype_in(c0_in, "c0", {at::kLong});
  checks::dtype_in(c1_in, "c1", {at::kLong});
  checks::same_shape(c1_in, "c1", c0_in, "c0");
  TORCH_CHECK_VALUE(c0_in.device().is_cpu() && c1_in.device().is_cpu(), op, ": c0/c1: expected CPU tensors");
  const at::Tensor c0 = c0_in.contiguous();
  const at::Tensor c1 = c1_in.contiguous();
  at::Tensor out = at::empty(c0.sizes(), c0.options().dtype(at::kFloat));
  const int64_t* c0_data = c0.data_ptr<int64_t>();
  const int64_t* c1_data = c1.data_ptr<int64_t>();
  float* out_data = out.data_ptr<float>();
  for (int64_t i = 0; i < c0.numel(); ++i) {
    TORCH_CHECK_VALUE(c0_data[i] >= 0 && c0_data[i] < (int64_t{1} << 32) && c1_data[i] >= 0 &&
                          c1_data[i] < (int64_t{1} << 32),
                      op, ": c0/c1: expected values in [0, 2**32), got (", c0_data[i], ", ", c1_data[i], ")");
    out_data[i] = philox_uniform(static_cast<uint64_t>(seed), static_cast<uint32_t>(offset),
                                 static_cast<uint32_t>(c0_data[i]), static_cast<uint32_t>(c1_data[i]));
  }
  return out;
}

}  // namespace semvlp
