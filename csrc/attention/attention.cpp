// Launchers of the varlen attention kernels: argument checks, allocation and launch (no autograd).
#include "attention.h"

#include <cstdint>

#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../common/checks.h"
#include "attention_params.h"

namespace semvlp {

namespace {

constexpr int64_t kMaxGridYZ = 65535;

void check_scalars(const char* op, int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale,
                   double dropout_p, int64_t seed, int64_t offset) {
  TORCH_CHECK_VALUE(max_seqlen_q >= 0, op, ": max_seqlen_q: expected a non-negative int, got ", max_seqlen_q);
  TORCH_CHECK_VALUE(max_seqlen_k >= 0, op, ": max_seqlen_k: expected a non-negative int, got ", max_seqlen_k);
  TORCH_CHECK_VALUE(max_seqlen_q <= kMaxGridYZ * kAttentionTile, op, ": max_seqlen_q: expected at most ",
                    kMaxGridYZ * kAttentionTile, ", got ", max_seqlen_q);
  TORCH_CHECK_VALUE(max_seqlen_k <= kMaxGridYZ * kAttentionTile, op, ": max_seqlen_k: expected at most ",
                    kMaxGridYZ * kAttentionTile, ", got ", max_seqlen_k);
  TORCH_CHECK_VALUE(softmax_scale > 0, op, ": softmax_scale: expected a positive float, got ", softmax_scale);
  TORCH_CHECK_VALUE(dropout_p >= 0 && dropout_p < 1, op, ": dropout_p: expected a float in [0, 1), got ", dropout_p);
  TORCH_CHECK_VALUE(seed >= 0, op, ": seed: expected a non-negative int, got ", seed);
  TORCH_CHECK_VALUE(offset >= 0 && offset < (int64_t{1} << 32), op, ": offset: expected 0 <= offset < 2**32, got ",
                    offset);
}

// Shapes, dtypes and devices of q, k, v and the offsets; shared by the CUDA, CPU and Meta implementations.
void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
               const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k) {
  checks::dims(q, "q", 3);
  checks::dims(k, "k", 3);
  checks::dims(v, "v", 3);
  checks::dtype_in(q, "q", {at::kHalf, at::kBFloat16});
  checks::same_dtype(k, "k", q, "q");
  checks::same_dtype(v, "v", q, "q");
  const c10::SymInt head_dim = q.sym_size(2);
  TORCH_CHECK_VALUE(head_dim == 32 || head_dim == 64 || head_dim == 128, op, ": q: head dim (dim 2) is ", head_dim,
                    ", expected 32, 64 or 128");
  checks::size_is(k, "k", 1, q.sym_size(1), "number of heads, as q");
  checks::size_is(v, "v", 1, q.sym_size(1), "number of heads, as q");
  checks::size_is(k, "k", 2, head_dim, "head dim, as q");
  checks::size_is(v, "v", 2, head_dim, "head dim, as q");
  checks::size_is(v, "v", 0, k.sym_size(0), "number of keys, as k");
  TORCH_CHECK_VALUE(q.sym_size(0) < (int64_t{1} << 31), op, ": q: more than 2**31 - 1 rows");
  TORCH_CHECK_VALUE(q.sym_size(1) <= kMaxGridYZ, op, ": q: more than ", kMaxGridYZ, " heads");
  checks::dims(cu_seqlens_q, "cu_seqlens_q", 1);
  checks::dims(cu_seqlens_k, "cu_seqlens_k", 1);
  checks::dtype_in(cu_seqlens_q, "cu_seqlens_q", {at::kInt});
  checks::dtype_in(cu_seqlens_k, "cu_seqlens_k", {at::kInt});
  TORCH_CHECK_VALUE(cu_seqlens_q.sym_size(0) >= 2, op, ": cu_seqlens_q: expected at least 2 offsets, got ",
                    checks::describe(cu_seqlens_q));
  checks::size_is(cu_seqlens_k, "cu_seqlens_k", 0, cu_seqlens_q.sym_size(0), "n_segments + 1, as cu_seqlens_q");
  checks::same_device(k, "k", q, "q");
  checks::same_device(v, "v", q, "q");
  checks::same_device(cu_seqlens_q, "cu_seqlens_q", q, "q");
  checks::same_device(cu_seqlens_k, "cu_seqlens_k", q, "q");
}

void check_bwd_extra(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& out, const at::Tensor& lse) {
  checks::same_shape(dout, "dout", q, "q");
  checks::same_dtype(dout, "dout", q, "q");
  checks::same_device(dout, "dout", q, "q");
  checks::same_shape(out, "out", q, "q");
  checks::same_dtype(out, "out", q, "q");
  checks::same_device(out, "out", q, "q");
  checks::dims(lse, "lse", 2);
  checks::dtype_in(lse, "lse", {at::kFloat});
  checks::size_is(lse, "lse", 0, q.sym_size(1), "number of heads, as q");
  checks::size_is(lse, "lse", 1, q.sym_size(0), "number of query rows, as q");
  checks::same_device(lse, "lse", q, "q");
}

// cp.async moves 16-byte chunks, so every row of a (rows, nheads, head_dim) operand must start on a
// 16-byte boundary; views such as q/k/v split from a fused projection already do.
at::Tensor with_aligned_rows(const at::Tensor& t) {
  const bool aligned = t.stride(2) == 1 && t.stride(0) % 8 == 0 && t.stride(1) % 8 == 0 &&
                       reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  return aligned ? t : t.clone(at::MemoryFormat::Contiguous);
}

AttentionParams base_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q,
                            int64_t max_seqlen_k, double softmax_scale, bool causal, double dropout_p, int64_t seed,
                            int64_t offset) {
  AttentionParams p{};
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.q_row_stride = q.stride(0);
  p.q_head_stride = q.stride(1);
  p.k_row_stride = k.stride(0);
  p.k_head_stride = k.stride(1);
  p.v_row_stride = v.stride(0);
  p.v_head_stride = v.stride(1);
  p.cu_seqlens_q = cu_seqlens_q.data_ptr<int32_t>();
  p.cu_seqlens_k = cu_seqlens_k.data_ptr<int32_t>();
  p.n_segments = static_cast<int>(cu_seqlens_q.size(0) - 1);
  p.nheads = static_cast<int>(q.size(1));
  p.head_dim = static_cast<int>(q.size(2));
  p.total_q = static_cast<int>(q.size(0));
  p.max_seqlen_q = static_cast<int>(max_seqlen_q);
  p.max_seqlen_k = static_cast<int>(max_seqlen_k);
  p.softmax_scale = static_cast<float>(softmax_scale);
  p.causal = causal;
  p.dropout_p = static_cast<float>(dropout_p);
  p.seed = static_cast<uint64_t>(seed);
  p.offset = static_cast<uint32_t>(offset);
  p.dtype = q.scalar_type() == at::kHalf ? AttentionDtype::kFloat16 : AttentionDtype::kBFloat16;
  return p;
}

void check_launch(int err) { C10_CUDA_CHECK(static_cast<cudaError_t>(err)); }

void* current_stream(const at::Tensor& t) {
  return static_cast<void*>(c10::cuda::getCurrentCUDAStream(t.device().index()).stream());
}

}  // namespace

TensorTriple varlen_attention_fwd_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                       int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, bool causal,
                                       double dropout_p, c10::SymInt seed, c10::SymInt offset,
                                       bool return_dropout_mask) {
  constexpr const char* op = "semvlp::cuda_varlen_attention_fwd";
  check_qkv(op, q, k, v, cu_seqlens_q, cu_seqlens_k);
  check_scalars(op, max_seqlen_q, max_seqlen_k, softmax_scale, dropout_p, checks::traced_value(seed),
                checks::traced_value(offset));
  at::Tensor out = at::empty_symint(q.sym_sizes(), q.options());
  at::Tensor lse = at::empty_symint({q.sym_size(1), q.sym_size(0)}, q.options().dtype(at::kFloat));
  at::Tensor mask = return_dropout_mask
                        ? at::empty_symint({cu_seqlens_q.sym_size(0) - 1, q.sym_size(1), c10::SymInt(max_seqlen_q),
                                            c10::SymInt(max_seqlen_k)},
                                           q.options().dtype(at::kBool))
                        : at::empty({0}, q.options().dtype(at::kBool));
  return {out, lse, mask};
}

TensorTriple varlen_attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                      int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, bool causal,
                                      double dropout_p, int64_t seed, int64_t offset, bool return_dropout_mask) {
  constexpr const char* op = "semvlp::cuda_varlen_attention_fwd";
  check_qkv(op, q, k, v, cu_seqlens_q, cu_seqlens_k);
  check_scalars(op, max_seqlen_q, max_seqlen_k, softmax_scale, dropout_p, seed, offset);
  checks::on_cuda(q, op, "q");
  return {};
}

TensorTriple varlen_attention_fwd_cuda(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                       const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                       int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, bool causal,
                                       double dropout_p, int64_t seed, int64_t offset, bool return_dropout_mask) {
  constexpr const char* op = "semvlp::cuda_varlen_attention_fwd";
  check_qkv(op, q_in, k_in, v_in, cu_seqlens_q, cu_seqlens_k);
  check_scalars(op, max_seqlen_q, max_seqlen_k, softmax_scale, dropout_p, seed, offset);
  for (const auto& [t, name] : {std::pair{&q_in, "q"}, {&k_in, "k"}, {&v_in, "v"}, {&cu_seqlens_q, "cu_seqlens_q"},
                                {&cu_seqlens_k, "cu_seqlens_k"}}) {
    checks::on_cuda(*t, op, name);
  }
  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::Tensor q = with_aligned_rows(q_in);
  const at::Tensor k = with_aligned_rows(k_in);
  const at::Tensor v = with_aligned_rows(v_in);
  const at::Tensor cu_q = cu_seqlens_q.contiguous();
  const at::Tensor cu_k = cu_seqlens_k.contiguous();

  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({q.size(1), q.size(0)}, q.options().dtype(at::kFloat));
  // The kernel writes the mask where it draws it; without dropout every element is kept.
  const bool with_mask = return_dropout_mask;
  const auto mask_shape = {cu_q.size(0) - 1, q.size(1), max_seqlen_q, max_seqlen_k};
  const auto bool_options = q.options().dtype(at::kBool);
  at::Tensor mask = !with_mask       ? at::empty({0}, bool_options)
                    : dropout_p > 0 ? at::zeros(mask_shape, bool_options)
                                    : at::ones(mask_shape, bool_options);
  if (q.size(0) == 0 || max_seqlen_q == 0) return {out, lse, mask};

  AttentionParams p = base_params(q, k, v, cu_q, cu_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal, dropout_p,
                                  seed, offset);
  p.out = out.data_ptr();
  p.out_row_stride = out.stride(0);
  p.out_head_stride = out.stride(1);
  p.lse = lse.data_ptr<float>();
  p.dropout_mask = with_mask && dropout_p > 0 ? reinterpret_cast<uint8_t*>(mask.data_ptr<bool>()) : nullptr;
  void* stream = current_stream(q);
  switch (p.head_dim) {
    case 32: check_launch(launch_attention_fwd_hdim32(p, stream)); break;
    case 64: check_launch(launch_attention_fwd_hdim64(p, stream)); break;
    default: check_launch(launch_attention_fwd_hdim128(p, stream)); break;
  }
  return {out, lse, mask};
}

TensorTriple varlen_attention_bwd_meta(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                       const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                       int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, bool causal,
                                       double dropout_p, c10::SymInt seed, c10::SymInt offset) {
  constexpr const char* op = "semvlp::cuda_varlen_attention_bwd";
  check_qkv(op, q, k, v, cu_seqlens_q, cu_seqlens_k);
  check_bwd_extra(dout, q, out, lse);
  check_scalars(op, max_seqlen_q, max_seqlen_k, softmax_scale, dropout_p, checks::traced_value(seed),
                checks::traced_value(offset));
  return {at::empty_symint(q.sym_sizes(), q.options()), at::empty_symint(k.sym_sizes(), k.options()),
          at::empty_symint(v.sym_sizes(), v.options())};
}

TensorTriple varlen_attention_bwd_cpu(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                      const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                      int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, bool causal,
                                      double dropout_p, int64_t seed, int64_t offset) {
  constexpr const char* op = "semvlp::cuda_varlen_attention_bwd";
  check_qkv(op, q, k, v, cu_seqlens_q, cu_seqlens_k);
  check_bwd_extra(dout, q, out, lse);
  check_scalars(op, max_seqlen_q, max_seqlen_k, softmax_scale, dropout_p, seed, offset);
  checks::on_cuda(q, op, "q");
  return {};
}

TensorTriple varlen_attention_bwd_cuda(const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in,
                                       const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in,
                                       const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                       int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, bool causal,
                                       double dropout_p, int64_t seed, int64_t offset) {
  constexpr const char* op = "semvlp::cuda_varlen_attention_bwd";
  check_qkv(op, q_in, k_in, v_in, cu_seqlens_q, cu_seqlens_k);
  check_bwd_extra(dout_in, q_in, out_in, lse_in);
  check_scalars(op, max_seqlen_q, max_seqlen_k, softmax_scale, dropout_p, seed, offset);
  for (const auto& [t, name] : {std::pair{&dout_in, "dout"}, {&q_in, "q"}, {&k_in, "k"}, {&v_in, "v"},
                                {&out_in, "out"}, {&lse_in, "lse"}, {&cu_seqlens_q, "cu_seqlens_q"},
                                {&cu_seqlens_k, "cu_seqlens_k"}}) {
    checks::on_cuda(*t, op, name);
  }
  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::Tensor q = with_aligned_rows(q_in);
  const at::Tensor k = with_aligned_rows(k_in);
  const at::Tensor v = with_aligned_rows(v_in);
  const at::Tensor dout = with_aligned_rows(dout_in);
  const at::Tensor out = out_in.contiguous();
  const at::Tensor lse = lse_in.contiguous();
  const at::Tensor cu_q = cu_seqlens_q.contiguous();
  const at::Tensor cu_k = cu_seqlens_k.contiguous();

  at::Tensor dq_accum = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
  at::Tensor delta = at::empty({q.size(1), q.size(0)}, q.options().dtype(at::kFloat));
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  if (k.size(0) > 0 && max_seqlen_k > 0) {
    AttentionParams p = base_params(q, k, v, cu_q, cu_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal, dropout_p,
                                    seed, offset);
    p.out = const_cast<void*>(out.data_ptr());
    p.out_row_stride = out.stride(0);
    p.out_head_stride = out.stride(1);
    p.lse = const_cast<float*>(lse.data_ptr<float>());
    p.dout = dout.data_ptr();
    p.dout_row_stride = dout.stride(0);
    p.dout_head_stride = dout.stride(1);
    p.dq_accum = dq_accum.data_ptr<float>();
    p.delta = delta.data_ptr<float>();
    p.dk = dk.data_ptr();
    p.dv = dv.data_ptr();
    p.dk_row_stride = dk.stride(0);
    p.dk_head_stride = dk.stride(1);
    p.dv_row_stride = dv.stride(0);
    p.dv_head_stride = dv.stride(1);
    void* stream = current_stream(q);
    switch (p.head_dim) {
      case 32: check_launch(launch_attention_bwd_hdim32(p, stream)); break;
      case 64: check_launch(launch_attention_bwd_hdim64(p, stream)); break;
      default: check_launch(launch_attention_bwd_hdim128(p, stream)); break;
    }
  }
  return {dq_accum.to(q.scalar_type()), dk, dv};
}

}  // namespace semvlp
