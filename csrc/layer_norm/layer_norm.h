// The registered add_layer_norm ops (bindings.cpp): CUDA implementations, Meta twins for tracing (seed and offset as
// SymInts: torch.compile traces them symbolic when the seeds are drawn inside the graph), and CPU
// implementations that check the arguments and then refuse (the kernels are GPU-only).
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace semvlp {

using TensorFour = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using TensorFive = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// x, residual: (rows, hidden); weight, bias, x_bias: (hidden,) of any float dtype.
// -> (out like x, prenorm_sum like x or shape (0,), rstd (rows,) fp32, dropout_mask (rows, hidden) bool or
//     shape (0,)).  The backward recomputes the mean from prenorm_sum.
#define SEMVLP_LAYER_NORM_FWD_ARGS(Seed)                                                                    \
  const at::Tensor &x, const std::optional<at::Tensor> &residual, const std::optional<at::Tensor> &weight,  \
      const std::optional<at::Tensor> &bias, const std::optional<at::Tensor> &x_bias, double dropout_p,     \
      double eps, Seed seed, Seed offset, bool store_prenorm_sum, bool return_dropout_mask
TensorFour add_layer_norm_fwd_cuda(SEMVLP_LAYER_NORM_FWD_ARGS(int64_t));
TensorFour add_layer_norm_fwd_meta(SEMVLP_LAYER_NORM_FWD_ARGS(c10::SymInt));
TensorFour add_layer_norm_fwd_cpu(SEMVLP_LAYER_NORM_FWD_ARGS(int64_t));
#undef SEMVLP_LAYER_NORM_FWD_ARGS

// -> (dx like dout, dresidual like dout or (0,), dweight, dbias, dx_bias: (hidden,) fp32 or (0,)).
#define SEMVLP_LAYER_NORM_BWD_ARGS(Seed)                                                                    \
  const at::Tensor &dout, const std::optional<at::Tensor> &dprenorm_sum, const at::Tensor &prenorm_sum,     \
      const std::optional<at::Tensor> &weight, const at::Tensor &rstd, double dropout_p, Seed seed,         \
      Seed offset, bool has_residual, bool has_bias, bool has_x_bias
TensorFive add_layer_norm_bwd_cuda(SEMVLP_LAYER_NORM_BWD_ARGS(int64_t));
TensorFive add_layer_norm_bwd_meta(SEMVLP_LAYER_NORM_BWD_ARGS(c10::SymInt));
TensorFive add_layer_norm_bwd_cpu(SEMVLP_LAYER_NORM_BWD_ARGS(int64_t));
#undef SEMVLP_LAYER_NORM_BWD_ARGS

}  // namespace semvlp
