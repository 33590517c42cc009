// Launchers of the add_layer_norm kernels: argument checks, allocation and launch (no autograd).
#include "layer_norm.h"

#include <cstdint>

#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../common/checks.h"
#include "layer_norm_params.h"

namespace semvlp {

namespace {

constexpr const char* kFwdOp = "semvlp::cuda_add_layer_norm_fwd";
constexpr const char* kBwdOp = "semvlp::cuda_add_layer_norm_bwd";

void check_rows(const char* op, const at::Tensor& x, const char* name) {
  checks::dims(x, name, 2);
  checks::dtype_in(x, name, {at::kFloat, at::kHalf, at::kBFloat16});
  const c10::SymInt hidden = x.sym_size(1);
  TORCH_CHECK_VALUE(hidden >= 1 && hidden <= kLayerNormMaxHidden, op, ": ", name, ": hidden size (dim 1) is ", hidden,
                    ", expected 1 to ", kLayerNormMaxHidden);
  TORCH_CHECK_VALUE(x.sym_size(0) < (int64_t{1} << 31), op, ": ", name, ": more than 2**31 - 1 rows");
}

void check_like_x(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& x, const char* x_name) {
  if (!t) return;
  checks::same_shape(*t, name, x, x_name);
  checks::same_dtype(*t, name, x, x_name);
  checks::same_device(*t, name, x, x_name);
}

void check_vector(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& x) {
  if (!t) return;
  checks::dims(*t, name, 1);
  checks::dtype_in(*t, name, {at::kFloat, at::kHalf, at::kBFloat16, at::kDouble});
  checks::size_is(*t, name, 0, x.sym_size(1), "length, the hidden size of x");
  checks::same_device(*t, name, x, "x");
}

void check_scalars(const char* op, double dropout_p, int64_t seed, int64_t offset) {
  TORCH_CHECK_VALUE(dropout_p >= 0 && dropout_p < 1, op, ": dropout_p: expected a float in [0, 1), got ", dropout_p);
  TORCH_CHECK_VALUE(seed >= 0, op, ": seed: expected a non-negative int, got ", seed);
  TORCH_CHECK_VALUE(offset >= 0 && offset < (int64_t{1} << 32), op, ": offset: expected 0 <= offset < 2**32, got ",
                    offset);
}

void check_fwd(const at::Tensor& x, const std::optional<at::Tensor>& residual, const std::optional<at::Tensor>& weight,
               const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& x_bias, double dropout_p,
               double eps, int64_t seed, int64_t offset) {
  check_rows(kFwdOp, x, "x");
  check_like_x(residual, "residual", x, "x");
  check_vector(weight, "weight", x);
  check_vector(bias, "bias", x);
  check_vector(x_bias, "x_bias", x);
  TORCH_CHECK_VALUE(eps > 0, kFwdOp, ": eps: expected a positive float, got ", eps);
  check_scalars(kFwdOp, dropout_p, seed, offset);
}

void check_bwd(const at::Tensor& dout, const std::optional<at::Tensor>& dprenorm_sum, const at::Tensor& prenorm_sum,
               const std::optional<at::Tensor>& weight, const at::Tensor& rstd, double dropout_p, int64_t seed,
               int64_t offset) {
  check_rows(kBwdOp, dout, "dout");
  check_like_x(prenorm_sum, "prenorm_sum", dout, "dout");
  check_like_x(dprenorm_sum, "dprenorm_sum", dout, "dout");
  check_vector(weight, "weight", dout);
  checks::dims(rstd, "rstd", 1);
  checks::dtype_in(rstd, "rstd", {at::kFloat});
  checks::size_is(rstd, "rstd", 0, dout.sym_size(0), "number of rows of dout");
  checks::same_device(rstd, "rstd", dout, "dout");
  check_scalars(kBwdOp, dropout_p, seed, offset);
}

at::Tensor empty_marker(const at::Tensor& like) { return at::empty({0}, like.options()); }

// Parameters go to the kernels as contiguous fp32 (they are (hidden,) vectors: the copy is negligible).
at::Tensor as_f32(const std::optional<at::Tensor>& t) {
  return t ? t->to(at::kFloat).contiguous() : at::Tensor();
}

template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

LayerNormDtype dtype_of(const at::Tensor& t) {
  if (t.scalar_type() == at::kHalf) return LayerNormDtype::kFloat16;
  if (t.scalar_type() == at::kBFloat16) return LayerNormDtype::kBFloat16;
  return LayerNormDtype::kFloat32;
}

void* current_stream(const at::Tensor& t) {
  return static_cast<void*>(c10::cuda::getCurrentCUDAStream(t.device().index()).stream());
}

}  // namespace

TensorFour add_layer_norm_fwd_meta(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                   const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                   const std::optional<at::Tensor>& x_bias, double dropout_p, double eps,
                                   c10::SymInt seed, c10::SymInt offset, bool store_prenorm_sum,
                                   bool return_dropout_mask) {
  check_fwd(x, residual, weight, bias, x_bias, dropout_p, eps, checks::traced_value(seed),
            checks::traced_value(offset));
  const auto stats = x.options().dtype(at::kFloat);
  return {at::empty_symint(x.sym_sizes(), x.options()),
          store_prenorm_sum ? at::empty_symint(x.sym_sizes(), x.options()) : empty_marker(x),
          at::empty_symint({x.sym_size(0)}, stats),
          return_dropout_mask ? at::empty_symint(x.sym_sizes(), x.options().dtype(at::kBool))
                              : at::empty({0}, x.options().dtype(at::kBool))};
}

TensorFour add_layer_norm_fwd_cpu(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                  const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                  const std::optional<at::Tensor>& x_bias, double dropout_p, double eps, int64_t seed,
                                  int64_t offset, bool store_prenorm_sum, bool return_dropout_mask) {
  check_fwd(x, residual, weight, bias, x_bias, dropout_p, eps, seed, offset);
  checks::on_cuda(x, kFwdOp, "x");
  return {};
}

TensorFour add_layer_norm_fwd_cuda(const at::Tensor& x_in, const std::optional<at::Tensor>& residual_in,
                                   const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                   const std::optional<at::Tensor>& x_bias, double dropout_p, double eps, int64_t seed,
                                   int64_t offset, bool store_prenorm_sum, bool return_dropout_mask) {
  check_fwd(x_in, residual_in, weight, bias, x_bias, dropout_p, eps, seed, offset);
  checks::on_cuda(x_in, kFwdOp, "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor residual = residual_in ? residual_in->contiguous() : at::Tensor();
  const at::Tensor weight32 = as_f32(weight), bias32 = as_f32(bias), x_bias32 = as_f32(x_bias);

  at::Tensor out = at::empty(x.sizes(), x.options());
  at::Tensor prenorm_sum = store_prenorm_sum ? at::empty(x.sizes(), x.options()) : empty_marker(x);
  at::Tensor rstd = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
  const auto bool_options = x.options().dtype(at::kBool);
  at::Tensor mask = !return_dropout_mask ? at::empty({0}, bool_options)
                    : dropout_p > 0      ? at::empty(x.sizes(), bool_options)
                                         : at::ones(x.sizes(), bool_options);
  if (x.size(0) == 0) return {out, prenorm_sum, rstd, mask};

  LayerNormParams p{};
  p.x = x.data_ptr();
  p.residual = residual.defined() ? residual.data_ptr() : nullptr;
  p.weight = ptr_or_null<const float>(weight32);
  p.bias = ptr_or_null<const float>(bias32);
  p.x_bias = ptr_or_null<const float>(x_bias32);
  p.out = out.data_ptr();
  p.prenorm_sum = store_prenorm_sum ? prenorm_sum.data_ptr() : nullptr;
  p.rstd = rstd.data_ptr<float>();
  p.dropout_mask = return_dropout_mask && dropout_p > 0 ? reinterpret_cast<uint8_t*>(mask.data_ptr<bool>()) : nullptr;
  p.rows = static_cast<int>(x.size(0));
  p.hidden = static_cast<int>(x.size(1));
  p.eps = static_cast<float>(eps);
  p.dropout_p = static_cast<float>(dropout_p);
  p.seed = static_cast<uint64_t>(seed);
  p.offset = static_cast<uint32_t>(offset);
  p.dtype = dtype_of(x);
  C10_CUDA_CHECK(static_cast<cudaError_t>(launch_add_layer_norm_fwd(p, current_stream(x))));
  return {out, prenorm_sum, rstd, mask};
}

TensorFive add_layer_norm_bwd_meta(const at::Tensor& dout, const std::optional<at::Tensor>& dprenorm_sum,
                                   const at::Tensor& prenorm_sum, const std::optional<at::Tensor>& weight,
                                   const at::Tensor& rstd, double dropout_p, c10::SymInt seed, c10::SymInt offset,
                                   bool has_residual, bool has_bias, bool has_x_bias) {
  check_bwd(dout, dprenorm_sum, prenorm_sum, weight, rstd, dropout_p, checks::traced_value(seed),
            checks::traced_value(offset));
  const auto f32 = dout.options().dtype(at::kFloat);
  auto vector_or_marker = [&](bool wanted) {
    return wanted ? at::empty_symint({dout.sym_size(1)}, f32) : at::empty({0}, f32);
  };
  return {at::empty_symint(dout.sym_sizes(), dout.options()),
          has_residual ? at::empty_symint(dout.sym_sizes(), dout.options()) : empty_marker(dout),
          vector_or_marker(weight.has_value()), vector_or_marker(has_bias), vector_or_marker(has_x_bias)};
}

TensorFive add_layer_norm_bwd_cpu(const at::Tensor& dout, const std::optional<at::Tensor>& dprenorm_sum,
                                  const at::Tensor& prenorm_sum, const std::optional<at::Tensor>& weight,
                                  const at::Tensor& rstd, double dropout_p, int64_t seed, int64_t offset,
                                  bool has_residual, bool has_bias, bool has_x_bias) {
  check_bwd(dout, dprenorm_sum, prenorm_sum, weight, rstd, dropout_p, seed, offset);
  checks::on_cuda(dout, kBwdOp, "dout");
  return {};
}

TensorFive add_layer_norm_bwd_cuda(const at::Tensor& dout_in, const std::optional<at::Tensor>& dprenorm_in,
                                   const at::Tensor& prenorm_in, const std::optional<at::Tensor>& weight,
                                   const at::Tensor& rstd_in, double dropout_p, int64_t seed, int64_t offset,
                                   bool has_residual, bool has_bias, bool has_x_bias) {
  check_bwd(dout_in, dprenorm_in, prenorm_in, weight, rstd_in, dropout_p, seed, offset);
  checks::on_cuda(dout_in, kBwdOp, "dout");
  const c10::cuda::CUDAGuard guard(dout_in.device());
  const at::Tensor dout = dout_in.contiguous();
  const at::Tensor dprenorm = dprenorm_in ? dprenorm_in->contiguous() : at::Tensor();
  const at::Tensor prenorm_sum = prenorm_in.contiguous();
  const at::Tensor rstd = rstd_in.contiguous();
  const at::Tensor weight32 = as_f32(weight);
  const int64_t rows = dout.size(0);
  const int64_t hidden = dout.size(1);
  const auto f32 = dout.options().dtype(at::kFloat);

  at::Tensor dx = at::empty(dout.sizes(), dout.options());
  at::Tensor dresidual = has_residual ? at::empty(dout.sizes(), dout.options()) : empty_marker(dout);
  if (rows == 0) {
    auto zeros_or_marker = [&](bool wanted) { return wanted ? at::zeros({hidden}, f32) : at::empty({0}, f32); };
    return {dx, dresidual, zeros_or_marker(weight.has_value()), zeros_or_marker(has_bias),
            zeros_or_marker(has_x_bias)};
  }
  const int blocks = add_layer_norm_bwd_blocks(static_cast<int>(rows));
  auto partial_or_undefined = [&](bool wanted) { return wanted ? at::empty({blocks, hidden}, f32) : at::Tensor(); };
  const at::Tensor dweight_partial = partial_or_undefined(weight.has_value());
  const at::Tensor dbias_partial = partial_or_undefined(has_bias);
  const at::Tensor dx_bias_partial = partial_or_undefined(has_x_bias);

  LayerNormParams p{};
  p.weight = ptr_or_null<const float>(weight32);
  p.prenorm_sum = const_cast<void*>(prenorm_sum.data_ptr());
  p.rstd = const_cast<float*>(rstd.data_ptr<float>());
  p.dout = dout.data_ptr();
  p.dprenorm_sum = dprenorm.defined() ? dprenorm.data_ptr() : nullptr;
  p.dx = dx.data_ptr();
  p.dresidual = has_residual ? dresidual.data_ptr() : nullptr;
  p.dweight_partial = ptr_or_null<float>(dweight_partial);
  p.dbias_partial = ptr_or_null<float>(dbias_partial);
  p.dx_bias_partial = ptr_or_null<float>(dx_bias_partial);
  p.rows = static_cast<int>(rows);
  p.hidden = static_cast<int>(hidden);
  p.dropout_p = static_cast<float>(dropout_p);
  p.seed = static_cast<uint64_t>(seed);
  p.offset = static_cast<uint32_t>(offset);
  p.dtype = dtype_of(dout);
  C10_CUDA_CHECK(static_cast<cudaError_t>(launch_add_layer_norm_bwd(p, blocks, current_stream(dout))));
  auto sum_or_marker = [&](const at::Tensor& partial) { return partial.defined() ? partial.sum(0) : at::empty({0}, f32); };
  return {dx, dresidual, sum_or_marker(dweight_partial), sum_or_marker(dbias_partial), sum_or_marker(dx_bias_partial)};
}

}  // namespace semvlp
