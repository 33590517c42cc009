// The registered attention ops (bindings.cpp): CUDA implementations, Meta twins for tracing (seed and offset as
// SymInts: torch.compile traces them symbolic when the seeds are drawn inside the graph), and CPU
// implementations that check the arguments and then refuse (the kernels are GPU-only).
#pragma once

#include <tuple>

#include <ATen/core/Tensor.h>

namespace semvlp {

using TensorTriple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// -> (out (total_q, nheads, head_dim), lse (nheads, total_q) fp32, dropout_mask (n_segments, nheads,
//    max_seqlen_q, max_seqlen_k) bool when return_dropout_mask else shape (0,)).
#define SEMVLP_ATTENTION_FWD_ARGS(Seed)                                                                     \
  const at::Tensor &q, const at::Tensor &k, const at::Tensor &v, const at::Tensor &cu_seqlens_q,            \
      const at::Tensor &cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale,     \
      bool causal, double dropout_p, Seed seed, Seed offset, bool return_dropout_mask
TensorTriple varlen_attention_fwd_cuda(SEMVLP_ATTENTION_FWD_ARGS(int64_t));
TensorTriple varlen_attention_fwd_meta(SEMVLP_ATTENTION_FWD_ARGS(c10::SymInt));
TensorTriple varlen_attention_fwd_cpu(SEMVLP_ATTENTION_FWD_ARGS(int64_t));
#undef SEMVLP_ATTENTION_FWD_ARGS

// -> (dq like q, dk like k, dv like v).
#define SEMVLP_ATTENTION_BWD_ARGS(Seed)                                                                     \
  const at::Tensor &dout, const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,                    \
      const at::Tensor &out, const at::Tensor &lse, const at::Tensor &cu_seqlens_q,                         \
      const at::Tensor &cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale,     \
      bool causal, double dropout_p, Seed seed, Seed offset
TensorTriple varlen_attention_bwd_cuda(SEMVLP_ATTENTION_BWD_ARGS(int64_t));
TensorTriple varlen_attention_bwd_meta(SEMVLP_ATTENTION_BWD_ARGS(c10::SymInt));
TensorTriple varlen_attention_bwd_cpu(SEMVLP_ATTENTION_BWD_ARGS(int64_t));
#undef SEMVLP_ATTENTION_BWD_ARGS

}  // namespace semvlp
